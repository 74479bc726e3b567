"""What a Prometheus scrape of the exporter costs as the ledger grows.

    python -m bench.scrape [--sizes 0,100000,1000000] [--collections 10000] [--scrapes 5]

The ledger (a database of its own on the bench stack) is filled with jobs over
`--collections` collections (1% queued, 1% failed, the rest completed with a delivered
status, 2% of those still pending), then `/metrics` is generated as the exporter does
(ledger and Kafka sources) `--scrapes` times at each size. Reported: the median wall time
of one scrape, and PostgreSQL's CPU seconds per scrape (every PostgreSQL process of the
stack, from /proc). Target (issue 16): within 1 s and under 1 CPU-second at 1,000,000 jobs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import psutil
import psycopg
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from bench.common import machine, print_table, write_results
from bench.harness import RESULTS, bench_stack, open_ledger, unique_name
from rag_pipeline.local.stack import LocalStack
from rag_pipeline.observability.exporter import Kafka
from rag_pipeline.observability.metrics import PipelineCollector, Sources
from rag_pipeline.settings import Settings

FILL = """
INSERT INTO rag_pipeline.jobs (job_id, request_id, collection_id, url, normalized_url, doc_id,
    state, outcome, reason, attempts, kafka_topic, kafka_partition, kafka_offset,
    created_at, updated_at, started_at, finished_at)
SELECT g, g / 1000, 'collection-' || (g %% %(collections)s), 'https://docs.test/' || g,
    'https://docs.test/' || g, 'page-' || g,
    CASE WHEN g %% 100 = 0 THEN 'queued' WHEN g %% 100 = 1 THEN 'failed' ELSE 'completed' END,
    CASE WHEN g %% 100 > 1 THEN 'inserted' END, CASE WHEN g %% 100 = 1 THEN 'bad_gzip' END, 0,
    'scrape_bench', g %% 12, g, now() - interval '1 hour', now(), now() - interval '50 minutes',
    CASE WHEN g %% 100 <> 0 THEN now() - interval '40 minutes' END
FROM generate_series(%(first)s::bigint, %(last)s::bigint) g
"""
OUTBOX = """
INSERT INTO rag_pipeline.outbox (job_id, request_id, status, idempotency_key, state, attempts)
SELECT job_id, request_id, CASE WHEN state = 'completed' THEN 'completed' ELSE 'failed' END,
    'job-' || job_id, CASE WHEN job_id %% 50 = 2 THEN 'pending' ELSE 'delivered' END, 1
FROM rag_pipeline.jobs WHERE job_id BETWEEN %(first)s AND %(last)s AND state <> 'queued'
"""


def postgres_cpu_seconds(settings: Settings) -> float:
    """CPU seconds of the bench stack's PostgreSQL: the postmaster and its backends (the
    exporter keeps its connections, so their backends live through the measurement)."""
    pid = LocalStack(settings).postgres.pid
    if pid is None:
        return 0.0
    main = psutil.Process(pid)
    total = 0.0
    for process in [main, *main.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def fill(conn: psycopg.Connection, first: int, last: int, collections: int) -> float:
    started = time.monotonic()
    if last >= first:
        params = {"first": first, "last": last, "collections": collections}
        conn.execute(FILL, params)
        conn.execute(OUTBOX, params)
        conn.execute("ANALYZE rag_pipeline.jobs")
        conn.execute("ANALYZE rag_pipeline.outbox")
    return time.monotonic() - started


def measure(registry: CollectorRegistry, settings: Settings, scrapes: int) -> dict[str, Any]:
    generate_latest(registry)  # warm the connections
    walls = []
    cpu_before = postgres_cpu_seconds(settings)
    for _ in range(scrapes):
        started = time.perf_counter()
        body = generate_latest(registry)
        walls.append(time.perf_counter() - started)
    cpu = (postgres_cpu_seconds(settings) - cpu_before) / scrapes
    return {"scrape_seconds_median": round(statistics.median(walls), 3),
            "scrape_seconds_max": round(max(walls), 3),
            "postgres_cpu_seconds_per_scrape": round(cpu, 3), "metrics_bytes": len(body)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,100000,1000000")
    parser.add_argument("--collections", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=5)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows, results = [], []
    with bench_stack() as base:
        db = unique_name("scrape")
        with psycopg.connect(base.postgres_conninfo("postgres"), **base.postgres_kwargs(),
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {db}")  # a name of ours
        settings = base.model_copy(update={"postgres_db": db})
        ledger = open_ledger(settings)
        registry = CollectorRegistry()
        kafka = Kafka(settings)
        registry.register(PipelineCollector(Sources(
            ledger=ledger, kafka_watermarks=kafka.watermarks, topic=settings.kafka_topic,
            model_bounds={"llm": 8, "embedding": 8})))
        filled = 0
        try:
            with psycopg.connect(settings.postgres_conninfo(), **settings.postgres_kwargs(),
                                 autocommit=True) as conn:
                for size in sizes:
                    seconds = fill(conn, filled + 1, size, args.collections)
                    filled = max(filled, size)
                    figures = measure(registry, settings, args.scrapes)
                    results.append({"jobs": size, "fill_seconds": round(seconds, 1), **figures})
                    rows.append([f"{size:,}", figures["scrape_seconds_median"],
                                 figures["scrape_seconds_max"],
                                 figures["postgres_cpu_seconds_per_scrape"],
                                 f"{figures['metrics_bytes']:,}"])
                    print_table("scrape cost so far", ["jobs", "median s", "max s",
                                "PG CPU s/scrape", "bytes"], rows)
        finally:
            ledger.close()
            with psycopg.connect(base.postgres_conninfo("postgres"), **base.postgres_kwargs(),
                                 autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    write_results(RESULTS / "scrape.json", {
        "machine": machine(),
        "settings": {"sizes": sizes, "collections": args.collections, "scrapes": args.scrapes,
                     "kafka_partitions": base.kafka_topic_partitions},
        "results": results,
        "targets": {"scrape_seconds": 1.0, "postgres_cpu_seconds_per_scrape": 1.0,
                    "at_jobs": 1_000_000},
    })


if __name__ == "__main__":
    main()
