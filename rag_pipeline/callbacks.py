"""Delivering job statuses to the Go backend from the ledger's outbox (`callbacks`).

`PATCH {GO_BACKEND_URL}/api/v1/indexing/jobs/{job_id}/status` with `{"status": ...}` (and
`error_msg` for failures), an `Idempotency-Key`, a timeout, and capped exponential backoff
with jitter between attempts:

- 2xx: delivered;
- 4xx other than 408/409/429: rejected, kept with the response body, not retried forever;
- anything else (5xx, 408/409/429, timeouts, connection errors): retried later.

Rows are leased before the HTTP calls (next_attempt_at moves forward), so deliverers in
several processes never send one row twice at once, and one that dies mid-way loses
nothing: its lease runs out and another deliverer takes the row.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from rag_pipeline.contract import JobResultEvent, ResultMetrics, StatusUpdate
from rag_pipeline.events import event_line
from rag_pipeline.ledger import JobLedger, OutboxRow

log = logging.getLogger(__name__)

RETRYABLE_4XX = (408, 409, 429)
MAX_BODY = 2000


@dataclass(frozen=True)
class DeliveryPolicy:
    timeout_seconds: float = 10.0
    base_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 300.0
    lease_seconds: float = 60.0


@dataclass
class DeliveryReport:
    delivered: int = 0
    rejected: int = 0
    retried: int = 0
    results_published: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: DeliveryReport) -> None:
        self.delivered += other.delivered
        self.rejected += other.rejected
        self.retried += other.retried
        self.results_published += other.results_published
        self.errors += other.errors


def backoff(attempts: int, policy: DeliveryPolicy) -> float:
    """Seconds before the next attempt: exponential, capped, with +-25% jitter."""
    delay = min(policy.base_backoff_seconds * 2 ** max(attempts - 1, 0),
                policy.max_backoff_seconds)
    return delay * random.uniform(0.75, 1.25)


class StatusClient:
    """The Go backend's status endpoint over HTTP."""

    def __init__(self, base_url: str, timeout_seconds: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(timeout=timeout_seconds)

    def close(self) -> None:
        self.http.close()

    def patch_status(self, row: OutboxRow) -> httpx.Response:
        body = StatusUpdate(status=row.status, error_msg=row.error_msg).body()  # type: ignore[arg-type]
        return self.http.patch(f"{self.base_url}/api/v1/indexing/jobs/{row.job_id}/status",
                               json=body, headers={"Idempotency-Key": row.idempotency_key})


def deliver_callbacks(ledger: JobLedger, client: StatusClient, policy: DeliveryPolicy, *,
                      job_ids: Sequence[int] | None = None, limit: int = 500,
                      deadline_seconds: float | None = None,
                      log_event: Callable[[str], None] | None = None) -> DeliveryReport:
    """Deliver due outbox rows (or those of `job_ids`), within a time budget if given."""
    report = DeliveryReport()
    started = time.monotonic()
    rows = ledger.lease_callbacks(limit=limit, lease_seconds=policy.lease_seconds,
                                  job_ids=job_ids)
    for n, row in enumerate(rows):
        if deadline_seconds is not None and time.monotonic() - started > deadline_seconds:
            ledger.release_callbacks([r.id for r in rows[n:]])  # for the next deliverer
            break
        try:
            response = client.patch_status(row)
        except httpx.HTTPError as exc:
            _retry(ledger, row, policy, f"{type(exc).__name__}: {exc}", None, report)
        else:
            if 200 <= response.status_code < 300:
                ledger.mark_callback_delivered(row.id, response.status_code)
                report.delivered += 1
            elif 400 <= response.status_code < 500 and response.status_code not in RETRYABLE_4XX:
                ledger.mark_callback_rejected(row.id, response.status_code,
                                              response.text[:MAX_BODY])
                report.rejected += 1
                message = event_line("status_rejected", job_id=row.job_id,
                                     request_id=row.request_id, status=row.status,
                                     http_status=response.status_code,
                                     body=response.text[:300])
                (log_event or log.warning)(message)
            else:
                _retry(ledger, row, policy, f"HTTP {response.status_code}",
                       response.status_code, report)
    return report


def _retry(ledger: JobLedger, row: OutboxRow, policy: DeliveryPolicy, error: str,
           status: int | None, report: DeliveryReport) -> None:
    delay = backoff(row.attempts + 1, policy)
    ledger.mark_callback_retry(row.id, error, status, delay)
    report.retried += 1
    if len(report.errors) < 5:
        report.errors.append(f"job {row.job_id}: {error}")


def publish_results(ledger: JobLedger, producer: Any, topic: str, limit: int = 500) -> int:
    """Publish unpublished outcomes to indexing_job_results (the design's result event)."""
    from rag_pipeline.kafka_io import produce_confirmed

    rows = ledger.unpublished_results(limit)
    if not rows:
        return 0
    records = []
    for row in rows:
        metrics = row.metrics or {}
        event = JobResultEvent(
            job_id=row.job_id, request_id=row.request_id, status=row.status,  # type: ignore[arg-type]
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
