"""The operator's explicit steps against the real stack: `rag-pipeline migrate` and
`rag-pipeline kafka ensure-topics` (idempotent), processes refusing a schema that is not
theirs, and the Kafka records an operator reads: the DLQ with the original key and headers,
the results topic, and partitions that agree with the Go producer's vectors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from rag_pipeline.contract.records import JobResultEvent
from rag_pipeline.kafka_io import KafkaOptions, producer_config
from rag_pipeline.ledger import JobLedger, JobOutcome, SchemaOutOfDate, shared_ledger
from rag_pipeline.ledger.migrating import CURRENT_VERSION
from rag_pipeline.operations.cli import main
from rag_pipeline.outbox import dead_letter_failures, publish_results
from rag_pipeline.settings import Settings
from rag_pipeline.vocabulary import JobState
from tests.helpers import (
    complete,
    create_topic,
    delete_topic,
    job_id_base,
    page_messages,
    read_topic,
    staged_rows,
    tick,
)

VECTORS = Path(__file__).resolve().parent.parent / "contract" / "vectors" / "partitions.json"


def invoke(settings: Settings, *args: str, **env: str):
    base = {"POSTGRES_DB": settings.postgres_db, "KAFKA_TOPIC": settings.kafka_topic}
    return CliRunner().invoke(main, list(args), env={**base, **env})


@pytest.fixture
def bare_database(stack, settings: Settings, unique: str) -> Iterator[str]:
    """A database with pgvector and no ledger schema: what an operator starts from."""
    name = f"ops_{unique}"
    with psycopg.connect(settings.postgres_conninfo("postgres"), **settings.postgres_kwargs(),
                         autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield name
    with psycopg.connect(settings.postgres_conninfo("postgres"), **settings.postgres_kwargs(),
                         autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_migrate_is_explicit_idempotent_and_other_processes_refuse_another_schema(
        settings: Settings, bare_database: str):
    conninfo = settings.postgres_conninfo(bare_database)
    password = settings.postgres_password.get_secret_value()
    # Nothing migrates on its own: a process finds no schema and says what to run.
    with pytest.raises(SchemaOutOfDate, match="rag-pipeline migrate"):
        shared_ledger(conninfo, password)
    refused = invoke(settings, "inspect", POSTGRES_DB=bare_database)
    assert refused.exit_code == 2 and "rag-pipeline migrate" in refused.output

    first = invoke(settings, "migrate", POSTGRES_DB=bare_database)
    assert first.exit_code == 0, first.output
    assert f"from version none to {CURRENT_VERSION}" in first.output
    again = invoke(settings, "migrate", POSTGRES_DB=bare_database)
    assert again.exit_code == 0 and "nothing to do" in again.output
    assert invoke(settings, "inspect", POSTGRES_DB=bare_database).exit_code == 0

    with JobLedger(conninfo, password, max_size=1) as ledger, ledger.transaction() as conn:
        conn.execute("DELETE FROM rag_pipeline.schema_migrations WHERE version = %s",
                     (CURRENT_VERSION,))
    with pytest.raises(SchemaOutOfDate, match=f"version {CURRENT_VERSION - 1}, this code needs"):
        shared_ledger(conninfo, password, max_size=3)
    old = invoke(settings, "inspect", POSTGRES_DB=bare_database)
    assert old.exit_code == 2 and "run `rag-pipeline migrate`" in old.output

    with JobLedger(conninfo, password, max_size=1) as ledger, ledger.transaction() as conn:
        conn.execute("INSERT INTO rag_pipeline.schema_migrations (version) VALUES (%s), (%s)",
                     (CURRENT_VERSION, CURRENT_VERSION + 1))
    with pytest.raises(SchemaOutOfDate, match="newer than this code"):
        shared_ledger(conninfo, password, max_size=2)


def topic_configs(settings: Settings, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return {k: v.value for k, v in admin.describe_configs([resource])[resource].result(30).items()}


def test_ensure_topics_creates_configures_and_is_idempotent(stack, settings: Settings,
                                                            unique: str):
    names = {"KAFKA_TOPIC": f"jobs_{unique}", "KAFKA_DLQ_TOPIC": f"dlq_{unique}",
             "KAFKA_RESULTS_TOPIC": f"results_{unique}"}
    env = {**names, "KAFKA_TOPIC_PARTITIONS": "6", "KAFKA_RETENTION_HOURS": "48",
           "KAFKA_DLQ_RETENTION_HOURS": "96"}
    try:
        first = invoke(settings, "kafka", "ensure-topics", **env)
        assert first.exit_code == 0, first.output
        assert first.output.count(": created") == 3
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
        described = admin.list_topics(timeout=10).topics
        assert len(described[names["KAFKA_TOPIC"]].partitions) == 6
        jobs = topic_configs(settings, names["KAFKA_TOPIC"])
        assert jobs["max.message.bytes"] == str(settings.kafka_max_message_bytes)
        assert jobs["retention.ms"] == str(48 * 3_600_000)
        assert topic_configs(settings, names["KAFKA_DLQ_TOPIC"])["retention.ms"] == str(
            96 * 3_600_000)

        again = invoke(settings, "kafka", "ensure-topics", **env)
        assert again.exit_code == 0 and again.output.count(": unchanged") == 3, again.output

        changed = invoke(settings, "kafka", "ensure-topics", **{**env,
                                                                "KAFKA_RETENTION_HOURS": "24"})
        assert changed.exit_code == 0, changed.output
        assert f"{names['KAFKA_TOPIC']}: updated retention.ms={24 * 3_600_000}" in changed.output
        assert topic_configs(settings, names["KAFKA_TOPIC"])["retention.ms"] == str(
            24 * 3_600_000)

        grown = invoke(settings, "kafka", "ensure-topics", **{**env,
                                                              "KAFKA_TOPIC_PARTITIONS": "8"})
        assert grown.exit_code == 2 and "has 6 partitions, the settings say 8" in grown.output
        assert len(admin.list_topics(timeout=10).topics[names["KAFKA_TOPIC"]].partitions) == 6
    finally:
        for name in names.values():
            delete_topic(settings, name)


def test_the_python_producer_partitions_as_the_go_vectors_say(stack, settings: Settings,
                                                               unique: str):
    vectors = json.loads(VECTORS.read_text())
    counts = sorted({v["partitions"] for v in vectors if v["partitions"] > 1})
    producer = Producer(producer_config(KafkaOptions.from_settings(settings)))
    for count in counts:
        topic = f"parity_{count}_{unique}"
        create_topic(settings, topic, partitions=count)
        try:
            wanted = {v["key"]: v["partition"] for v in vectors if v["partitions"] == count}
            for key in wanted:
                producer.produce(topic, key=key.encode(), value=b"{}")
            assert producer.flush(30) == 0
            landed = {m.key().decode(): m.partition() for m in read_topic(settings, topic)}
            assert landed == wanted
        finally:
            delete_topic(settings, topic)


def test_dead_letters_keep_the_original_key_and_headers(topics: Settings, ledger, unique: str):
    base = job_id_base()
    collection = f"c-{unique}"
    good, bad = page_messages(collection, base, 2)
    bad["collection_id"] = "not a valid id!"
    headers = [("traceparent", b"00-abc-01"), ("crawler", b"go/1.4")]
    producer = Producer(producer_config(KafkaOptions.from_settings(topics)))
    for message, key in ((good, b"crawl-key-1"), (bad, b"crawl-key-2")):
        producer.produce(topics.kafka_topic, key=key, value=json.dumps(message).encode(),
                         headers=headers)
    assert producer.flush(30) == 0
    assert tick(topics, ledger).rejected == 1
    # A job that fails later, in its run: its letter comes from the ledger's copy.
    assert {r[0] for r in staged_rows(ledger, topics.kafka_topic)} >= {base}
    outcomes = [JobOutcome(job_id=base, request_id=42, state=JobState.FAILED,
                           reason="lightrag_failed", error_msg="lightrag_failed: boom",
                           collection_id=collection)]
    assert dead_letter_failures(producer, ledger, outcomes, source_topic=topics.kafka_topic,
                                dlq_topic=topics.kafka_dlq_topic,
                                max_message_bytes=topics.kafka_max_message_bytes) == 1

    letters = read_topic(topics, topics.kafka_dlq_topic)
    by_key = {m.key(): m for m in letters}
    assert set(by_key) == {b"crawl-key-1", b"crawl-key-2"}
    for key, error_class in ((b"crawl-key-2", "invalid_collection_id"),
                             (b"crawl-key-1", "lightrag_failed")):
        letter = by_key[key]
        names = [name for name, _ in letter.headers()]
        assert names[:2] == ["traceparent", "crawler"]  # the original's, first, as they were
        got = dict(letter.headers())
        assert got["traceparent"] == b"00-abc-01" and got["crawler"] == b"go/1.4"
        assert got["__connect.errors.topic"] == topics.kafka_topic.encode()
        assert got["__connect.errors.exception.class.name"] == error_class.encode()
        assert json.loads(letter.value())["error_class"] == error_class


def test_the_results_topic_carries_each_outcome(topics: Settings, ledger, unique: str):
    results = f"results_{unique}"
    create_topic(topics, results, partitions=1)
    try:
        base = job_id_base()
        collection = f"c-{unique}"
        producer = Producer(producer_config(KafkaOptions.from_settings(topics)))
        for message in page_messages(collection, base, 3):
            producer.produce(topics.kafka_topic, key=collection.encode(),
                             value=json.dumps(message).encode())
        assert producer.flush(30) == 0
        tick(topics, ledger)
        complete(ledger, collection, [base, base + 1])
        complete(ledger, collection, [base + 2], state="failed")
        while publish_results(ledger, producer, results):
            pass
        events = [JobResultEvent.model_validate_json(m.value())
                  for m in read_topic(topics, results)]
        ours = {e.job_id: e for e in events if base <= e.job_id < base + 3}
        assert {j: e.status for j, e in ours.items()} == {
            base: "completed", base + 1: "completed", base + 2: "failed"}
        assert ours[base + 2].error_msg == "lightrag_failed: boom"
        assert all(e.request_id == 42 for e in ours.values())
    finally:
        delete_topic(topics, results)
