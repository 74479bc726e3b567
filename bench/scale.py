"""Cost as the work grows: the pipeline's periodic work against a ledger of 0, 100k and 1M jobs.

    python -m bench.scale [--sizes 0,100000,1000000] [--collections 10000]   (make scale)

The ledger (a database of its own on the bench stack) is filled with finished history:
jobs over `--collections` collections (96% completed, 3% failed, 1% dead; payloads pruned,
as RETENTION_DAYS leaves them), one delivered status and (completed) one documents row per
job, one ledger run per 100 jobs; Dagster's storage (PostgreSQL, a database of its own)
holds one dynamic partition per collection and one finished run per 100 jobs.

At each size the same live work runs on top of that history, and each operation is timed:
- staging: `--messages` new messages (8 KB of HTML) over 8 collections, staged tick after
  tick as the sensor does (messages per second);
- a sensor tick: `indexing_jobs_sensor` evaluated through Dagster with those jobs queued;
- a run's claim: `claim_jobs` of 48 jobs (put back after each);
- reconciliation: `reconciliation.reconcile`, what `reconcile_stuck_jobs` does;
- inspect: what `rag-pipeline inspect` prints.
Target (issue 18): each within 1.5x of its cost on the empty ledger. Writes
bench/results/scale.json; `python -m bench.report` puts the table and docs/images/scale.png
into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
from dagster._core.test_utils import create_run_for_test

from bench.common import machine, print_table, write_results
from bench.harness import RESULTS, bench_stack, open_ledger, unique_name
from bench.staging import produce, stage_topic
from rag_pipeline.dagster_runs import COLLECTION_TAG, collections_partitions
from rag_pipeline.ledger import JobLedger
from rag_pipeline.reconciliation import inspection_lines, reconcile
from rag_pipeline.settings import Settings

TARGET_RATIO = 1.5
JOBS_PER_RUN = 100
LIVE_COLLECTIONS = 8
CLAIM = 48
WARM_MESSAGES = 200

HISTORY = """
INSERT INTO rag_pipeline.jobs (job_id, request_id, collection_id, url, normalized_url, doc_id,
    state, outcome, reason, attempts, kafka_topic, kafka_partition, kafka_offset,
    message_sha256, content_hash, run_id, created_at, updated_at, started_at, finished_at,
    pruned_at)
SELECT g, g %% %(collections)s, 'collection-' || (g %% %(collections)s),
    'https://docs.test/' || g, 'https://docs.test/' || g, 'page-' || g,
    CASE WHEN g %% 100 = 1 THEN 'dead' WHEN g %% 100 < 5 THEN 'failed' ELSE 'completed' END,
    CASE WHEN g %% 100 >= 5 THEN 'inserted' END,
    CASE WHEN g %% 100 = 1 THEN 'run_failed' WHEN g %% 100 < 5 THEN 'bad_gzip' END, 1,
    'history', g %% 12, g, sha256(g::text::bytea), md5(g::text),
    'history-run-' || (g / 100), now() - interval '40 days', now() - interval '40 days',
    now() - interval '40 days', now() - interval '40 days', now() - interval '9 days'
FROM generate_series(%(first)s::bigint, %(last)s::bigint) g
"""
OUTBOX = """
INSERT INTO rag_pipeline.outbox (job_id, request_id, status, idempotency_key, state, attempts,
    result_published, delivered_at)
SELECT job_id, request_id, CASE WHEN state = 'completed' THEN 'completed' ELSE 'failed' END,
    'job-' || job_id, 'delivered', 1, true, finished_at
FROM rag_pipeline.jobs WHERE job_id BETWEEN %(first)s AND %(last)s
"""
DOCUMENTS = """
INSERT INTO rag_pipeline.documents (collection_id, doc_id, url, file_path, content_hash, job_id,
    indexed_at)
SELECT collection_id, doc_id, url, url, content_hash, job_id, finished_at
FROM rag_pipeline.jobs WHERE job_id BETWEEN %(first)s AND %(last)s AND state = 'completed'
"""
RUNS = """
INSERT INTO rag_pipeline.runs (run_id, collection_id, beat_at, outcome, finished_at, started_at,
    accepting)
SELECT DISTINCT ON (run_id) run_id, collection_id, finished_at, 'success', finished_at,
    started_at, false
FROM rag_pipeline.jobs WHERE job_id BETWEEN %(first)s AND %(last)s ORDER BY run_id
ON CONFLICT DO NOTHING
"""


def fill_ledger(conn: psycopg.Connection, first: int, last: int, collections: int) -> None:
    params = {"first": first, "last": last, "collections": collections}
    for statement in (HISTORY, OUTBOX, DOCUMENTS, RUNS):
        conn.execute(statement, params)
    conn.execute("SELECT rag_pipeline.fold_state_counts()")
    conn.execute("VACUUM ANALYZE")


def fill_dagster(instance: dg.DagsterInstance, first: int, last: int, collections: int) -> None:
    keys = [f"collection-{i}" for i in range(min(collections, last))]
    existing = set(instance.get_dynamic_partitions(collections_partitions.name))
    instance.add_dynamic_partitions(collections_partitions.name,
                                    [k for k in keys if k not in existing])
    for run in range(first // JOBS_PER_RUN, last // JOBS_PER_RUN):
        create_run_for_test(instance, job_name="index_collection",
                            status=dg.DagsterRunStatus.SUCCESS,
                            tags={COLLECTION_TAG: f"collection-{run % collections}"})


def timed(action: Callable[[], Any], repeat: int, between: Callable[[], Any] = lambda: None
          ) -> float:
    """Median seconds of `repeat` calls after one untimed call (connections warm)."""
    action()
    between()
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
        between()
    return statistics.median(seconds)


def measure(settings: Settings, ledger: JobLedger, instance: dg.DagsterInstance,
            messages: int, repeat: int) -> dict[str, float]:
    from confluent_kafka.admin import AdminClient, NewTopic

    # Imported here: the module reads the settings, which bench_stack() sets.
    from rag_pipeline.definitions import build_definitions

    topic, warm = unique_name("scale"), unique_name("scale_warm")
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for future in admin.create_topics([NewTopic(t, 12, 1) for t in (topic, warm)]).values():
        future.result(timeout=30)
    # A few messages staged first, untimed: the staging figure is not a first connection's.
    produce(settings, warm, WARM_MESSAGES, 8 * 1024)
    stage_topic(settings.model_copy(update={"kafka_topic": warm}))
    live = settings.model_copy(update={"kafka_topic": topic})
    produce(live, topic, messages, 8 * 1024)
    staged, _, staging_seconds = stage_topic(live)
    if staged != messages:
        raise RuntimeError(f"staged {staged} of {messages} messages")

    defs = build_definitions(live)
    sensor = defs.resolve_sensor_def("indexing_jobs_sensor")

    def tick() -> None:
        with dg.build_sensor_context(instance=instance, definitions=defs,
                                     resources=defs.resources) as context:
            result = sensor(context)
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name,
                                            list(request.partition_keys))

    run_id = unique_name("scale-run")

    def claim() -> None:
        if len(ledger.claim_jobs("stage-0", run_id, [], CLAIM)) != CLAIM:
            raise RuntimeError("the claim took fewer jobs than it should")

    def put_back() -> None:
        with ledger.transaction() as conn:
            conn.execute("UPDATE rag_pipeline.jobs SET state = 'queued', run_id = NULL "
                         "WHERE run_id = %s", (run_id,))

    reporter = defs.resources["outbox"].build(ledger)

    def has_run(collection_id: str) -> bool:
        return bool(instance.get_run_ids(filters=dg.RunsFilter(
            tags={COLLECTION_TAG: collection_id}, statuses=[
                dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTED]), limit=1))

    figures = {
        "staging_messages_per_s": round(staged / staging_seconds, 1),
        "sensor_tick_s": timed(tick, repeat),
        "claim_s": timed(claim, repeat, put_back),
        "reconcile_s": timed(lambda: reconcile(ledger, reporter, has_run,
                                               grace_seconds=3600, log=lambda line: None),
                             repeat),
        "inspect_s": timed(lambda: inspection_lines(ledger), repeat),
    }
    with ledger.transaction() as conn:  # the live work leaves; the history stays as it was
        conn.execute("DELETE FROM rag_pipeline.jobs WHERE collection_id LIKE 'stage-%%'")
    admin.delete_topics([topic, warm])
    return {k: round(v, 4) for k, v in figures.items()}


def dagster_yaml(home: Path, settings: Settings, db: str) -> None:
    (home / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_db:\n      scheme: postgresql+psycopg2\n"
        f"      hostname: {settings.postgres_host}\n      port: {settings.postgres_port}\n"
        f"      username: {settings.postgres_user}\n"
        "      password: {env: POSTGRES_PASSWORD}\n"
        f"      db_name: {db}\ntelemetry:\n  enabled: false\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,100000,1000000")
    parser.add_argument("--collections", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    results: list[dict[str, Any]] = []
    with bench_stack() as base, tempfile.TemporaryDirectory() as home:
        db, dagster_db = unique_name("scale"), unique_name("scale_dagster")
        admin = psycopg.connect(base.postgres_conninfo("postgres"), **base.postgres_kwargs(),
                                autocommit=True)
        for name in (db, dagster_db):
            admin.execute(f"CREATE DATABASE {name}")  # names of ours
        settings = base.model_copy(update={"postgres_db": db})
        dagster_yaml(Path(home), settings, dagster_db)
        ledger = open_ledger(settings)
        instance = dg.DagsterInstance.from_config(home)
        filled = 0
        try:
            with psycopg.connect(settings.postgres_conninfo(), **settings.postgres_kwargs(),
                                 autocommit=True) as conn:
                for size in sizes:
                    started = time.monotonic()
                    if size > filled:
                        fill_ledger(conn, filled + 1, size, args.collections)
                        fill_dagster(instance, filled, size, args.collections)
                    fill_seconds = time.monotonic() - started
                    filled = max(filled, size)
                    figures = measure(settings, ledger, instance, args.messages, args.repeat)
                    results.append({"jobs": size, "fill_seconds": round(fill_seconds, 1),
                                    "partitions": len(instance.get_dynamic_partitions(
                                        collections_partitions.name)), **figures})
                    print_table("cost as the ledger grows, so far", list(results[0]),
                                [list(r.values()) for r in results])
        finally:
            instance.dispose()
            ledger.close()
            for name in (db, dagster_db):
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.close()
    write_results(RESULTS / "scale.json", {
        "machine": machine(),
        "settings": {"sizes": sizes, "collections": args.collections,
                     "live_messages": args.messages, "live_collections": LIVE_COLLECTIONS,
                     "claim": CLAIM, "repeat": args.repeat, "jobs_per_run": JOBS_PER_RUN,
                     "kafka_partitions": 12},
        "results": results,
        "target_ratio": TARGET_RATIO,
    })


if __name__ == "__main__":
    main()
