"""Staging (the sensor's tick): every message staged exactly once, bad ones dead-lettered.

Real Kafka and PostgreSQL; each test has its own topics, collections and job_ids.
"""

from __future__ import annotations

import base64
import json
import tracemalloc

import pytest
from confluent_kafka import Consumer, TopicPartition

from rag_pipeline.contract import DeadLetter
from rag_pipeline.kafka_io import KafkaOptions, consumer_config
from rag_pipeline.ledger import JobLedger
from rag_pipeline.staging import (
    StagingError,
    TickBudget,
)
from tests.helpers import (
    MIB,
    collections_of,
    dead_letters,
    high_watermarks,
    job_id_base,
    page_messages,
    produce,
    produce_pages,
    raw,
    staged_rows,
    tick,
)


def test_messages_are_staged_exactly_once_with_offsets_at_the_high_watermarks(
        topics, ledger, unique):
    job_ids = produce_pages(topics, unique)
    report = tick(topics, ledger)
    assert (report.read, report.staged, report.rejected) == (60, 60, 0)
    rows = staged_rows(ledger, topics.kafka_topic)
    assert [r[0] for r in rows] == sorted(job_ids)
    assert {r[2] for r in rows} == {"queued"}
    assert len({r[3] for r in rows}) > 1, "messages spread over several partitions"
    assert ledger.stored_offsets(topics.kafka_topic) == high_watermarks(topics)
    assert report.total_lag == 0
    pending = {p.collection_id: p.queued for p in ledger.pending_collections()}
    assert {c: pending.get(c) for c in collections_of(unique)} == dict.fromkeys(
        collections_of(unique), 20)
    # The consumer group mirrors the ledger's offsets, so standard lag tools work.
    consumer = Consumer(consumer_config(KafkaOptions.from_settings(topics)))
    try:
        committed = consumer.committed(
            [TopicPartition(topics.kafka_topic, p) for p in range(3)], timeout=10)
    finally:
        consumer.close()
    assert {tp.partition: tp.offset for tp in committed} == high_watermarks(topics)


def test_replays_stage_nothing_new(topics, ledger, unique):
    produce_pages(topics, unique)
    tick(topics, ledger)
    # The same messages produced again (a producer retry), and the offsets reset (a replay).
    with ledger.pool.connection() as conn:
        messages = conn.execute("SELECT message FROM rag_pipeline.jobs WHERE kafka_topic = %s",
                                (topics.kafka_topic,)).fetchall()
    produce(topics, topics.kafka_topic, [raw(b"k", bytes(m[0])) for m in messages])
    again = tick(topics, ledger)
    assert (again.read, again.staged, again.duplicates, again.conflicts) == (60, 0, 60, 0)
    with ledger.transaction() as conn:
        conn.execute("UPDATE rag_pipeline.kafka_offsets SET next_offset = 0 WHERE topic = %s",
                     (topics.kafka_topic,))
    replay = tick(topics, ledger)
    assert (replay.read, replay.staged) == (120, 0)
    assert len(staged_rows(ledger, topics.kafka_topic)) == 60


def test_same_job_id_with_other_content_is_dead_lettered_not_staged(topics, ledger, unique):
    base = job_id_base()
    first = page_messages(f"c-{unique}", base, 1)[0]
    second = page_messages(f"c-{unique}", base, 1, size=500)[0]  # same job_id, other page
    produce(topics, topics.kafka_topic, [first])
    tick(topics, ledger)
    produce(topics, topics.kafka_topic, [second])
    report = tick(topics, ledger)
    assert (report.staged, report.conflicts) == (0, 1)
    [letter] = dead_letters(topics, topics.kafka_dlq_topic)
    assert letter["error_class"] == "conflicting_job_id" and letter["job_id"] == base


class CrashingLedger(JobLedger):
    """A ledger whose staging transaction dies before it commits."""

    def stage(self, *args, **kwargs):
        raise ConnectionError("simulated crash before the ledger commit")


def test_crash_before_the_ledger_commit_loses_and_duplicates_nothing(
        topics, settings, ledger, unique):
    job_ids = produce_pages(topics, unique, per_collection=5)
    crashing = CrashingLedger(ledger.pool.conninfo, settings.postgres_password.get_secret_value())
    with crashing, pytest.raises(ConnectionError):
        tick(topics, crashing)
    assert staged_rows(ledger, topics.kafka_topic) == []
    assert ledger.stored_offsets(topics.kafka_topic) == {}
    report = tick(topics, ledger)
    assert report.staged == 15
    assert [r[0] for r in staged_rows(ledger, topics.kafka_topic)] == sorted(job_ids)


BAD_MESSAGES = [
    (b'{"job_id": 1, "collection_id": "x", "url": ', "invalid_json"),
    (None, "empty_message"),
    (b"[1,2]", "not_an_object"),
]


def test_malformed_messages_are_dead_lettered_and_do_not_block_the_partition(
        topics, ledger, unique):
    base = job_id_base()
    collection = f"c-{unique}"
    good = page_messages(collection, base, 4)
    bad_collection = dict(good[1], job_id=base + 100, collection_id="x'; DROP TABLE jobs;--")
    bad_gzip = json.loads(json.dumps(good[2]))
    bad_gzip.update(job_id=base + 101)
    bad_gzip["content"]["html"] = base64.b64encode(b"\x1f\x8b\x08\x00broken deflate").decode()
    key = collection.encode()  # one key: everything lands in one partition, in this order
    sequence = [raw(key, json.dumps(good[0]).encode())]
    for value, _ in BAD_MESSAGES:
        sequence.append(raw(key, value))
    sequence += [raw(key, json.dumps(m).encode())
                 for m in (bad_collection, good[1], bad_gzip, good[3])]
    produce(topics, topics.kafka_topic, sequence)

    report = tick(topics, ledger)
    assert (report.staged, report.rejected) == (3, 5)
    letters = {(d["error_class"], d["job_id"])
               for d in dead_letters(topics, topics.kafka_dlq_topic)}
    assert letters == {("invalid_json", 1), ("empty_message", None), ("not_an_object", None),
                       ("invalid_collection_id", base + 100), ("bad_gzip", base + 101)}
    for letter in dead_letters(topics, topics.kafka_dlq_topic):
        DeadLetter.model_validate(letter)
        assert letter["headers"]["__connect.errors.topic"] == topics.kafka_topic
        assert int(letter["headers"]["__connect.errors.offset"]) >= 0
    states = {r[0]: r[2] for r in staged_rows(ledger, topics.kafka_topic)}
    assert states[base] == states[base + 1] == states[base + 3] == "queued"
    assert states[base + 100] == states[base + 101] == "failed"
    # A failed status is queued for the Go backend whenever a job_id could be read.
    assert [c["status"] for c in ledger.outbox_rows(base + 101)] == ["failed"]
    assert ledger.outbox_rows(base + 101)[0]["error_msg"].startswith("bad_gzip:")
    assert ledger.stored_offsets(topics.kafka_topic) == high_watermarks(topics)


def test_a_burst_larger_than_a_tick_is_drained_over_several_ticks(topics, ledger, unique):
    job_ids = produce_pages(topics, unique, per_collection=50)
    budget = TickBudget(max_messages=40, max_bytes=256 * MIB, seconds=20)
    reads = []
    while True:
        report = tick(topics, ledger, budget)
        reads.append(report.read)
        if report.read == 0:
            break
    assert all(r <= 40 for r in reads) and sum(reads) == 150 and len(reads) >= 5
    assert len(staged_rows(ledger, topics.kafka_topic)) == len(job_ids)


def test_large_messages_respect_the_byte_budget(topics, ledger, unique):
    base = job_id_base()
    pages = [page_messages(f"c-{unique}", base + i, 1, size=1)[0] for i in range(5)]
    for page in pages:  # 10 MB of text each (13.3 MB after base64-free JSON escaping)
        page["content"]["text"] = "x" * (10 * MIB)
    produce(topics, topics.kafka_topic, pages)
    budget = TickBudget(max_messages=100, max_bytes=15 * MIB, seconds=20)
    tracemalloc.start()
    reads = []
    try:
        while (report := tick(topics, ledger, budget)).read:
            reads.append((report.read, report.bytes_read))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A tick stops once it holds the budget: at most one message beyond it.
    assert all(read <= 2 for read, _ in reads)
    assert sum(read for read, _ in reads) == 5
    assert len(staged_rows(ledger, topics.kafka_topic)) == 5
    assert peak < 6 * 15 * MIB, f"Python peak {peak / MIB:.0f} MiB for a 15 MiB budget"


def test_missing_topic_is_a_clear_error(stack, settings, ledger, unique):
    missing = settings.model_copy(update={"kafka_topic": f"no_such_topic_{unique}"})
    with pytest.raises(StagingError, match="does not exist"):
        tick(missing, ledger)
