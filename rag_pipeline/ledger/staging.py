"""Intake: Kafka offsets and staged jobs, written by the sensor's staging tick.

Staged jobs and the new offsets are written in ONE transaction (docs/design.md, section 3),
with an optimistic check that no other consumer moved the offsets meanwhile.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import psycopg
from psycopg.types.json import Jsonb

from rag_pipeline.ledger.collections import record_collections_in
from rag_pipeline.ledger.connection import LedgerConnection
from rag_pipeline.ledger.counters import (
    Increments,
    add_counters,
    count_dead_letter,
    count_finished,
    labels,
)
from rag_pipeline.ledger.outbox import enqueue_outbox_row
from rag_pipeline.ledger.outcomes import finish_jobs_in
from rag_pipeline.ledger.records import (
    FailedMessage,
    JobOutcome,
    JobState,
    PendingCollection,
    Reason,
    ReportedStatus,
    StagedCompletion,
    StagedJob,
    StageResult,
)

# Asking for a drop takes it exclusively, a staging transaction shared (`_fail_dropped`).
DROPS_LOCK = "rag_pipeline:drops"


class ConcurrentStaging(Exception):
    """Another consumer advanced the stored offsets while this tick was reading."""


class StagingQueries(LedgerConnection):
    """Offsets, staging, and the collections that wait for a run."""

    # --- offsets -----------------------------------------------------------------------------
    def stored_offsets(self, topic: str) -> dict[int, int]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT partition, next_offset FROM rag_pipeline.kafka_offsets WHERE topic = %s",
                (topic,),
            ).fetchall()
        return {partition: offset for partition, offset in rows}

    # --- staging -----------------------------------------------------------------------------
    def stage(
        self,
        topic: str,
        jobs: Sequence[StagedJob],
        failed: Sequence[FailedMessage],
        offsets: dict[int, int],
        expected: dict[int, int | None],
        conflicts: int = 0,
        completions: Sequence[StagedCompletion] = (),
    ) -> StageResult:
        """Write staged jobs, failed jobs, crawl completions, the collections they belong to
        and new offsets in ONE transaction.

        `expected` holds the offsets this tick started from; if another consumer moved them
        meanwhile, nothing is written (ConcurrentStaging) and the next tick starts afresh.
        Every rejected message and each of the `conflicts` is counted as a dead letter.
        """
        result = StageResult()
        with self.transaction() as conn:
            self._advance_offsets(conn, topic, offsets, expected)
            if jobs:
                result.inserted = self._insert_jobs(conn, jobs)
                result.duplicates = len(jobs) - len(result.inserted)
                self._fail_dropped(conn, jobs, set(result.inserted))
            record_collections_in(conn, jobs, completions)
            counted: Increments = Counter()
            counted[("jobs_staged", "")] += len(result.inserted)
            for item in failed:
                # A job of its own when its job_id could be read (a failed job: counted with
                # its dead letter), a dead letter only otherwise.
                if item.job_id is not None and self._insert_failed(conn, item):
                    result.failed_recorded += 1
                    count_finished(counted, "failed", None, item.reason)
                else:
                    count_dead_letter(counted, item.reason, "failed")
            counted[("dead_letters", labels(reason="conflicting_job_id"))] += conflicts
            add_counters(conn, counted)
        return result

    def _fail_dropped(self, conn: psycopg.Connection, jobs: Sequence[StagedJob],
                      inserted: set[int]) -> None:
        """Jobs of a collection whose drop was asked after this tick looked (staging_rules
        fails the others before they come here): failed at once, with their status. Under
        the drops' lock, shared: a drop asked meanwhile waits for this transaction and then
        fails them itself, or this one waits for the drop and sees it (a row lock would
        also wait for a renewal's copy, which holds its collection's row)."""
        conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext(%s))", (DROPS_LOCK,))
        dropped = {r[0] for r in conn.execute(
            "SELECT collection_id FROM rag_pipeline.collections WHERE collection_id = ANY(%s) "
            "AND drop_requested_at IS NOT NULL",
            (sorted({j.collection_id for j in jobs}),)).fetchall()}
        late = [j for j in jobs if j.collection_id in dropped and j.job_id in inserted]
        for collection_id in sorted({j.collection_id for j in late}):
            finish_jobs_in(conn, collection_id, [JobOutcome(
                job_id=j.job_id, request_id=j.request_id, state=JobState.FAILED,
                reason=Reason.COLLECTION_DROPPED, error_msg=(
                    f"{Reason.COLLECTION_DROPPED}: collection {collection_id} was dropped"),
                collection_id=collection_id) for j in late if j.collection_id == collection_id],
                max_retries=1)

    def _advance_offsets(self, conn: psycopg.Connection, topic: str, offsets: dict[int, int],
                         expected: dict[int, int | None]) -> None:
        for partition, next_offset in sorted(offsets.items()):
            before = expected.get(partition)
            if before is None:
                cur = conn.execute(
                    "INSERT INTO rag_pipeline.kafka_offsets (topic, partition, next_offset) "
                    "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (topic, partition, next_offset),
                )
            else:
                cur = conn.execute(
                    "UPDATE rag_pipeline.kafka_offsets SET next_offset = %s, updated_at = now() "
                    "WHERE topic = %s AND partition = %s AND next_offset = %s",
                    (next_offset, topic, partition, before),
                )
            if cur.rowcount != 1:
                raise ConcurrentStaging(
                    f"offsets of {topic}[{partition}] moved while this tick was reading"
                )

    def _insert_jobs(self, conn: psycopg.Connection, jobs: Sequence[StagedJob]) -> list[int]:
        columns = ("job_id", "request_id", "project_id", "user_id", "collection_id", "url",
                   "normalized_url", "doc_id", "title", "details", "message", "message_sha256",
                   "message_bytes", "kafka_topic", "kafka_partition", "kafka_offset",
                   "produced_at", "kind", "kafka_key", "kafka_headers")
        conn.execute(
            "CREATE TEMP TABLE incoming_jobs (LIKE rag_pipeline.jobs INCLUDING DEFAULTS "
            "INCLUDING STORAGE) "
            "ON COMMIT DROP"
        )
        # Binary COPY: a message's bytes go to the server as they are (text COPY would
        # escape every byte of it, the larger part of a staging tick's time).
        with conn.cursor() as cur, cur.copy(
            f"COPY incoming_jobs ({', '.join(columns)}, state) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "int8", "int8", "text", "text", "text", "text", "text",
                            "text", "jsonb", "bytea", "bytea", "int4", "text", "int4", "int8",
                            "timestamptz", "text", "bytea", "jsonb", "text"])
            for j in jobs:
                copy.write_row((
                    j.job_id, j.request_id, j.project_id, j.user_id, j.collection_id, j.url,
                    j.normalized_url, j.doc_id, j.title, Jsonb(j.details), j.message,
                    j.message_sha256, len(j.message), j.topic, j.partition, j.offset,
                    j.produced_at, j.kind, j.envelope.key, Jsonb(j.envelope.to_json()),
                    "queued",
                ))
        # ON CONFLICT DO NOTHING on both job_id and the Kafka coordinates: a redelivered
        # message or a job_id already in the ledger changes nothing.
        rows = conn.execute(
            f"INSERT INTO rag_pipeline.jobs ({', '.join(columns)}, state) "
            f"SELECT {', '.join(columns)}, state FROM incoming_jobs "
            "ORDER BY kafka_partition, kafka_offset ON CONFLICT DO NOTHING RETURNING job_id"
        ).fetchall()
        return [r[0] for r in rows]

    def _insert_failed(self, conn: psycopg.Connection, item: FailedMessage) -> bool:
        row = conn.execute(
            "INSERT INTO rag_pipeline.jobs (job_id, collection_id, url, message, message_bytes, "
            "kafka_topic, kafka_partition, kafka_offset, kafka_key, kafka_headers, state, reason, "
            "error_msg, finished_at) VALUES (%s, %s, '', %s, %s, %s, %s, %s, %s, %s, 'failed', "
            "%s, %s, now()) ON CONFLICT DO NOTHING RETURNING job_id",
            (item.job_id, item.collection_id or "", item.message,
             len(item.message or b""), item.topic, item.partition, item.offset,
             item.envelope.key, Jsonb(item.envelope.to_json()), item.reason, item.error_msg),
        ).fetchone()
        if row is None:
            return False
        enqueue_outbox_row(conn, item.job_id, None, ReportedStatus.FAILED, item.error_msg)
        return True

    def conflicting_job_ids(self, jobs: Sequence[StagedJob]) -> set[int]:
        """job_ids already in the ledger for a different message (not a redelivery)."""
        if not jobs:
            return set()
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT j.job_id FROM rag_pipeline.jobs j "
                "JOIN unnest(%s::bigint[], %s::bytea[], %s::text[], %s::int[], %s::bigint[]) "
                "AS i(job_id, sha, topic, partition, kafka_offset) ON j.job_id = i.job_id "
                "WHERE j.message_sha256 IS DISTINCT FROM i.sha "
                "AND (j.kafka_topic, j.kafka_partition, j.kafka_offset) "
                "IS DISTINCT FROM (i.topic, i.partition, i.kafka_offset)",
                ([j.job_id for j in jobs], [j.message_sha256 for j in jobs],
                 [j.topic for j in jobs], [j.partition for j in jobs], [j.offset for j in jobs]),
            ).fetchall()
        return {r[0] for r in rows}

    # --- run planning ------------------------------------------------------------------------
    def pending_collections(self) -> list[PendingCollection]:
        """Collections with queued jobs that no run has claimed."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT j.collection_id, min(j.seq), max(j.seq), count(*), sum(j.attempts), "
                "coalesce(max(n.nudge), 0) FROM rag_pipeline.jobs j "
                "LEFT JOIN rag_pipeline.collection_nudges n USING (collection_id) "
                "WHERE j.state = 'queued' GROUP BY j.collection_id ORDER BY min(j.seq)"
            ).fetchall()
        return [PendingCollection(r[0], r[1], r[2], r[3], int(r[4]), r[5]) for r in rows]

