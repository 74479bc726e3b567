"""Reporting job outcomes outward: the status outbox, dead letters and result events.

The one home for everything the pipeline tells the outside world about a job:

- **statuses** to the Go API: `PATCH {GO_BACKEND_URL}/api/v1/indexing/jobs/{job_id}/status`
  with `{"status": ...}` (and `error_msg` for failures), an `Idempotency-Key` and, when
  GO_API_TOKEN is set, `Authorization: Bearer <token>`. A status is
  first an outbox row (`rag_pipeline.outbox`), written in the transaction that makes its job
  terminal, then delivered with a timeout and capped exponential backoff with jitter:
  2xx delivered; 4xx other than 401/403/408/409/429 rejected (kept with the body, not
  retried forever); anything else (5xx, 408/409/429, timeouts, connection errors) retried
  later; 401/403 too (a wrong or missing token is fixed by its operator, and no status may
  be lost meanwhile), logged as `outbox_unauthorized`;
- **dead letters** on KAFKA_DLQ_TOPIC for messages that cannot be processed (staging) and
  jobs that end failed or dead (runs, repairs), each with the original message and
  Kafka Connect-style headers naming its source topic, partition and offset;
- **result events** on KAFKA_RESULTS_TOPIC when PUBLISH_RESULTS is on.

`Outbox` bundles them for the Dagster definitions; the functions below it are the plain
parts that tests call directly.
"""

from __future__ import annotations

import base64
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from rag_pipeline.contract import DeadLetter, JobResultEvent, ResultMetrics, StatusUpdate
from rag_pipeline.kafka_io import KafkaOptions, produce_confirmed, producer_config
from rag_pipeline.ledger import JobLedger, JobOutcome, OutboxRow
from rag_pipeline.ledger.records import NO_ENVELOPE, KafkaEnvelope
from rag_pipeline.observability.events import event_line
from rag_pipeline.settings import reveal
from rag_pipeline.settings.views import DeliveryView, KafkaTopicsView
from rag_pipeline.vocabulary import FAILED_STATES

log = logging.getLogger(__name__)

RETRYABLE_4XX = (408, 409, 429)
# The Go API refused our credentials: retried (nothing lost) and logged with what to do.
UNAUTHORIZED = (401, 403)
# Status PATCHes in flight at once per delivery: a slow Go API (seconds per answer) is still
# drained at in-flight / latency statuses per second.
DELIVERY_IN_FLIGHT = 16
MAX_BODY = 2000
# (key, value, headers) of one Kafka record.
KafkaRecord = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


# --- statuses to the Go API ------------------------------------------------------------------
@dataclass(frozen=True)
class DeliveryPolicy:
    timeout_seconds: float
    base_backoff_seconds: float
    max_backoff_seconds: float
    # A sender holds a row this long before another may send it.
    lease_seconds: float = 60.0

    @classmethod
    def from_settings(cls, s: DeliveryView) -> DeliveryPolicy:
        return cls(timeout_seconds=s.go_api_timeout_seconds,
                   base_backoff_seconds=s.retry_backoff,
                   max_backoff_seconds=s.outbox_max_backoff_seconds)


@dataclass
class DeliveryReport:
    delivered: int = 0
    rejected: int = 0
    retried: int = 0
    results_published: int = 0
    unauthorized: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: DeliveryReport) -> None:
        self.delivered += other.delivered
        self.rejected += other.rejected
        self.retried += other.retried
        self.results_published += other.results_published
        self.unauthorized += other.unauthorized
        self.errors += other.errors


def backoff(attempts: int, policy: DeliveryPolicy) -> float:
    """Seconds before the next attempt: exponential, capped, with +-25% jitter."""
    delay = min(policy.base_backoff_seconds * 2 ** max(attempts - 1, 0),
                policy.max_backoff_seconds)
    return delay * random.uniform(0.75, 1.25)


class GoApiClient:
    """The Go backend's status endpoint over HTTP."""

    def __init__(self, base_url: str, timeout_seconds: float, token: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(timeout=timeout_seconds, headers=headers)

    def close(self) -> None:
        self.http.close()

    def patch_status(self, row: OutboxRow) -> httpx.Response:
        body = StatusUpdate(status=row.status, error_msg=row.error_msg).body()
        return self.http.patch(f"{self.base_url}/api/v1/indexing/jobs/{row.job_id}/status",
                               json=body, headers={"Idempotency-Key": row.idempotency_key})


def deliver_outbox(ledger: JobLedger, client: GoApiClient, policy: DeliveryPolicy, *,
                   job_ids: Sequence[int] | None = None, limit: int = 500,
                   deadline_seconds: float | None = None, in_flight: int = DELIVERY_IN_FLIGHT,
                   log_event: Callable[[str], None] | None = None) -> DeliveryReport:
    """Deliver due outbox rows (or those of `job_ids`), `in_flight` requests at a time,
    within a time budget if given: a row not started before the deadline is released for
    the next delivery, so a slow or hanging Go API costs at most the budget plus one timeout.
    """
    report = DeliveryReport()
    started = time.monotonic()
    rows = ledger.lease_outbox(limit=limit, lease_seconds=policy.lease_seconds,
                               job_ids=job_ids)
    lock = threading.Lock()

    def deliver_one(row: OutboxRow) -> bool:
        if deadline_seconds is not None and time.monotonic() - started > deadline_seconds:
            return False
        try:
            response = client.patch_status(row)
        except httpx.HTTPError as exc:
            with lock:
                _retry(ledger, row, policy, f"{type(exc).__name__}: {exc}", None, report)
            return True
        with lock:
            _record(ledger, row, response, policy, report, log_event or log.warning)
        return True

    with ThreadPoolExecutor(max_workers=max(1, min(in_flight, len(rows) or 1)),
                            thread_name_prefix="outbox") as pool:
        sent = list(pool.map(deliver_one, rows))
    unsent = [row.id for row, done in zip(rows, sent, strict=True) if not done]
    if unsent:
        ledger.release_outbox(unsent)
    return report


def _record(ledger: JobLedger, row: OutboxRow, response: httpx.Response,
            policy: DeliveryPolicy, report: DeliveryReport,
            log_event: Callable[[str], None]) -> None:
    if 200 <= response.status_code < 300:
        ledger.mark_delivered(row.id, response.status_code)
        report.delivered += 1
    elif response.status_code in UNAUTHORIZED:
        _retry(ledger, row, policy, f"HTTP {response.status_code}", response.status_code,
               report)
        report.unauthorized += 1
        if report.unauthorized == 1:  # once per delivery, not once per status
            log_event(event_line(
                "outbox_unauthorized", job_id=row.job_id, http_status=response.status_code,
                action="the Go API refused the credentials; set GO_API_TOKEN to the bearer "
                "token it expects (statuses wait in the outbox meanwhile)"))
    elif 400 <= response.status_code < 500 and response.status_code not in RETRYABLE_4XX:
        ledger.mark_rejected(row.id, response.status_code, response.text[:MAX_BODY])
        report.rejected += 1
        log_event(event_line(
            "outbox_rejected", job_id=row.job_id, request_id=row.request_id,
            status=row.status, http_status=response.status_code, body=response.text[:300]))
    else:
        _retry(ledger, row, policy, f"HTTP {response.status_code}", response.status_code,
               report)


def _retry(ledger: JobLedger, row: OutboxRow, policy: DeliveryPolicy, error: str,
           status: int | None, report: DeliveryReport) -> None:
    ledger.mark_retry(row.id, error, status, backoff(row.attempts + 1, policy))
    report.retried += 1
    if len(report.errors) < 5:
        report.errors.append(f"job {row.job_id}: {error}")


# --- dead letters ----------------------------------------------------------------------------
def dead_letter_record(*, original: bytes | None, reason: str, error_msg: str, topic: str,
                       partition: int, offset: int, max_bytes: int, retry_count: int = 0,
                       job_id: int | None = None, collection_id: str | None = None,
                       envelope: KafkaEnvelope = NO_ENVELOPE) -> KafkaRecord:
    """The DLQ record of one message: the original's key and headers, then Kafka
    Connect-style headers locating the original (`__connect.errors.topic/partition/offset`)
    and saying what went wrong. A message without a key (or one the ledger staged before
    keys were kept) is keyed by its collection, so a collection's letters stay in order.

    The record's `error_class` is the reason code and `error` the error_msg (the design's
    wire names). The original message is embedded as text when it is UTF-8, else base64; one
    too large for the DLQ topic is cut (the headers still locate the full original in its topic).
    """
    original = original or b""
    limit = max(0, max_bytes - 64 * 1024) * 3 // 4  # room for the record and base64
    body = original[:limit]
    try:
        text, encoding = body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(body).decode("ascii"), "base64"
    record = DeadLetter(
        original_message=text, original_message_encoding=encoding,
        original_truncated=len(original) > limit, error=error_msg, error_class=reason,
        retry_count=retry_count, job_id=job_id, collection_id=collection_id,
    )
    headers = [
        *envelope.headers,
        ("__connect.errors.topic", topic.encode()),
        ("__connect.errors.partition", str(partition).encode()),
        ("__connect.errors.offset", str(offset).encode()),
        ("__connect.errors.exception.class.name", reason.encode()),
        ("__connect.errors.exception.message", error_msg[:1000].encode("utf-8", "replace")),
    ]
    key = envelope.key
    if key is None and collection_id:
        key = collection_id.encode()
    return key, record.model_dump_json().encode(), headers


def dead_letter_failures(producer: Any, ledger: JobLedger, outcomes: Sequence[JobOutcome], *,
                         source_topic: str, dlq_topic: str, max_message_bytes: int) -> int:
    """Publish every failed or dead job to the DLQ with its original message; confirmed."""
    failed = [o for o in outcomes if o.state in FAILED_STATES]
    if not failed:
        return 0
    messages = ledger.messages([o.job_id for o in failed])
    coordinates = ledger.kafka_coordinates([o.job_id for o in failed])
    envelopes = ledger.kafka_envelopes([o.job_id for o in failed])
    records = []
    for o in failed:
        partition, offset, attempts = coordinates.get(o.job_id, (-1, -1, 0))
        records.append(dead_letter_record(
            original=messages.get(o.job_id), reason=o.reason or o.state,
            error_msg=o.error_msg or o.state, topic=source_topic, partition=partition,
            offset=offset, retry_count=attempts, job_id=o.job_id,
            collection_id=o.collection_id, envelope=envelopes.get(o.job_id, NO_ENVELOPE),
            max_bytes=max_message_bytes))
    produce_confirmed(producer, dlq_topic, records)
    return len(records)


# --- result events ---------------------------------------------------------------------------
def publish_results(ledger: JobLedger, producer: Any, topic: str, limit: int = 500) -> int:
    """Publish unpublished outcomes to indexing_job_results (the design's result event)."""
    rows = ledger.unpublished_results(limit)
    if not rows:
        return 0
    records: list[KafkaRecord] = []
    for row in rows:
        metrics = row.metrics or {}
        event = JobResultEvent(
            job_id=row.job_id, request_id=row.request_id, status=row.status,
            error_msg=row.error_msg, processed_at=row.created_at or datetime.now(UTC),
            metrics=ResultMetrics(
                text_length=int(metrics.get("text_length", 0)),
                chunks_created=int(metrics.get("chunks", 0)),
                embedding_time_ms=float(metrics.get("embedding_time_ms", 0.0)),
                storage_time_ms=float(metrics.get("storage_time_ms", 0.0)),
            ),
        )
        records.append((str(row.job_id).encode(), event.model_dump_json().encode(), []))
    produce_confirmed(producer, topic, records)
    ledger.mark_results_published([r.id for r in rows])
    return len(rows)


# --- all of it, for the Dagster definitions --------------------------------------------------
@dataclass(frozen=True)
class Outbox:
    """Where outcomes go: the ledger's outbox, the Go API, the DLQ and result topics."""

    ledger: JobLedger
    kafka: KafkaOptions
    kafka_topic: str
    kafka_dlq_topic: str
    kafka_results_topic: str
    publish_results: bool
    go_backend_url: str
    policy: DeliveryPolicy
    go_api_token: str = field(default="", repr=False)

    @classmethod
    def from_settings(cls, ledger: JobLedger, kafka: KafkaTopicsView,
                      delivery: DeliveryView) -> Outbox:
        return cls(ledger=ledger, kafka=KafkaOptions.from_settings(kafka),
                   kafka_topic=kafka.kafka_topic, kafka_dlq_topic=kafka.kafka_dlq_topic,
                   kafka_results_topic=kafka.kafka_results_topic,
                   publish_results=kafka.publish_results, go_backend_url=delivery.go_backend_url,
                   policy=DeliveryPolicy.from_settings(delivery),
                   go_api_token=reveal(delivery.go_api_token))

    def _producer(self) -> Any:
        from confluent_kafka import Producer

        return Producer(producer_config(self.kafka))

    def report(self, outcomes: Sequence[JobOutcome]) -> DeliveryReport:
        """After jobs were recorded: dead letters for failed and dead ones (confirmed), then
        result events. Their statuses are already outbox rows, written with the jobs; the
        deliverer sends them (`deliver`), so that nothing here waits on the Go API."""
        report = DeliveryReport()
        if any(o.state in FAILED_STATES for o in outcomes):
            producer = self._producer()
            try:
                dead_letter_failures(producer, self.ledger, outcomes,
                                     source_topic=self.kafka_topic,
                                     dlq_topic=self.kafka_dlq_topic,
                                     max_message_bytes=self.kafka.kafka_max_message_bytes)
            finally:
                producer.flush(30)
        if self.publish_results:
            producer = self._producer()
            try:
                report.results_published += publish_results(self.ledger, producer,
                                                            self.kafka_results_topic)
            finally:
                producer.flush(30)
        return report

    def deliver(self, *, job_ids: Sequence[int] | None = None, limit: int = 500,
                deadline_seconds: float | None = None, timeout_seconds: float | None = None,
                log_event: Callable[[str], None] | None = None) -> DeliveryReport:
        """Deliver due statuses (or those of `job_ids`) within a time budget if given."""
        timeout = min(self.policy.timeout_seconds, timeout_seconds or self.policy.timeout_seconds)
        client = GoApiClient(self.go_backend_url, timeout, self.go_api_token)
        try:
            return deliver_outbox(self.ledger, client, self.policy, job_ids=job_ids,
                                  limit=limit, deadline_seconds=deadline_seconds,
                                  log_event=log_event)
        finally:
            client.close()
