"""Helpers for tests that talk to the real Kafka and PostgreSQL of the test stack."""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg.conninfo import make_conninfo

from rag_pipeline.kafka_io import KafkaOptions, consumer_config
from rag_pipeline.ledger import JobLedger
from rag_pipeline.publishing import OutgoingMessage, build_message, message_for, publish
from rag_pipeline.settings import Settings

MIB = 1024 * 1024


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
    conninfo = make_conninfo(host=settings.postgres_host, port=settings.postgres_port,
                             user=settings.postgres_user, dbname=settings.postgres_db)
    with JobLedger(conninfo, settings.postgres_password.get_secret_value()) as ledger:
        ledger.migrate()
        yield ledger
