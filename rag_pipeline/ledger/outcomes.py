"""How a job ends: its outcome, its document and the status row the Go API will receive,
written in ONE transaction (`finish_jobs`), fenced so that only the run holding the job (or
a repair releasing a dead run's jobs) can end it. This is where every status row is born;
the outbox (`ledger/outbox.py`, `rag_pipeline/outbox.py`) delivers it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import psycopg

from rag_pipeline.ledger.connection import LedgerConnection
from rag_pipeline.ledger.counters import Increments, add_counters, count_finished
from rag_pipeline.ledger.outbox import enqueue_outbox_row
from rag_pipeline.ledger.records import JobOutcome, JobState


class OutcomeQueries(LedgerConnection):
    """Ending jobs: a run's outcomes, a dead run's jobs given back."""

    def finish_jobs(self, collection_id: str, outcomes: Sequence[JobOutcome],
                    max_retries: int, *, owner: str | None = None,
                    released_from: Sequence[str] | None = None,
                    counters: Increments | None = None) -> list[JobOutcome]:
        """Record outcomes in ONE transaction: job rows, indexed documents, outbox rows.

        A job to retry (state QUEUED) whose attempts are used up becomes DEAD instead.
        Fencing: with `owner` (the run finishing its own jobs) a job is recorded only while
        that run still holds it and has not been declared dead; with `released_from` (a
        repair) only while one of those runs still holds it. Outcomes that lost the job
        are dropped. Returns the outcomes as recorded. `counters` (what the work cost: model
        requests, tokens) are added in the same transaction, whatever was dropped.
        """
        with self.transaction() as conn:
            if counters:
                add_counters(conn, counters)
            return finish_jobs_in(conn, collection_id, outcomes, max_retries, owner=owner,
                                  released_from=released_from)

    def requeue_jobs_of_runs(self, run_ids: Sequence[str], reason: str, detail: str,
                             max_retries: int) -> list[JobOutcome]:
        """Jobs left running by runs that died: queued again (attempts+1), or dead."""
        with self.transaction() as conn:
            return requeue_in(conn, run_ids, reason, detail, max_retries)


def finish_jobs_in(conn: psycopg.Connection, collection_id: str,
                   outcomes: Sequence[JobOutcome], max_retries: int, *,
                   owner: str | None = None, released_from: Sequence[str] | None = None
                   ) -> list[JobOutcome]:
    """`OutcomeQueries.finish_jobs` inside the caller's transaction."""
    recorded = []
    counted: Increments = Counter()
    fence, fence_args = _fence(owner, released_from)
    for o in outcomes:
        if o.state == JobState.QUEUED:
            attempts = conn.execute("SELECT attempts FROM rag_pipeline.jobs WHERE job_id = %s",
                                    (o.job_id,)).fetchone()[0]
            if attempts + 1 > max_retries:
                o.state = JobState.DEAD
                o.error_msg = (f"dead after {attempts + 1} attempts: "
                               f"{o.error_msg or o.reason}")
        if o.state == JobState.QUEUED:
            queued = conn.execute(
                "UPDATE rag_pipeline.jobs SET state = 'queued', run_id = NULL, "
                "attempts = attempts + 1, reason = %s, error_msg = %s, "
                "updated_at = now() WHERE job_id = %s" + fence + " RETURNING metrics",
                (o.reason, o.error_msg, o.job_id, *fence_args),
            ).fetchone()
            if queued is None:
                continue
            metrics = queued[0]
        else:
            timing = conn.execute(
                "UPDATE rag_pipeline.jobs SET state = %s, outcome = %s, reason = %s, "
                "error_msg = %s, duplicate_of = %s, "
                "metrics = coalesce(metrics, '{}'::jsonb) || %s::jsonb, "
                "attempts = attempts + CASE WHEN %s = 'dead' THEN 1 ELSE 0 END, "
                "finished_at = now(), updated_at = now() WHERE job_id = %s" + fence
                + " RETURNING extract(epoch FROM now() - started_at), "
                "extract(epoch FROM now() - coalesce(produced_at, created_at)), metrics",
                (o.state, o.outcome, o.reason, o.error_msg, o.duplicate_of,
                 json.dumps(o.metrics), o.state, o.job_id, *fence_args),
            ).fetchone()
            if timing is None:
                continue
            *timing, metrics = timing
            count_finished(counted, o.state, o.outcome, o.reason, *timing)
        if o.document is not None:
            d = o.document
            m = d.models
            models = (m.llm_model, m.embedding_model, m.embedding_dim) if m else (None,) * 3
            conn.execute(
                "INSERT INTO rag_pipeline.documents (collection_id, doc_id, url, "
                "file_path, content_hash, job_id, llm_model, embedding_model, embedding_dim) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (collection_id, doc_id) DO UPDATE SET url = EXCLUDED.url, "
                "file_path = EXCLUDED.file_path, content_hash = EXCLUDED.content_hash, "
                "job_id = EXCLUDED.job_id, indexed_at = now(), deleted_at = NULL, "
                "deleted_by = NULL, "
                # An unchanged page keeps the models it was indexed with.
                "llm_model = coalesce(EXCLUDED.llm_model, documents.llm_model), "
                "embedding_model = coalesce(EXCLUDED.embedding_model, documents.embedding_model),"
                " embedding_dim = coalesce(EXCLUDED.embedding_dim, documents.embedding_dim)",
                (collection_id, d.doc_id, d.url, d.file_path, d.content_hash, o.job_id,
                 *models),
            )
        if o.deleted_doc_id is not None:
            conn.execute("UPDATE rag_pipeline.documents SET deleted_at = now(), deleted_by = %s "
                         "WHERE collection_id = %s AND doc_id = %s AND deleted_at IS NULL",
                         (o.job_id, collection_id, o.deleted_doc_id))
        report = o.status_report()
        if report is not None:
            enqueue_outbox_row(conn, o.job_id, o.request_id, report[0], report[1], metrics)
        recorded.append(o)
    add_counters(conn, counted)
    return recorded


def requeue_in(conn: psycopg.Connection, run_ids: Sequence[str], reason: str, detail: str,
               max_retries: int) -> list[JobOutcome]:
    """`OutcomeQueries.requeue_jobs_of_runs` inside the caller's transaction."""
    rows = conn.execute(
        "SELECT job_id, request_id, collection_id FROM rag_pipeline.jobs "
        "WHERE state = 'running' AND run_id = ANY(%s) ORDER BY seq", (list(run_ids),),
    ).fetchall()
    by_collection: dict[str, list[JobOutcome]] = {}
    for job_id, request_id, collection_id in rows:
        by_collection.setdefault(collection_id, []).append(JobOutcome(
            job_id=job_id, request_id=request_id, state=JobState.QUEUED, reason=reason,
            error_msg=f"{reason}: {detail}", collection_id=collection_id))
    recorded: list[JobOutcome] = []
    for collection_id, outcomes in by_collection.items():
        recorded += finish_jobs_in(conn, collection_id, outcomes, max_retries,
                                   released_from=run_ids)
    return recorded


def _fence(owner: str | None, released_from: Sequence[str] | None
           ) -> tuple[str, tuple[Any, ...]]:
    """The condition a job row must meet to be finished (see `finish_jobs`)."""
    if owner is not None:
        return (" AND state = 'running' AND run_id = %s AND NOT EXISTS (SELECT 1 FROM "
                "rag_pipeline.runs r WHERE r.run_id = %s AND r.declared_dead_at IS NOT NULL)",
                (owner, owner))
    if released_from is not None:
        return " AND state = 'running' AND run_id = ANY(%s)", (list(released_from),)
    return "", ()
