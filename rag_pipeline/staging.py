"""Staging: read `indexing_jobs` from the offsets stored in the ledger, validate every
message, dead-letter the bad ones, and write jobs + new offsets in one transaction.

This is what `indexing_jobs_sensor` does on every tick, as plain functions. A tick is
bounded by a message count, a byte budget and a time budget, so it ends well inside
Dagster's 60 s limit whatever arrives. Restarting anywhere loses and duplicates nothing:

- before the ledger commit: nothing was written, the next tick reads the same messages;
- after it: the jobs are staged and the offsets advanced together; the consumer-group
  commit and the run requests are derived again by the next tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, KafkaException, TopicPartition

from rag_pipeline.contract import (
    ContentLimits,
    CrawlCompleted,
    IndexingJob,
    PageDeleted,
    parse_message,
)
from rag_pipeline.kafka_io import produce_confirmed
from rag_pipeline.ledger import FailedMessage, JobLedger, StagedCompletion, StagedJob
from rag_pipeline.ledger.records import KafkaEnvelope
from rag_pipeline.outbox import dead_letter_record
from rag_pipeline.settings.views import KafkaTopicsView, PageView
from rag_pipeline.staging_rules import (
    alias_conflict,
    split_alias_conflicts,
    split_dropped,
    staged_job,
    with_alias_scope,
)
from rag_pipeline.vocabulary import Reason

log = logging.getLogger(__name__)

CONSUME_BATCH = 100
EMPTY_POLL_SECONDS = 0.5
KAFKA_TIMEOUT_S = 10.0
# A young broker creates its __consumer_offsets topic on first use; these pass by themselves.
COORDINATOR_WAIT_CODES = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                          KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT)


class StagingError(Exception):
    """The tick could not run (Kafka unreachable, topic missing); the message says why."""


@dataclass(frozen=True)
class TickBudget:
    max_messages: int
    max_bytes: int
    seconds: float

    @classmethod
    def from_settings(cls, s: KafkaTopicsView) -> TickBudget:
        return cls(s.sensor_max_messages, s.sensor_max_bytes, s.sensor_time_budget_seconds)


@dataclass(frozen=True)
class StagingConfig:
    topic: str
    dlq_topic: str
    auto_offset_reset: str
    limits: ContentLimits

    @classmethod
    def from_settings(cls, kafka: KafkaTopicsView, pages: PageView) -> StagingConfig:
        return cls(topic=kafka.kafka_topic, dlq_topic=kafka.kafka_dlq_topic,
                   auto_offset_reset=kafka.kafka_auto_offset_reset,
                   limits=ContentLimits.from_settings(kafka, pages))

    @property
    def max_message_bytes(self) -> int:
        return self.limits.max_message_bytes


@dataclass
class TickReport:
    read: int = 0
    bytes_read: int = 0
    staged: int = 0
    completions: int = 0
    duplicates: int = 0
    rejected: int = 0
    conflicts: int = 0
    failed_recorded: int = 0
    stopped_by: str = "caught_up"
    elapsed_ms: float = 0.0
    offsets: dict[int, int] = field(default_factory=dict)
    lag: dict[int, int] = field(default_factory=dict)
    rejected_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def total_lag(self) -> int:
        return sum(self.lag.values())

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("offsets")
        data["total_lag"] = self.total_lag
        return data


def _start_offsets(consumer: Any, topic: str, partitions: list[int], stored: dict[int, int],
                   auto_offset_reset: str) -> dict[int, int]:
    """Absolute start offset per partition: the ledger's, else the group's, else the reset
    policy resolved against the watermarks (so "latest" never skips messages between ticks)."""
    start = {p: stored[p] for p in partitions if p in stored}
    missing = [p for p in partitions if p not in stored]
    if missing:
        committed = _committed(consumer, [TopicPartition(topic, p) for p in missing])
        for tp in committed:
            if tp.offset >= 0:
                start[tp.partition] = tp.offset
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                   timeout=KAFKA_TIMEOUT_S)
        if p not in start:
            start[p] = low if auto_offset_reset == "earliest" else high
        elif start[p] < low:
            log.warning("%s[%d]: messages %d..%d expired before they were staged", topic, p,
                        start[p], low - 1)
            start[p] = low
    return start


def _committed(consumer: Any, partitions: list[TopicPartition]) -> list[TopicPartition]:
    """The group's committed offsets, waiting out a coordinator that is still loading."""
    deadline = time.monotonic() + KAFKA_TIMEOUT_S
    while True:
        try:
            return consumer.committed(partitions, timeout=KAFKA_TIMEOUT_S)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() not in COORDINATOR_WAIT_CODES or time.monotonic() > deadline:
                raise StagingError(f"Kafka could not say the group's committed offsets: "
                                   f"{error}") from None
            time.sleep(0.5)


def _caught_up(consumer: Any, topic: str, positions: dict[int, int]) -> bool:
    for partition, position in positions.items():
        # Every fetch response carries the partition's high watermark: ask the broker only
        # for a partition the consumer has not fetched from yet. A stale answer costs one
        # tick of latency, never a message (the next tick starts from the ledger's offsets).
        tp = TopicPartition(topic, partition)
        _, high = consumer.get_watermark_offsets(tp, cached=True)
        if high < 0:
            _, high = consumer.get_watermark_offsets(tp, timeout=KAFKA_TIMEOUT_S)
        if position < high:
            return False
    return True


def read_messages(consumer: Any, topic: str, start: dict[int, int], budget: TickBudget,
                  clock: Callable[[], float] = time.monotonic) -> tuple[list[Any], str]:
    """Consume from `start` within the budget; the kept messages are a prefix per partition."""
    consumer.assign([TopicPartition(topic, p, o) for p, o in start.items()])
    deadline = clock() + budget.seconds
    kept: list[Any] = []
    size = largest = 0
    positions = dict(start)
    while True:
        if len(kept) >= budget.max_messages:
            return kept, "messages"
        if size >= budget.max_bytes:
            return kept, "bytes"
        remaining = deadline - clock()
        if remaining <= 0:
            return kept, "time"
        # consume() holds a whole batch in memory: ask for no more than the byte budget
        # leaves room for, judged by the largest message so far (one at first).
        room = (budget.max_bytes - size) // largest if largest else 1
        batch = consumer.consume(
            num_messages=max(1, min(CONSUME_BATCH, budget.max_messages - len(kept), room)),
            timeout=min(EMPTY_POLL_SECONDS, remaining))
        if not batch:
            if _caught_up(consumer, topic, positions):
                return kept, "caught_up"
            continue
        for message in batch:
            if message.error():
                raise StagingError(f"Kafka read error on {topic}: {message.error()}")
            # Past the budget: stop keeping anything, so each partition keeps a prefix and
            # the next tick starts exactly at the first message left out.
            if len(kept) >= budget.max_messages or size >= budget.max_bytes:
                return kept, "messages" if len(kept) >= budget.max_messages else "bytes"
            kept.append(message)
            length = len(message.value() or b"")
            size += length
            largest = max(largest, length)
            positions[message.partition()] = message.offset() + 1


def produced_at(message: Any) -> datetime | None:
    """The message's Kafka timestamp (set by the producer or the broker), if it has one."""
    kind, millis = message.timestamp()
    if kind == TIMESTAMP_NOT_AVAILABLE or millis <= 0:
        return None
    return datetime.fromtimestamp(millis / 1000, UTC)


def stage_messages(*, consumer: Any, producer: Any, ledger: JobLedger, config: StagingConfig,
                   budget: TickBudget, clock: Callable[[], float] = time.monotonic) -> TickReport:
    """One tick: read, validate, dead-letter, stage + advance offsets, commit the group."""
    started = clock()
    report = TickReport()
    topic = config.topic
    try:
        metadata = consumer.list_topics(topic, timeout=KAFKA_TIMEOUT_S)
    except KafkaException as exc:
        raise StagingError(f"Kafka is unreachable ({exc}); check KAFKA_BOOTSTRAP_SERVERS") from None
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise StagingError(
            f"Kafka topic {topic!r} does not exist; create it (`rag-pipeline stack up` does) "
            "or set KAFKA_TOPIC"
        )
    partitions = sorted(described.partitions)
    stored = ledger.stored_offsets(topic)
    start = _start_offsets(consumer, topic, partitions, stored, config.auto_offset_reset)
    messages, report.stopped_by = read_messages(consumer, topic, start, budget, clock)

    staged: list[StagedJob] = []
    completions: list[StagedCompletion] = []
    failed: list[FailedMessage] = []
    seen: dict[int, StagedJob] = {}
    conflicts: list[StagedJob] = []
    next_offsets = {p: o for p, o in start.items() if stored.get(p) != o}
    for message in messages:
        value, partition, offset = message.value(), message.partition(), message.offset()
        next_offsets[partition] = offset + 1
        report.read += 1
        report.bytes_read += len(value or b"")
        parsed = parse_message(value, config.limits)
        if isinstance(parsed, CrawlCompleted):
            completions.append(StagedCompletion(
                parsed.collection_id, parsed.request_id, parsed.alias, parsed.pages,
                parsed.completed_at, value, topic, partition, offset,
                KafkaEnvelope.of(message)))
            continue
        if isinstance(parsed, IndexingJob | PageDeleted):
            job = staged_job(parsed, value, topic, partition, offset, produced_at(message),
                             KafkaEnvelope.of(message))
            first = seen.get(job.job_id)
            if first is None:
                seen[job.job_id] = job
                staged.append(job)
            elif first.message_sha256 != job.message_sha256:
                conflicts.append(job)
            else:
                report.duplicates += 1
            continue
        report.rejected += 1
        report.rejected_reasons[parsed.reason] = report.rejected_reasons.get(parsed.reason, 0) + 1
        failed.append(FailedMessage(parsed.job_id, parsed.collection_id, parsed.reason,
                                    parsed.error_msg, topic, partition, offset, value,
                                    KafkaEnvelope.of(message)))
    messages.clear()  # the values live on in `staged` / `failed` only

    # A job_id already staged from another message: the first one wins, this one is dead-lettered.
    known_conflicts = ledger.conflicting_job_ids(staged)
    for job in [j for j in staged if j.job_id in known_conflicts]:
        staged.remove(job)
        conflicts.append(job)
    # A collection answers to one alias: a message naming another fails, with its reason.
    aliases = ledger.collection_aliases(
        i.collection_id for i in [*staged, *completions]) if staged or completions else {}
    staged, wrong_jobs = split_alias_conflicts(aliases, staged)  # pages come first
    completions, wrong_ends = split_alias_conflicts(aliases, completions)
    staged = [with_alias_scope(j, aliases[j.collection_id]) for j in staged]
    refused = [alias_conflict(i, aliases.get(i.collection_id)) for i in [*wrong_jobs, *wrong_ends]]
    # A dropped collection takes nothing more.
    dropped = ledger.dropped_collections(aliases) if aliases else set()
    staged, dropped_jobs = split_dropped(dropped, staged)
    completions, dropped_ends = split_dropped(dropped, completions)
    for item in [*refused, *dropped_jobs, *dropped_ends]:
        failed.append(item)
        report.rejected += 1
        report.rejected_reasons[item.reason] = report.rejected_reasons.get(item.reason, 0) + 1
    report.completions = len(completions)
    records = [dead_letter_record(
        original=f.message, reason=f.reason, error_msg=f.error_msg, topic=f.topic,
        partition=f.partition, offset=f.offset, job_id=f.job_id, collection_id=f.collection_id,
        envelope=f.envelope, max_bytes=config.max_message_bytes) for f in failed]
    records += [dead_letter_record(
        original=job.message, reason=Reason.CONFLICTING_JOB_ID,
        error_msg=f"{Reason.CONFLICTING_JOB_ID}: job_id {job.job_id} was already staged from "
        "another message; this one is ignored", topic=job.topic, partition=job.partition,
        offset=job.offset, job_id=job.job_id, collection_id=job.collection_id,
        envelope=job.envelope, max_bytes=config.max_message_bytes) for job in conflicts]
    report.conflicts = len(conflicts)
    # Delivery is confirmed before the offsets advance: a rejected message is never lost.
    produce_confirmed(producer, config.dlq_topic, records)

    result = ledger.stage(topic, staged, failed, next_offsets, expected=stored,
                          conflicts=len(conflicts), completions=completions)
    report.staged = len(result.inserted)
    report.duplicates += result.duplicates
    report.failed_recorded = result.failed_recorded
    report.offsets = dict(sorted(next_offsets.items()))
    _commit_group_offsets(consumer, topic, next_offsets)
    report.lag = _lag(consumer, topic, {**start, **next_offsets})
    report.elapsed_ms = round((clock() - started) * 1000, 1)
    return report


def _commit_group_offsets(consumer: Any, topic: str, offsets: dict[int, int]) -> None:
    """Mirror the ledger's offsets into the consumer group, only so that lag tools see them."""
    if not offsets:
        return
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                        asynchronous=False)
    except KafkaException as exc:
        log.warning("committing offsets to the consumer group failed (lag tools may lag): %s",
                    exc)


def _lag(consumer: Any, topic: str, positions: dict[int, int]) -> dict[int, int]:
    lag = {}
    for partition, position in sorted(positions.items()):
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        if high >= 0:
            lag[partition] = max(0, high - position)
    return lag

