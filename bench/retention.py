"""Bytes per page in the ledger, in LightRAG's tables and in Dagster's event log, before and
after retention prunes the payloads.

    python -m bench.retention [--pages 60] [--collections 3]   (part of make scale)

Real pages (PostgreSQL's documentation) go through the Dagster deployment (sensor, runs,
LightRAG, statuses delivered to the Go API stand-in) on databases of their own. Then every
relation's size (heap, TOAST and indexes, after VACUUM FULL so that free space is not
counted) is divided by the pages; the jobs are made 40 days old, `prune_ledger` runs with
RETENTION_DAYS=30, and the sizes are measured again. Writes bench/results/retention.json.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import psycopg

from bench.common import machine, print_table, write_results
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
    wait_terminal,
)
from rag_pipeline.retention import RetentionReport, prune_ledger
from rag_pipeline.settings import Settings

LEDGER_TABLES = ("rag_pipeline.jobs", "rag_pipeline.outbox", "rag_pipeline.documents")


def relation_sizes(settings: Settings, db: str) -> dict[str, int]:
    """Total size of the ledger's per-job tables and of each LightRAG table."""
    with psycopg.connect(settings.postgres_conninfo(db), **settings.postgres_kwargs(),
                         autocommit=True) as conn:
        lightrag = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename LIKE 'lightrag%%' ORDER BY tablename").fetchall()]
        tables = [*LEDGER_TABLES, *(f"public.{t}" for t in lightrag)]
        for table in tables:
            conn.execute(f"VACUUM FULL {table}")  # names from the catalog or ours
        return {table: conn.execute("SELECT pg_total_relation_size(%s::regclass)",
                                    (table,)).fetchone()[0] for table in tables}


def event_log(settings: Settings, db: str) -> tuple[int, int, int]:
    """(runs, events, bytes) of the indexing runs in Dagster's event log."""
    with psycopg.connect(settings.postgres_conninfo(db), **settings.postgres_kwargs()) as conn:
        runs, events, size = conn.execute(
            "SELECT count(DISTINCT e.run_id), count(*), coalesce(sum(pg_column_size(e.*)), 0) "
            "FROM event_logs e JOIN runs r ON r.run_id = e.run_id "
            "WHERE r.pipeline_name IN ('index_collection', 'reindex_collection')").fetchone()
    return int(runs), int(events), int(size)


def wait_delivered(run: Any, timeout: float = 300) -> None:
    started = time.monotonic()
    while run.ledger.outbox_counts().get("pending", 0):
        if time.monotonic() - started > timeout:
            raise TimeoutError("statuses still pending for the Go API")
        time.sleep(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=60)
    parser.add_argument("--collections", type=int, default=3)
    args = parser.parse_args(argv)
    names = [f"retention-{i}" for i in range(args.collections)]
    with bench_stack() as settings:
        Model(settings).set(latency_ms=50)
        with pipeline(settings) as run:
            messages, owner = collection_messages(split(corpus(args.pages), names),
                                                  job_id_base())
            send(run.settings, messages)
            wait_terminal(run.ledger, list(owner))
            wait_delivered(run)
            states = run.ledger.job_states()
            before = relation_sizes(settings, run.pipeline_db)
            runs, events, log_bytes = event_log(settings, run.dagster_db)
            with run.ledger.transaction() as conn:
                conn.execute("UPDATE rag_pipeline.jobs SET finished_at = now() - "
                             "interval '40 days' WHERE job_id = ANY(%s)", (list(owner),))
            report = RetentionReport()
            prune_ledger(run.ledger, 30, time.monotonic() + 600, report, print)
            after = relation_sizes(settings, run.pipeline_db)
    pages = len(owner)
    per_page_before = {t: round(b / pages) for t, b in before.items()}
    per_page_after = {t: round(b / pages) for t, b in after.items()}
    for label, tables in (("ledger", LEDGER_TABLES),
                          ("LightRAG", [t for t in before if t.startswith("public.")])):
        per_page_before[f"**{label} total**"] = sum(per_page_before[t] for t in tables)
        per_page_after[f"**{label} total**"] = sum(per_page_after[t] for t in tables)
    print_table("bytes per page", ["relation", "before", "after"],
                [[t, per_page_before[t], per_page_after[t]] for t in per_page_before])
    write_results(RESULTS / "retention.json", {
        "machine": machine(),
        "pages": pages, "collections": args.collections, "job_states": states,
        "jobs_pruned": report.jobs_pruned, "payload_bytes_pruned": report.bytes_pruned,
        "bytes_per_page_before": per_page_before, "bytes_per_page_after": per_page_after,
        "runs": runs, "event_log_rows_per_run": round(events / max(runs, 1)),
        "event_log_bytes_per_run": round(log_bytes / max(runs, 1)),
        "event_log_bytes_per_page": round(log_bytes / pages),
    })


if __name__ == "__main__":
    main()
