"""Helpers for tests that talk to the real Kafka and PostgreSQL of the test stack."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from rag_pipeline.assets.indexing import indexing_assets
from rag_pipeline.definitions import build_definitions
from rag_pipeline.kafka_io import KafkaOptions, consumer_config, producer_config
from rag_pipeline.ledger import JobLedger, JobOutcome
from rag_pipeline.local.corpus import pages as corpus_pages
from rag_pipeline.local.corpus import postgres_docs
from rag_pipeline.local.publishing import OutgoingMessage, build_message, message_for, publish
from rag_pipeline.settings import Settings
from rag_pipeline.staging import StagingConfig, TickBudget, TickReport, stage_messages

ROOT = Path(__file__).resolve().parent.parent

MIB = 1024 * 1024
BIG_BUDGET = TickBudget(max_messages=10_000, max_bytes=256 * MIB, seconds=20)


def create_topic(settings: Settings, name: str, partitions: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    futures = admin.create_topics([NewTopic(name, partitions, 1, config={
        "max.message.bytes": str(settings.kafka_max_message_bytes)})])
    for future in futures.values():
        future.result(timeout=30)
    # Metadata propagates asynchronously; wait until the topic is visible with leaders.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        topic = admin.list_topics(timeout=5).topics.get(name)
        if topic and len(topic.partitions) == partitions and all(
                p.leader >= 0 for p in topic.partitions.values()):
            return
        time.sleep(0.2)
    raise AssertionError(f"topic {name} did not become ready")


def delete_topic(settings: Settings, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for future in admin.delete_topics([name]).values():
        with contextlib.suppress(Exception):  # already gone is fine
            future.result(timeout=30)


def job_id_base() -> int:
    """A random base so that concurrent or repeated tests never share job_ids."""
    return random.randint(1, 2**40) * 1000


def page_messages(collection_id: str, first_job_id: int, count: int, size: int = 2000,
                  **extra: Any) -> list[dict[str, Any]]:
    filler = ("lorem ipsum dolor sit amet " * (size // 27 + 1))[:size]
    return [
        build_message(job_id=first_job_id + i, collection_id=collection_id,
                      url=f"https://docs.example.com/{collection_id}/page-{i}.html",
                      html=f"<html><body><h1>Page {i}</h1><p>{filler}</p></body></html>".encode(),
                      **extra)
        for i in range(count)
    ]


def produce(settings: Settings, topic: str,
            messages: Sequence[dict[str, Any] | OutgoingMessage]) -> None:
    publish(settings, [m if isinstance(m, OutgoingMessage) else message_for(m) for m in messages],
            topic=topic)


def raw(key: bytes | None, value: bytes | None) -> OutgoingMessage:
    return OutgoingMessage(key=key or b"", value=value)  # type: ignore[arg-type]


def read_topic(settings: Settings, topic: str, timeout: float = 15.0) -> list[Any]:
    """Every message of a topic, from the beginning."""
    options = KafkaOptions.from_settings(settings)
    consumer = Consumer({**consumer_config(options), "group.id": f"test-reader-{random.random()}"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p, 0) for p in metadata.partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in partitions}
        consumer.assign(partitions)
        seen: list[Any] = []
        positions = {p: 0 for p in ends}
        deadline = time.monotonic() + timeout
        while any(positions[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for message in consumer.consume(100, timeout=0.5):
                if message.error():
                    continue
                seen.append(message)
                positions[message.partition()] = message.offset() + 1
        return seen
    finally:
        consumer.close()


def dead_letters(settings: Settings, dlq_topic: str) -> list[dict[str, Any]]:
    records = []
    for message in read_topic(settings, dlq_topic):
        record = json.loads(message.value())
        record["headers"] = {k: v.decode() for k, v in (message.headers() or [])}
        records.append(record)
    return records


@contextmanager
def open_ledger(settings: Settings) -> Iterator[JobLedger]:
    with JobLedger(settings.postgres_conninfo(),
                   settings.postgres_password.get_secret_value()) as ledger:
        ledger.migrate()
        yield ledger


def config_of(s: Settings) -> StagingConfig:
    return StagingConfig.from_settings(s, s)


def tick(s: Settings, ledger: JobLedger, budget: TickBudget = BIG_BUDGET) -> TickReport:
    options = KafkaOptions.from_settings(s)
    consumer = Consumer(consumer_config(options))
    producer = Producer(producer_config(options))
    try:
        return stage_messages(consumer=consumer, producer=producer, ledger=ledger,
                              config=config_of(s), budget=budget)
    finally:
        consumer.close()


def high_watermarks(s: Settings) -> dict[int, int]:
    consumer = Consumer(consumer_config(KafkaOptions.from_settings(s)))
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(s.kafka_topic, p), timeout=10)[1]
                for p in range(3)}
    finally:
        consumer.close()


def staged_rows(ledger: JobLedger, topic: str) -> list[tuple]:
    with ledger.pool.connection() as conn:
        return conn.execute(
            "SELECT job_id, collection_id, state, kafka_partition, kafka_offset "
            "FROM rag_pipeline.jobs WHERE kafka_topic = %s ORDER BY job_id", (topic,),
        ).fetchall()


def collections_of(unique: str, n: int = 3) -> list[str]:
    return [f"col-{unique}-{i}" for i in range(n)]


def produce_pages(s: Settings, unique: str, per_collection: int = 20) -> list[int]:
    """Pages of three collections, one collection per partition (so all partitions serve)."""
    base = job_id_base()
    producer = Producer(producer_config(KafkaOptions.from_settings(s)))
    job_ids = []
    for i, collection in enumerate(collections_of(unique)):
        for message in page_messages(collection, base + i * 1000, per_collection):
            producer.produce(s.kafka_topic, key=collection.encode(), partition=i % 3,
                             value=json.dumps(message).encode())
            job_ids.append(message["job_id"])
    assert producer.flush(30) == 0
    return job_ids


def page_message(job_id: int, collection: str, host: str, path: Path, html: bytes | None = None,
                 name: str | None = None) -> dict:
    return build_message(job_id=job_id, collection_id=collection,
                         url=f"https://{host}/docs/{name or path.name}",
                         html=html if html is not None else path.read_bytes(), request_id=42)


def index(s: Settings, instance: dg.DagsterInstance, collection: str,
          scope: str = "pending") -> dg.ExecuteInProcessResult:
    instance.add_dynamic_partitions("collections", [collection])
    return dg.materialize(
        indexing_assets, partition_key=collection, instance=instance,
        resources=build_definitions(s).resources,
        run_config={"ops": {"index_pages": {"config": {"scope": scope}}}},
    )


def lightrag_statuses(ledger: JobLedger, workspace: str) -> set[str]:
    """The document statuses LightRAG has for a workspace (none before its tables exist)."""
    with ledger.pool.connection() as conn:
        if not conn.execute("SELECT to_regclass('public.lightrag_doc_status')").fetchone()[0]:
            return set()
        rows = conn.execute("SELECT DISTINCT status FROM lightrag_doc_status "
                            "WHERE workspace = %s", (workspace,)).fetchall()
    return {r[0] for r in rows}


@contextmanager
def run_worker_inserting(s: Settings, ledger: JobLedger, collection: str,
                         until: frozenset[str] = frozenset({"processed", "processing"}),
                         extra_env: dict[str, str] | None = None
                         ) -> Iterator[subprocess.Popen]:
    """A run of `collection` in a process of its own (`tests.run_collection`, its own
    process group), yielded once LightRAG has a document of it in one of the `until`
    statuses; the test then kills or pauses it. Killed on the way out if still there."""
    env = {**os.environ, "KAFKA_TOPIC": s.kafka_topic, "KAFKA_DLQ_TOPIC": s.kafka_dlq_topic,
           **(extra_env or {})}
    worker = subprocess.Popen([sys.executable, "-m", "tests.run_collection", collection],
                              cwd=ROOT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and worker.poll() is None:
            if lightrag_statuses(ledger, collection) & until:
                break
            time.sleep(0.2)
        assert worker.poll() is None, "the run finished before the test could stop it"
        yield worker
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(30)


# --- statuses the Go API stand-in received, jobs staged and finished by hand ----------------
def calls_for(go_api: str, job_ids: list[int]) -> dict[int, list[dict]]:
    by_job: dict[int, list[dict]] = defaultdict(list)
    for call in httpx.get(f"{go_api}/calls").json():
        if call["job_id"] in job_ids:
            by_job[call["job_id"]].append(call)
    return by_job


def accepted(calls: list[dict]) -> list[dict]:
    return [c for c in calls if c["answered"] == 200]


def staged_jobs(s, ledger, unique, count: int) -> list[int]:
    base = job_id_base()
    docs = corpus_pages(postgres_docs(), limit=count, offset=900)
    produce(s, s.kafka_topic, [page_message(base + i, f"c-{unique}", "o.test", p)
                               for i, p in enumerate(docs)])
    tick(s, ledger)
    return [base + i for i in range(count)]


def complete(ledger, collection: str, job_ids: list[int], state="completed") -> None:
    ledger.finish_jobs(collection, [
        JobOutcome(job_id=j, request_id=42, state=state, outcome="inserted",
                   reason=None if state == "completed" else "lightrag_failed",
                   error_msg=None if state == "completed" else "lightrag_failed: boom",
                   collection_id=collection) for j in job_ids], max_retries=3)


def deliver_statuses(defs: dg.Definitions, instance) -> str:
    """One tick of the status_deliverer sensor; returns its skip message."""
    sensor = defs.resolve_sensor_def("status_deliverer")
    with dg.build_sensor_context(instance=instance, definitions=defs,
                                 resources=defs.resources) as context:
        return sensor(context).skip_message


def execute(defs: dg.Definitions, job: str, instance, partition: str | None = None,
            **kwargs) -> dg.ExecuteInProcessResult:
    if partition:
        instance.add_dynamic_partitions("collections", [partition])
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance, partition_key=partition, raise_on_error=False, **kwargs)


# The fields every log line carries (docs/design.md, "Logs"), ours and Dagster's alike.
LOG_FIELDS = ("timestamp", "level", "logger", "event")


def json_log_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a process's output as the JSON object it must be, with LOG_FIELDS; an
    assertion naming the lines that are not."""
    from datetime import datetime

    objects, bad = [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            assert isinstance(entry, dict) and all(entry.get(f) for f in LOG_FIELDS)
            datetime.fromisoformat(entry["timestamp"])
        except (ValueError, AssertionError):
            bad.append(f"{path.name}:{number}: {line[:200]}")
            continue
        objects.append(entry)
    assert not bad, f"{len(bad)} lines are not JSON objects with {LOG_FIELDS}:\n" + \
        "\n".join(bad[:10])
    return objects
