"""The records that travel in and out of the ledger, and the vocabulary of their fields.

Plain frozen dataclasses (no database access): staged messages, claimed jobs, cleaned page
texts, indexed documents, job outcomes, outbox rows, crawl request summaries.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rag_pipeline.vocabulary import (
    FAILED_STATES,
    TERMINAL_STATES,
    JobKind,
    JobState,
    OutboxState,
    Outcome,
    Reason,
    ReportedStatus,
)

__all__ = [
    "FAILED_STATES",
    "TERMINAL_STATES",
    "CollectionLife",
    "CrawlSummary",
    "FailedMessage",
    "IndexModels",
    "IndexedDocument",
    "JobOutcome",
    "JobState",
    "KafkaEnvelope",
    "OutboxRow",
    "OutboxState",
    "Outcome",
    "PageText",
    "PendingCollection",
    "Reason",
    "RebuildPlan",
    "Release",
    "ReportedStatus",
    "RequestSummary",
    "RunJob",
    "StageResult",
    "StagedCompletion",
    "StagedJob",
]


@dataclass(frozen=True)
class KafkaEnvelope:
    """A message's key and headers as the producer sent them: its dead letter carries them
    on (docs/design.md, the DLQ record)."""

    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def of(cls, message: Any) -> KafkaEnvelope:
        """The envelope of a confluent_kafka message."""
        headers = message.headers() or []
        return cls(message.key(), tuple((name, value or b"") for name, value in headers))

    def to_json(self) -> list[list[str]]:
        """The headers as stored in the ledger (jobs.kafka_headers): [name, base64]."""
        return [[name, base64.b64encode(value).decode("ascii")] for name, value in self.headers]

    @classmethod
    def from_row(cls, key: bytes | None, headers: list[list[str]] | None) -> KafkaEnvelope:
        return cls(bytes(key) if key is not None else None,
                   tuple((n, base64.b64decode(v)) for n, v in headers or []))


NO_ENVELOPE = KafkaEnvelope()


@dataclass(frozen=True)
class StagedJob:
    """A valid message, ready to become a queued job."""

    job_id: int
    request_id: int
    project_id: int
    user_id: str
    collection_id: str
    url: str
    normalized_url: str
    doc_id: str
    title: str
    details: dict[str, Any]
    message: bytes
    topic: str
    partition: int
    offset: int
    # When the crawler produced the message (its Kafka timestamp), if Kafka says.
    produced_at: datetime | None = None
    alias: str | None = None
    kind: JobKind = JobKind.PAGE
    envelope: KafkaEnvelope = NO_ENVELOPE
    # Computed once: it is compared in memory, against the ledger, and stored.
    message_sha256: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "message_sha256", hashlib.sha256(self.message).digest())


@dataclass(frozen=True)
class StagedCompletion:
    """The crawler's word that a crawl request is complete (a `crawl_completed` message)."""

    collection_id: str
    request_id: int
    alias: str | None
    pages: int
    completed_at: datetime
    # Where it came from (for its dead letter, should it be refused).
    message: bytes
    topic: str
    partition: int
    offset: int
    envelope: KafkaEnvelope = NO_ENVELOPE


@dataclass(frozen=True)
class CrawlSummary:
    """A collection's crawl as the ledger knows it: its alias, whether the crawler said it
    is complete (and with how many pages), and its jobs per state."""

    collection_id: str
    alias: str | None
    request_id: int | None
    first_staged_at: datetime
    crawl_completed_at: datetime | None
    crawl_pages: int | None
    jobs_by_state: dict[str, int]

    @property
    def received(self) -> int:
        return sum(self.jobs_by_state.values())

    @property
    def completed(self) -> bool:
        return self.crawl_completed_at is not None


@dataclass(frozen=True)
class CollectionLife:
    """Where a collection is in its life under its alias (docs/design.md, "Collections")."""

    collection_id: str
    alias: str | None
    first_staged_at: datetime
    crawl_pages: int | None
    completion_staged_at: datetime | None
    renews: str | None
    carried_over_at: datetime | None
    released_at: datetime | None
    superseded_at: datetime | None


@dataclass(frozen=True)
class Release:
    """What releasing a collection did: its alias (if any) answers from it now, unless a
    newer collection of the alias already did (then it is superseded at once)."""

    collection_id: str
    alias: str | None
    previous_collection_id: str | None
    cause: str | None  # vocabulary.AliasChange, None when the alias did not move
    pages_removed: int


@dataclass(frozen=True)
class RebuildPlan:
    """A rebuild of an alias: the new collection, the one it rebuilds, the pages queued
    again, and the urls of the pages that cannot be (retention pruned their message)."""

    collection_id: str
    alias: str
    rebuild_of: str
    pages: int
    pruned_urls: list[str]


@dataclass(frozen=True)
class FailedMessage:
    """A rejected message; recorded as a failed job when its job_id could be read."""

    job_id: int | None
    collection_id: str | None
    reason: str
    error_msg: str
    topic: str
    partition: int
    offset: int
    message: bytes | None
    envelope: KafkaEnvelope = NO_ENVELOPE


@dataclass
class StageResult:
    inserted: list[int] = field(default_factory=list)
    duplicates: int = 0
    failed_recorded: int = 0


@dataclass(frozen=True)
class PendingCollection:
    collection_id: str
    first_seq: int
    last_seq: int
    queued: int
    attempts: int
    nudge: int = 0

    @property
    def run_key(self) -> str:
        # Changes whenever the set of waiting jobs changes (new jobs, jobs requeued with
        # attempts+1, a nudge from reconciliation), and only then: a repeated evaluation
        # requests nothing new.
        return (f"{self.collection_id}:{self.first_seq}-{self.last_seq}:{self.attempts}"
                f":{self.nudge}")


@dataclass(frozen=True)
class RunJob:
    """A job owned by a run, as the steps of the run see it."""

    job_id: int
    request_id: int | None
    collection_id: str
    url: str
    normalized_url: str
    doc_id: str
    title: str
    attempts: int
    message_bytes: int
    text_bytes: int
    kind: JobKind = JobKind.PAGE


@dataclass(frozen=True)
class PageText:
    job_id: int
    request_id: int | None
    doc_id: str
    normalized_url: str
    title: str
    text: str
    content_hash: str
    attempts: int


@dataclass(frozen=True)
class IndexModels:
    """The models a document was indexed with (a rebuild after a model change needs them)."""

    llm_model: str
    embedding_model: str
    embedding_dim: int


@dataclass(frozen=True)
class IndexedDocument:
    doc_id: str
    url: str
    file_path: str
    content_hash: str
    models: IndexModels | None = None  # None: indexed before the ledger recorded models


@dataclass
class JobOutcome:
    """How a run leaves a job. State QUEUED means: retry in a later run (attempts+1)."""

    job_id: int
    request_id: int | None
    state: JobState
    outcome: Outcome | None = None
    reason: str | None = None  # a Reason, or Reason.about(field)
    error_msg: str | None = None
    duplicate_of: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    document: IndexedDocument | None = None
    collection_id: str | None = None
    # A page_deleted job's document, marked deleted in the ledger with the outcome.
    deleted_doc_id: str | None = None

    def status_report(self) -> tuple[ReportedStatus, str | None] | None:
        """The (status, error_msg) the Go backend gets, for terminal states."""
        if self.state == JobState.COMPLETED:
            return ReportedStatus.COMPLETED, None
        if self.state in FAILED_STATES:
            return ReportedStatus.FAILED, self.error_msg or self.reason or "failed"
        return None


@dataclass(frozen=True)
class OutboxRow:
    """One status report to deliver to the Go API (table rag_pipeline.outbox)."""

    id: int
    job_id: int
    request_id: int | None
    status: ReportedStatus
    error_msg: str | None
    idempotency_key: str
    attempts: int
    metrics: dict[str, Any] | None = None
    created_at: Any = None


@dataclass(frozen=True)
class RequestSummary:
    request_id: int | None
    total: int
    completed: int
    failed: int
    dead: int
    pending: int
    oldest_pending: Any


@dataclass
class MetricsSnapshot:
    """What the metrics exporter reads from the ledger at one scrape."""

    jobs_by_state: dict[str, int]
    oldest_queued_age: float
    oldest_waiting_age: float
    backlog_top: list[tuple[str, int]]
    backlog_rest: int
    outbox_pending: int
    outbox_oldest_pending_age: float
    model_slots_in_use: dict[str, int]
    counters: dict[tuple[str, str], float]
    # Collections whose crawl has not said it is complete, and the age of the oldest.
    crawls_incomplete: int = 0
    oldest_incomplete_crawl_age: float = 0.0
    collections_awaiting_release: int = 0
    aliases: int = 0
    collections_awaiting_retirement: int = 0
    drops_unfinished: int = 0
