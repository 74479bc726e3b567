"""Where the pipeline's cost per page goes: CPU per process and PostgreSQL's statements.

    python -m bench.profile [--pages 300] [--latency-ms 300]

The pipeline of `bench.pipeline` (3 collections, the same settings) indexes `--pages` pages,
then the same pages are inserted by LightRAG directly (bench.pipeline's direct side); in
both, every process's CPU is sampled (bench/common.py `CpuSampler`) and PostgreSQL counts
every statement (`pg_stat_statements`; the bench stack's PostgreSQL is restarted with it
loaded, on its own data directory, the first time). Reported per page:
the CPU seconds of each kind of process, and the statements of each database (the pipeline's
ledger and LightRAG's tables share one; Dagster's storage has its own), grouped by what they
touch, with the most frequent statements. Written to bench/results/profile.json.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.common import CpuSampler, machine, print_table, write_results
from bench.harness import (
    RESULTS,
    Model,
    bench_stack,
    collection_messages,
    corpus,
    job_id_base,
    pipeline,
    send,
    split,
    unique_name,
    wait_terminal,
)
from bench.pipeline import PIPELINE_ENV, run_direct, run_settings
from rag_pipeline.local.stack.postgres import PostgresService
from rag_pipeline.settings import Settings

TOP_STATEMENTS = 25


def area(query: str) -> str:
    """What a statement touches: the ledger, LightRAG's tables, or the session itself."""
    text = query.lower()
    if "rag_pipeline." in text:
        return "ledger"
    if re.search(r"\blightrag_", text):
        return "lightrag"
    if text.startswith(("select pg_advisory", "select pg_try_advisory")):
        return "locks"
    return "session and other"


def server_connection(settings: Settings) -> psycopg.Connection:
    """To the server's `postgres` database, where pg_stat_statements is created."""
    return psycopg.connect(settings.postgres_conninfo("postgres"), **settings.postgres_kwargs(),
                           autocommit=True)


def statements(settings: Settings, database: str) -> list[dict[str, Any]]:
    # The view is where the extension was created; it counts every database's statements.
    with server_connection(settings) as conn:
        rows = conn.execute(
            "SELECT s.query, s.calls, s.total_exec_time, s.rows FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s", (database,)).fetchall()
    return [{"query": " ".join(q.split())[:300], "calls": calls, "ms": round(ms, 1),
             "rows": rows_} for q, calls, ms, rows_ in rows]


def ensure_statement_statistics(settings: Settings) -> None:
    """pg_stat_statements is loaded only at a server's start: the bench stack's PostgreSQL is
    restarted with it (ALTER SYSTEM, in that stack's data directory; the test stack's
    server is left without its per-statement cost)."""
    with server_connection(settings) as conn:
        if "pg_stat_statements" in conn.execute("SHOW shared_preload_libraries").fetchone()[0]:
            return
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    server = PostgresService(settings)
    server.stop()
    server.start()


def reset_statements(settings: Settings) -> None:
    with server_connection(settings) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")


def per_page(found: list[dict[str, Any]], pages: int) -> dict[str, Any]:
    by_area: dict[str, dict[str, float]] = {}
    for s in found:
        totals = by_area.setdefault(area(s["query"]), {"calls": 0, "ms": 0.0})
        totals["calls"] += s["calls"]
        totals["ms"] += s["ms"]
    top = sorted(found, key=lambda s: -s["calls"])[:TOP_STATEMENTS]
    return {
        "calls_per_page": round(sum(s["calls"] for s in found) / pages, 2),
        "ms_per_page": round(sum(s["ms"] for s in found) / pages, 2),
        "by_area": {name: {"calls_per_page": round(t["calls"] / pages, 2),
                           "ms_per_page": round(t["ms"] / pages, 2)}
                    for name, t in sorted(by_area.items(), key=lambda kv: -kv[1]["calls"])},
        "top": [{**s, "calls_per_page": round(s["calls"] / pages, 3), "area": area(s["query"])}
                for s in top],
    }


def profile(settings: Settings, model: Model, pages: int, latency_ms: float) -> dict[str, Any]:
    model.set(latency_ms=latency_ms)
    ensure_statement_statistics(settings)
    names = [unique_name(f"p{i}").replace("_", "-") for i in range(3)]
    collections = split(corpus(pages, offset=0), names)
    messages, owner = collection_messages(collections, job_id_base())
    with pipeline(settings, 4, PIPELINE_ENV) as run:
        time.sleep(8)  # the daemon's first ticks (code server start) are not the pipeline's work
        model.reset()
        reset_statements(settings)
        with CpuSampler() as cpu:
            send(run.settings, messages)
            seconds = wait_terminal(run.ledger, list(owner))
        found = {"pipeline database (ledger, LightRAG)": statements(settings, run.pipeline_db),
                 "Dagster's storage": statements(settings, run.dagster_db)}
        states = run.ledger.job_states()
    cpu_seconds = cpu.by_class()
    model_stats = model.stats()
    # The same pages inserted by LightRAG directly (bench.pipeline's direct side).
    reset_statements(settings)
    direct = run_direct(settings, model, collections, latency_ms,
                        observe=lambda database: statements(settings, database))
    count = len(owner)
    return {
        "pages": count, "latency_ms": latency_ms, "seconds": round(seconds, 1),
        "states": states, "model": model_stats,
        "cpu_seconds": cpu_seconds,
        "cpu_seconds_per_page": {k: round(v / count, 4) for k, v in cpu_seconds.items()},
        "statements": {name: per_page(rows, count) for name, rows in found.items()},
        "direct": {"seconds": direct["seconds"], "cpu_seconds": direct["cpu_seconds"],
                   "cpu_seconds_per_page": {k: round(v / count, 4)
                                            for k, v in direct["cpu_seconds"].items()},
                   "statements": per_page(direct["observed"], count)},
    }


def report(results: dict[str, Any]) -> None:
    r = results["profile"]
    print_table(f"CPU seconds per page ({r['pages']} pages, {r['latency_ms']:.0f} ms)",
                ["process", "CPU s", "CPU s/page"],
                [[k, v, r["cpu_seconds_per_page"][k]] for k, v in r["cpu_seconds"].items()])
    direct = r["direct"]
    print_table(f"Direct LightRAG, the same pages: {direct['seconds']} s",
                ["process", "CPU s", "CPU s/page"],
                [[k, v, direct["cpu_seconds_per_page"][k]]
                 for k, v in direct["cpu_seconds"].items()])
    for database, found in {**r["statements"], "direct's database": direct["statements"]
                            }.items():
        print_table(f"Statements of {database}: {found['calls_per_page']} per page",
                    ["area", "calls/page", "ms/page"],
                    [[a, t["calls_per_page"], t["ms_per_page"]]
                     for a, t in found["by_area"].items()])
        print_table("most frequent", ["calls/page", "area", "statement"],
                    [[s["calls_per_page"], s["area"], s["query"][:110]]
                     for s in found["top"][:12]])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "profile.json")
    args = parser.parse_args(argv)
    with bench_stack() as settings:
        results = {"machine": machine(), "settings": run_settings(settings),
                   "profile": profile(settings, Model(settings), args.pages, args.latency_ms)}
    report(results)
    write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
