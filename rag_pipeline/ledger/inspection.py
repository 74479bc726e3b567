"""Inspection: what people and the crawl request summary read (CLI `inspect`, the
`crawl_requests` asset, tests). Read-only."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from rag_pipeline.ledger.connection import LedgerConnection
from rag_pipeline.ledger.counters import read_counters
from rag_pipeline.ledger.records import MetricsSnapshot, RequestSummary


def read_state_counts(conn: psycopg.Connection, table: str, scope: str = "") -> dict[str, int]:
    """Rows per state of `table` ('jobs' or 'outbox'; `scope` a collection_id, '' for all):
    the folded totals plus the deltas not folded yet (schema migration 10)."""
    rows = conn.execute(
        "SELECT state, sum(n)::bigint FROM (SELECT state, n FROM rag_pipeline.state_counts "
        "  WHERE tbl = %(t)s AND scope = %(s)s UNION ALL SELECT state, n "
        "  FROM rag_pipeline.state_count_deltas WHERE tbl = %(t)s "
        "  AND (%(s)s = '' OR scope = %(s)s)) c GROUP BY state HAVING sum(n) <> 0",
        {"t": table, "s": scope},
    ).fetchall()
    return {state: int(n) for state, n in rows}


class InspectionQueries(LedgerConnection):
    """Counts and rows for people: per crawl request, per state, per job, per outbox row."""

    def request_summaries(self, limit: int = 200) -> list[RequestSummary]:
        """Open crawl requests (a job queued or running), longest waiting first, each with
        its totals: found from the jobs in flight, so the history is never read."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "WITH open AS (SELECT request_id, min(created_at) AS since "
                "  FROM rag_pipeline.jobs WHERE state IN ('queued', 'running') "
                "  AND request_id IS NOT NULL GROUP BY request_id ORDER BY since LIMIT %s) "
                "SELECT o.request_id, count(*), "
                "count(*) FILTER (WHERE j.state = 'completed'), "
                "count(*) FILTER (WHERE j.state = 'failed'), "
                "count(*) FILTER (WHERE j.state = 'dead'), "
                "count(*) FILTER (WHERE j.state IN ('queued', 'running')), o.since "
                "FROM open o JOIN rag_pipeline.jobs j ON j.request_id = o.request_id "
                "GROUP BY o.request_id, o.since ORDER BY o.since, o.request_id", (limit,),
            ).fetchall()
        return [RequestSummary(*r) for r in rows]

    def job_states(self, collection_id: str | None = None) -> dict[str, int]:
        """Jobs per state, of one collection or all (state counts, not a scan)."""
        with self.pool.connection() as conn:
            return read_state_counts(conn, "jobs", collection_id or "")

    def fold_state_counts(self) -> int:
        """Add the state counts' deltas into their totals (reads stay right either way;
        folding keeps them fast)."""
        with self.transaction() as conn:
            return int(conn.execute("SELECT rag_pipeline.fold_state_counts()").fetchone()[0])

    def job(self, job_id: int) -> dict[str, Any] | None:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT job_id, seq, request_id, collection_id, url, doc_id, title, state, "
                "attempts, reason, error_msg, run_id, outcome, duplicate_of, content_hash, "
                "metrics, kafka_topic, kafka_partition, kafka_offset, created_at, updated_at, "
                "finished_at FROM rag_pipeline.jobs WHERE job_id = %s",
                (job_id,),
            ).fetchone()

    def jobs(self, job_ids: Iterable[int]) -> list[dict[str, Any]]:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT job_id, collection_id, url, state, attempts, reason, error_msg, "
                "run_id, outcome, duplicate_of FROM rag_pipeline.jobs "
                "WHERE job_id = ANY(%s) ORDER BY job_id",
                (list(job_ids),),
            ).fetchall()

    def outbox_rows(self, job_id: int | None = None) -> list[dict[str, Any]]:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT id, job_id, status, error_msg, state, attempts, idempotency_key, "
                "response_code, next_attempt_at FROM rag_pipeline.outbox "
                "WHERE %(j)s::bigint IS NULL OR job_id = %(j)s ORDER BY id",
                {"j": job_id},
            ).fetchall()

    def metrics_snapshot(self, top_collections: int) -> MetricsSnapshot:
        """Every gauge the exporter reports, on one connection (ages in seconds, 0 if none)."""
        self.fold_state_counts()  # every scrape: the deltas a count reads stay few
        with self.pool.connection() as conn:
            by_state = read_state_counts(conn, "jobs")
            oldest_queued = conn.execute(
                "SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) "
                "FROM rag_pipeline.jobs WHERE state = 'queued'").fetchone()[0]
            oldest_waiting = conn.execute(
                "SELECT coalesce(extract(epoch FROM now() - min(j.created_at)), 0) "
                "FROM rag_pipeline.jobs j WHERE j.state = 'queued' AND NOT EXISTS ("
                "SELECT 1 FROM rag_pipeline.jobs r WHERE r.collection_id = j.collection_id "
                "AND r.state = 'running')").fetchone()[0]
            backlog = conn.execute(
                "SELECT collection_id, count(*) FROM rag_pipeline.jobs "
                "WHERE state IN ('queued', 'running') GROUP BY collection_id "
                "ORDER BY count(*) DESC, collection_id").fetchall()
            pending, oldest_pending = conn.execute(  # the index of due rows, not a scan
                "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) "
                "FROM rag_pipeline.outbox WHERE state = 'pending'").fetchone()
            slots = dict(conn.execute(
                "SELECT kind, count(*) FILTER (WHERE holder IS NOT NULL AND expires_at > now()) "
                "FROM rag_pipeline.model_slots GROUP BY kind").fetchall())
            counters = read_counters(conn)
            crawling, oldest_crawl = conn.execute(
                "SELECT count(*), coalesce(extract(epoch FROM now() - min(first_staged_at)), 0) "
                "FROM rag_pipeline.collections WHERE completion_staged_at IS NULL").fetchone()
            awaiting, aliases, retiring, unfinished = conn.execute(  # partial indexes
                "SELECT (SELECT count(*) FROM rag_pipeline.collections WHERE "
                "completion_staged_at IS NOT NULL AND released_at IS NULL "
                "AND drop_requested_at IS NULL), "
                "(SELECT count(*) FROM rag_pipeline.aliases WHERE dropped_at IS NULL), "
                "(SELECT count(*) FROM rag_pipeline.collections WHERE superseded_at IS NOT "
                "NULL AND dropped_at IS NULL), (SELECT count(*) FROM rag_pipeline.collections "
                "WHERE drop_requested_at IS NOT NULL AND dropped_at IS NULL)").fetchone()
        return MetricsSnapshot(
            jobs_by_state=by_state, oldest_queued_age=float(oldest_queued),
            oldest_waiting_age=float(oldest_waiting), backlog_top=backlog[:top_collections],
            backlog_rest=sum(n for _, n in backlog[top_collections:]),
            outbox_pending=pending, outbox_oldest_pending_age=float(oldest_pending),
            model_slots_in_use=slots, counters=counters, crawls_incomplete=crawling,
            oldest_incomplete_crawl_age=float(oldest_crawl),
            collections_awaiting_release=awaiting, aliases=aliases,
            collections_awaiting_retirement=retiring, drops_unfinished=unfinished)
