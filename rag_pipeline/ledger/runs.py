"""Runs: claims, cleaned texts, indexed documents.

What an indexing run reads and writes about the jobs it owns before they end; how a job ends
(its outcome, document and status row) is `ledger/outcomes.py`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg

from rag_pipeline.ledger.connection import LedgerConnection, fence_run
from rag_pipeline.ledger.records import (
    IndexedDocument,
    IndexModels,
    KafkaEnvelope,
    PageText,
    RunJob,
)
from rag_pipeline.vocabulary import RunScope


class RunQueries(LedgerConnection):
    """What indexing runs and the repairs around them do with the jobs."""

    # --- claims --------------------------------------------------------------------------------
    def claim_jobs(self, collection_id: str, run_id: str, run_family: Sequence[str],
                   limit: int, scope: RunScope = RunScope.PENDING) -> list[RunJob]:
        """Take this run's jobs: those its family already owns, then queued ones up to `limit`.

        scope="everything" first requeues the latest job of every url of the collection
        that no live run owns, so the collection is processed again from the ledger.
        Fenced: a run declared dead claims nothing (RunFenced).
        """
        with self.transaction() as conn:
            fence_run(conn, run_id)
            self._adopt(conn, collection_id, run_id, run_family)
            if scope == RunScope.EVERYTHING:
                conn.execute(
                    "UPDATE rag_pipeline.jobs j SET state = 'queued', run_id = NULL, "
                    "updated_at = now() FROM (SELECT DISTINCT ON (normalized_url) job_id "
                    "  FROM rag_pipeline.jobs WHERE collection_id = %s "
                    "  AND normalized_url IS NOT NULL ORDER BY normalized_url, seq DESC) latest "
                    "WHERE j.job_id = latest.job_id AND j.state IN ('completed', 'failed', 'dead') "
                # A page whose payload retention dropped cannot be processed again: its
                # document stays as it is (`pruned_pages` counts them).
                "AND j.pruned_at IS NULL",
                    (collection_id,),
                )
            owned = conn.execute(
                "SELECT count(*) FROM rag_pipeline.jobs WHERE run_id = %s AND state = 'running'",
                (run_id,),
            ).fetchone()[0]
            conn.execute(
                "UPDATE rag_pipeline.jobs j SET state = 'running', run_id = %s, "
                "started_at = now(), updated_at = now() FROM (SELECT job_id FROM "
                "rag_pipeline.jobs WHERE collection_id = %s AND state = 'queued' ORDER BY seq "
                "LIMIT %s FOR UPDATE SKIP LOCKED) picked WHERE j.job_id = picked.job_id",
                (run_id, collection_id, max(0, limit - owned)),
            )
        return self.run_jobs(run_id)

    def pruned_pages(self, collection_id: str) -> int:
        """Urls of the collection whose latest job's payload was pruned (RETENTION_DAYS):
        what processing the collection again from the ledger cannot redo."""
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT count(*) FROM (SELECT DISTINCT ON (normalized_url) pruned_at "
                "FROM rag_pipeline.jobs WHERE collection_id = %s AND normalized_url IS NOT NULL "
                "ORDER BY normalized_url, seq DESC) latest WHERE pruned_at IS NOT NULL",
                (collection_id,)).fetchone()[0]

    def claim_more(self, collection_id: str, run_id: str, limit: int) -> list[RunJob]:
        """Queued jobs of the collection staged since the run began, up to `limit`; only
        those taken by this call (a running run takes its collection's new pages)."""
        if limit <= 0:
            return []
        with self.transaction() as conn:
            fence_run(conn, run_id)
            taken = [r[0] for r in conn.execute(
                "UPDATE rag_pipeline.jobs j SET state = 'running', run_id = %s, "
                "started_at = now(), updated_at = now() FROM (SELECT job_id FROM "
                "rag_pipeline.jobs WHERE collection_id = %s AND state = 'queued' ORDER BY seq "
                "LIMIT %s FOR UPDATE SKIP LOCKED) picked WHERE j.job_id = picked.job_id "
                "RETURNING j.job_id", (run_id, collection_id, limit)).fetchall()]
        if not taken:
            return []
        return [j for j in self.run_jobs(run_id) if j.job_id in set(taken)]

    def _adopt(self, conn: psycopg.Connection, collection_id: str, run_id: str,
               run_family: Sequence[str]) -> None:
        conn.execute(
            "UPDATE rag_pipeline.jobs SET run_id = %s, updated_at = now() "
            "WHERE collection_id = %s AND state = 'running' AND run_id = ANY(%s)",
            (run_id, collection_id, list(run_family)),
        )

    def adopt_jobs(self, collection_id: str, run_id: str, run_family: Sequence[str]
                   ) -> list[RunJob]:
        """The jobs of this run, including those a re-executed parent run had claimed."""
        with self.transaction() as conn:
            self._adopt(conn, collection_id, run_id, run_family)
        return self.run_jobs(run_id)

    def run_jobs(self, run_id: str) -> list[RunJob]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT job_id, request_id, collection_id, url, normalized_url, doc_id, "
                "coalesce(title, ''), attempts, coalesce(message_bytes, 0), "
                "coalesce(octet_length(clean_text), 0), kind FROM rag_pipeline.jobs "
                "WHERE run_id = %s AND state = 'running' ORDER BY seq",
                (run_id,),
            ).fetchall()
        return [RunJob(*r) for r in rows]

    def messages(self, job_ids: Sequence[int]) -> dict[int, bytes]:
        """The Kafka messages as received, for a batch of jobs."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT job_id, message FROM rag_pipeline.jobs WHERE job_id = ANY(%s)",
                (list(job_ids),),
            ).fetchall()
        return {job_id: bytes(message or b"") for job_id, message in rows}

    def kafka_envelopes(self, job_ids: Sequence[int]) -> dict[int, KafkaEnvelope]:
        """Each job's message key and headers as the producer sent them."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT job_id, kafka_key, kafka_headers FROM rag_pipeline.jobs "
                "WHERE job_id = ANY(%s)", (list(job_ids),),
            ).fetchall()
        return {r[0]: KafkaEnvelope.from_row(r[1], r[2]) for r in rows}

    def kafka_coordinates(self, job_ids: Sequence[int]) -> dict[int, tuple[int, int, int]]:
        """(partition, offset, attempts) of each job's message."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT job_id, kafka_partition, kafka_offset, attempts FROM rag_pipeline.jobs "
                "WHERE job_id = ANY(%s)", (list(job_ids),),
            ).fetchall()
        return {r[0]: (r[1] if r[1] is not None else -1, r[2] if r[2] is not None else -1, r[3])
                for r in rows}

    def store_page_texts(self, run_id: str,
                         rows: Sequence[tuple[int, str, str, str, str, dict[str, Any]]]) -> None:
        """(job_id, title, clean_text, text_source, content_hash, metrics) per cleaned page
        of a job the run holds. Fenced: a run declared dead stores nothing (RunFenced)."""
        if not rows:
            return
        with self.transaction() as conn:
            fence_run(conn, run_id)
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE rag_pipeline.jobs SET title = %s, clean_text = %s, "
                    "text_source = %s, content_hash = %s, "
                    "metrics = coalesce(metrics, '{}'::jsonb) || %s::jsonb, updated_at = now() "
                    "WHERE job_id = %s AND run_id = %s AND state = 'running'",
                    [(title, text, source, digest, json.dumps(metrics), job_id, run_id)
                     for job_id, title, text, source, digest, metrics in rows],
                )

    def page_texts(self, job_ids: Sequence[int]) -> list[PageText]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT job_id, request_id, doc_id, normalized_url, coalesce(title, ''), "
                "clean_text, content_hash, attempts FROM rag_pipeline.jobs "
                "WHERE job_id = ANY(%s) AND clean_text IS NOT NULL ORDER BY seq",
                (list(job_ids),),
            ).fetchall()
        return [PageText(*r) for r in rows]

    def indexed_documents(self, collection_id: str, doc_ids: Sequence[str]
                          ) -> dict[str, IndexedDocument]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT doc_id, url, file_path, content_hash, llm_model, embedding_model, "
                "embedding_dim FROM rag_pipeline.documents "
                "WHERE collection_id = %s AND doc_id = ANY(%s) AND deleted_at IS NULL",
                (collection_id, list(doc_ids)),
            ).fetchall()
        return {r[0]: IndexedDocument(*r[:4], IndexModels(*r[4:]) if r[4] else None)
                for r in rows}

    def documents_with_content(self, collection_id: str, hashes: Sequence[str]
                               ) -> dict[str, IndexedDocument]:
        """Indexed documents of the collection by content hash (for duplicate content)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT ON (content_hash) doc_id, url, file_path, content_hash "
                "FROM rag_pipeline.documents WHERE collection_id = %s "
                "AND content_hash = ANY(%s) AND deleted_at IS NULL "
                "ORDER BY content_hash, indexed_at",
                (collection_id, list(hashes)),
            ).fetchall()
        return {r[3]: IndexedDocument(*r) for r in rows}

    def document_urls(self, collection_id: str, doc_ids: Sequence[str]) -> dict[str, str]:
        if not doc_ids:  # the common case: no page settled as a duplicate
            return {}
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT doc_id, url FROM rag_pipeline.documents "
                "WHERE collection_id = %s AND doc_id = ANY(%s) AND deleted_at IS NULL",
                (collection_id, list(doc_ids)),
            ).fetchall()
        return dict(rows)

    def documents_missing_from_lightrag(self, collection_id: str) -> list[str]:
        """Indexed documents (per the ledger) that LightRAG does not hold as processed."""
        with self.pool.connection() as conn:
            exists = conn.execute("SELECT to_regclass('public.lightrag_doc_status')").fetchone()[0]
            query = (
                "SELECT d.doc_id FROM rag_pipeline.documents d WHERE d.collection_id = %s "
                "AND d.deleted_at IS NULL "
                + ("AND NOT EXISTS (SELECT 1 FROM public.lightrag_doc_status s "
                   "WHERE s.workspace = d.collection_id AND s.id = d.doc_id "
                   "AND s.status = 'processed') " if exists else "")
                + "ORDER BY d.doc_id"
            )
            rows = conn.execute(query, (collection_id,)).fetchall()
        return [r[0] for r in rows]

    def running_jobs_of(self, run_ids: Sequence[str]) -> int:
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT count(*) FROM rag_pipeline.jobs WHERE state = 'running' "
                "AND run_id = ANY(%s)", (list(run_ids),),
            ).fetchone()[0]
