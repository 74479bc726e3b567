"""Dropping a collection: how long it takes and what it gives back.

    python -m bench.drop [--pages 1000] [--batch-rows 5000]

One pipeline (code server + daemon, default settings, stand-in model at 0 ms) indexes
`pages` pages into one collection and `pages` / 10 into a neighbour; then the collection is
dropped as `rag-pipeline drop` does (in this process), timed; then `VACUUM` and
`VACUUM FULL` of LightRAG's tables. Recorded: the workspace's rows and row bytes before,
the tables' size on disk (pg_total_relation_size, indexes and TOAST included) before the
drop, after it, after VACUUM (what the files gave back; the rest is free space PostgreSQL
reuses for new rows) and after VACUUM FULL (what rewriting the tables gives back: it locks
each table while it runs), and the neighbour's rows, which must not change.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

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
    unique_name,
    wait_terminal,
)
from rag_pipeline.knowledge.tables import workspace_bytes, workspace_rows, workspace_tables
from rag_pipeline.removal import drop_collection
from rag_pipeline.vocabulary import DropCause


def disk_bytes(conn: psycopg.Connection) -> int:
    return int(sum(conn.execute(
        sql.SQL("SELECT pg_total_relation_size({})").format(sql.Literal(f"public.{t}"))
    ).fetchone()[0] for t in workspace_tables(conn)))


def vacuum(settings: Any, database: str, full: bool) -> float:
    started = time.monotonic()
    with psycopg.connect(settings.postgres_conninfo(database), autocommit=True,
                         **settings.postgres_kwargs()) as conn:
        for table in workspace_tables(conn):
            conn.execute(sql.SQL("VACUUM (FULL {}) public.{}").format(
                sql.SQL("true" if full else "false"), sql.Identifier(table)))
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--batch-rows", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=RESULTS / "drop.json")
    args = parser.parse_args(argv)
    victim, neighbour = (unique_name(n).replace("_", "-") for n in ("dropped", "neighbour"))
    paths = corpus(args.pages + args.pages // 10, offset=0)
    messages, owner = collection_messages(
        {victim: paths[:args.pages], neighbour: paths[args.pages:]}, job_id_base())
    with bench_stack() as settings:
        Model(settings).set(latency_ms=0)
        with pipeline(settings) as run:
            ledger = run.ledger
            started = time.monotonic()
            send(run.settings, messages)
            wait_terminal(ledger, list(owner), timeout=7200)
            indexing_s = time.monotonic() - started
            with ledger.pool.connection() as conn:
                rows_before = workspace_rows(conn, victim)
                neighbour_before = workspace_rows(conn, neighbour)
                row_bytes = workspace_bytes(conn, victim)
                disk_before = disk_bytes(conn)
            started = time.monotonic()
            report = drop_collection(ledger, victim, DropCause.DROPPED,
                                     lambda c: ledger.writer_lock(c, 600),
                                     max_retries=run.settings.max_retries,
                                     batch_rows=args.batch_rows)
            drop_s = time.monotonic() - started
            with ledger.pool.connection() as conn:
                left = sum(workspace_rows(conn, victim).values())
                neighbour_after = workspace_rows(conn, neighbour)
                disk_dropped = disk_bytes(conn)
            vacuum_s = vacuum(run.settings, run.pipeline_db, full=False)
            with ledger.pool.connection() as conn:
                disk_vacuumed = disk_bytes(conn)
            vacuum_full_s = vacuum(run.settings, run.pipeline_db, full=True)
            with ledger.pool.connection() as conn:
                disk_full = disk_bytes(conn)
    figures = {
        "pages": args.pages, "batch_rows": args.batch_rows,
        "indexing_seconds": round(indexing_s, 1),
        "rows": sum(rows_before.values()), "rows_per_table": rows_before,
        "row_bytes": row_bytes, "drop_seconds": round(drop_s, 2),
        "rows_removed": report.rows_removed, "rows_left": left,
        "neighbour_unchanged": neighbour_after == neighbour_before,
        "disk_bytes_before": disk_before, "disk_bytes_after_drop": disk_dropped,
        "disk_bytes_after_vacuum": disk_vacuumed, "disk_bytes_after_vacuum_full": disk_full,
        "reclaimed_by_vacuum": disk_before - disk_vacuumed,
        "reclaimed_by_vacuum_full": disk_before - disk_full,
        "vacuum_seconds": round(vacuum_s, 2), "vacuum_full_seconds": round(vacuum_full_s, 2),
    }
    mib = 2 ** 20
    print_table(f"Dropping a collection of {args.pages} pages", ["figure", "value"], [
        ["rows (LightRAG, all tables)", figures["rows"]],
        ["row bytes", f"{row_bytes / mib:.1f} MiB"],
        ["drop seconds", figures["drop_seconds"]],
        ["rows left", left],
        ["neighbour unchanged", figures["neighbour_unchanged"]],
        ["on disk before / after drop", f"{disk_before / mib:.1f} / {disk_dropped / mib:.1f} "
         "MiB"],
        ["on disk after VACUUM / VACUUM FULL", f"{disk_vacuumed / mib:.1f} / "
         f"{disk_full / mib:.1f} MiB"]])
    out = {"machine": machine(), "settings": "stand-in model at 0 ms; defaults otherwise",
           **figures}
    write_results(args.out, out)
    return out


if __name__ == "__main__":
    main()
