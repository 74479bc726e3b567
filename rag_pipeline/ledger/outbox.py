"""The outbox in the ledger: status reports to the Go API, written in the transaction that
makes a job terminal and delivered later (rag_pipeline.outbox delivers them).

Rows are leased before delivery (next_attempt_at moves forward), so two deliverers never send
one row at once, and a deliverer that dies loses nothing: its lease runs out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from rag_pipeline.ledger.connection import LedgerConnection
from rag_pipeline.ledger.counters import add_counters
from rag_pipeline.ledger.inspection import read_state_counts
from rag_pipeline.ledger.records import OutboxRow, ReportedStatus


def idempotency_key(job_id: int, status: ReportedStatus) -> str:
    """The Idempotency-Key of a job's status report: one report per (job, status)."""
    return f"job-{job_id}-{status}"


def enqueue_outbox_row(conn: psycopg.Connection, job_id: int, request_id: int | None,
                       status: ReportedStatus, error_msg: str | None,
                       metrics: dict[str, Any] | None = None) -> None:
    """Add a status report inside the caller's transaction (at most one per job and status).
    `metrics` are kept for the job's result event (PUBLISH_RESULTS)."""
    conn.execute(
        "INSERT INTO rag_pipeline.outbox (job_id, request_id, status, error_msg, "
        "idempotency_key, result_event) VALUES (%s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (idempotency_key) DO NOTHING",
        (job_id, request_id, status, error_msg, idempotency_key(job_id, status),
         json.dumps(metrics) if metrics else None),
    )


class OutboxQueries(LedgerConnection):
    """Leasing, marking and counting outbox rows."""

    def lease_outbox(self, limit: int, lease_seconds: float,
                     job_ids: Sequence[int] | None = None) -> list[OutboxRow]:
        """Due pending rows (or those of `job_ids`), leased so no other deliverer sends them."""
        with self.transaction() as conn:
            rows = conn.execute(
                "UPDATE rag_pipeline.outbox c SET next_attempt_at = now() + "
                "make_interval(secs => %(lease)s) FROM (SELECT id FROM rag_pipeline.outbox "
                "WHERE state = 'pending' AND next_attempt_at <= now() "
                "AND (%(jobs)s::bigint[] IS NULL OR job_id = ANY(%(jobs)s)) ORDER BY id "
                "LIMIT %(limit)s FOR UPDATE SKIP LOCKED) due WHERE c.id = due.id "
                "RETURNING c.id, c.job_id, c.request_id, c.status, c.error_msg, "
                "c.idempotency_key, c.attempts",
                {"lease": lease_seconds, "limit": limit,
                 "jobs": list(job_ids) if job_ids is not None else None},
            ).fetchall()
        return sorted((OutboxRow(*r) for r in rows), key=lambda r: r.id)

    def release_outbox(self, ids: Sequence[int]) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE rag_pipeline.outbox SET next_attempt_at = now() "
                         "WHERE id = ANY(%s) AND state = 'pending'", (list(ids),))

    def mark_delivered(self, row_id: int, status_code: int) -> None:
        with self.transaction() as conn:
            add_counters(conn, {("outbox_delivered", ""): 1, ("outbox_attempts", ""): 1})
            conn.execute(
                "UPDATE rag_pipeline.outbox SET state = 'delivered', attempts = attempts + 1, "
                "response_code = %s, delivered_at = now(), delivery_error = NULL WHERE id = %s",
                (status_code, row_id))

    def mark_rejected(self, row_id: int, status_code: int, body: str) -> None:
        with self.transaction() as conn:
            add_counters(conn, {("outbox_rejected", ""): 1, ("outbox_attempts", ""): 1})
            conn.execute(
                "UPDATE rag_pipeline.outbox SET state = 'rejected', attempts = attempts + 1, "
                "response_code = %s, response_body = %s, delivery_error = %s WHERE id = %s",
                (status_code, body, f"HTTP {status_code}", row_id))

    def mark_retry(self, row_id: int, error: str, status_code: int | None,
                   delay_seconds: float) -> None:
        with self.transaction() as conn:
            add_counters(conn, {("outbox_attempts", ""): 1})
            conn.execute(
                "UPDATE rag_pipeline.outbox SET attempts = attempts + 1, delivery_error = %s, "
                "response_code = %s, next_attempt_at = now() + make_interval(secs => %s) "
                "WHERE id = %s", (error[:1000], status_code, delay_seconds, row_id))

    def unpublished_results(self, limit: int) -> list[OutboxRow]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, job_id, request_id, status, error_msg, idempotency_key, attempts, "
                "result_event, created_at FROM rag_pipeline.outbox "
                "WHERE NOT result_published ORDER BY id LIMIT %s", (limit,),
            ).fetchall()
        return [OutboxRow(*r) for r in rows]

    def mark_results_published(self, ids: Sequence[int]) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE rag_pipeline.outbox SET result_published = true "
                         "WHERE id = ANY(%s)", (list(ids),))

    def rejected_outbox(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT job_id, status, response_code, response_body, attempts "
                "FROM rag_pipeline.outbox WHERE state = 'rejected' ORDER BY id DESC "
                "LIMIT %s", (limit,),
            ).fetchall()

    def outbox_counts(self) -> dict[str, int]:
        with self.pool.connection() as conn:
            return read_state_counts(conn, "outbox")
