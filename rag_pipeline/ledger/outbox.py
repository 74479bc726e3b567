"""The outbox in the ledger: status reports to the Go API, written in the transaction that
makes a job terminal and delivered later (rag_pipeline.outbox delivers them).

Rows are leased before delivery (next_attempt_at moves forward), so two deliverers never send
one row at once, and a deliverer that dies loses nothing: its lease runs out. One job's
reports go out in the order they were written (only its oldest pending row is ever leased),
and a row is marked only while it is pending, so a late answer cannot undo a newer one.
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


def idempotency_key(job_id: int, status: ReportedStatus, sequence: int = 1) -> str:
    """The Idempotency-Key of a job's status report: `job-{id}-{status}` for its first report,
    `job-{id}-{status}-{n}` for its n-th (a job reindexed from failed to completed reports
    again, under a new key, so the Go API ends on the ledger's final state)."""
    return f"job-{job_id}-{status}" if sequence == 1 else f"job-{job_id}-{status}-{sequence}"


def enqueue_outbox_row(conn: psycopg.Connection, job_id: int, request_id: int | None,
                       status: ReportedStatus, error_msg: str | None,
                       metrics: dict[str, Any] | None = None) -> None:
    """Add a status report inside the caller's transaction, unless the job's latest report
    already says this status (a replay or an unchanged reindex). `metrics` are kept for the
    job's result event (PUBLISH_RESULTS)."""
    if job_id < 0:  # an internal job (a rebuild's): the Go API never gave it out
        return
    # The job's row is locked by the caller (it just ended the job), so reports of one job
    # are numbered one at a time.
    reports = conn.execute(
        "SELECT count(*), (array_agg(status ORDER BY id DESC))[1] FROM rag_pipeline.outbox "
        "WHERE job_id = %s", (job_id,)).fetchone()
    if reports[1] == status:
        return
    conn.execute(
        "INSERT INTO rag_pipeline.outbox (job_id, request_id, status, error_msg, "
        "idempotency_key, result_event) VALUES (%s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (idempotency_key) DO NOTHING",
        (job_id, request_id, status, error_msg, idempotency_key(job_id, status, reports[0] + 1),
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
                "AND (%(jobs)s::bigint[] IS NULL OR job_id = ANY(%(jobs)s)) "
                # One job's reports in order: an older pending one goes first.
                "AND NOT EXISTS (SELECT 1 FROM rag_pipeline.outbox older WHERE older.job_id = "
                "rag_pipeline.outbox.job_id AND older.state = 'pending' "
                "AND older.id < rag_pipeline.outbox.id) ORDER BY id "
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

    # Each mark applies only to a row still pending: a late answer to an older attempt
    # (delivered by another deliverer since, or re-sent by an operator) changes nothing.
    def mark_delivered(self, row_id: int, status_code: int) -> bool:
        with self.transaction() as conn:
            if conn.execute(
                    "UPDATE rag_pipeline.outbox SET state = 'delivered', attempts = attempts + 1, "
                    "response_code = %s, delivered_at = now(), delivery_error = NULL "
                    "WHERE id = %s AND state = 'pending'", (status_code, row_id)).rowcount == 0:
                return False
            add_counters(conn, {("outbox_delivered", ""): 1, ("outbox_attempts", ""): 1})
            return True

    def mark_rejected(self, row_id: int, status_code: int, body: str) -> bool:
        with self.transaction() as conn:
            if conn.execute(
                    "UPDATE rag_pipeline.outbox SET state = 'rejected', attempts = attempts + 1, "
                    "response_code = %s, response_body = %s, delivery_error = %s "
                    "WHERE id = %s AND state = 'pending'",
                    (status_code, body, f"HTTP {status_code}", row_id)).rowcount == 0:
                return False
            add_counters(conn, {("outbox_rejected", ""): 1, ("outbox_attempts", ""): 1})
            return True

    def mark_retry(self, row_id: int, error: str, status_code: int | None,
                   delay_seconds: float) -> bool:
        with self.transaction() as conn:
            if conn.execute(
                    "UPDATE rag_pipeline.outbox SET attempts = attempts + 1, delivery_error = %s, "
                    "response_code = %s, next_attempt_at = now() + make_interval(secs => %s) "
                    "WHERE id = %s AND state = 'pending'",
                    (error[:1000], status_code, delay_seconds, row_id)).rowcount == 0:
                return False
            add_counters(conn, {("outbox_attempts", ""): 1})
            return True

    def resend_rejected(self, job_ids: Sequence[int] | None = None) -> int:
        """Rejected reports (of these jobs, or all) pending again, due now: for after the
        Go API was fixed. Returns how many."""
        with self.transaction() as conn:
            return conn.execute(
                "UPDATE rag_pipeline.outbox SET state = 'pending', next_attempt_at = now(), "
                "delivery_error = NULL WHERE state = 'rejected' "
                "AND (%(jobs)s::bigint[] IS NULL OR job_id = ANY(%(jobs)s))",
                {"jobs": list(job_ids) if job_ids is not None else None}).rowcount

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
