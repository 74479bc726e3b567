"""The ledger: the PostgreSQL schema `rag_pipeline` that carries every guarantee.

- `kafka_offsets`: the consumer's source of truth (next offset per topic partition).
- `jobs`: one row per job_id, from staging to its terminal state.
- `documents`: what is in LightRAG, per (collection_id, doc_id), with its content hash.
- `callbacks`: the outbox of status reports to the Go backend.

All access goes through `JobLedger`'s named methods. Values always travel as query
parameters; no SQL text is ever built from message content.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

SCHEMA = "rag_pipeline"
TERMINAL_STATES = ("completed", "failed", "dead")
STATES = ("queued", "running", *TERMINAL_STATES)

# Each migration runs once, in order, inside one transaction, recorded in schema_migrations.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE rag_pipeline.kafka_offsets (
            topic text NOT NULL,
            partition integer NOT NULL,
            next_offset bigint NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (topic, partition)
        );

        CREATE TABLE rag_pipeline.jobs (
            job_id bigint PRIMARY KEY,
            seq bigserial UNIQUE,
            request_id bigint,
            project_id bigint,
            user_id text,
            collection_id text NOT NULL,
            url text NOT NULL,
            normalized_url text,
            doc_id text,
            title text,
            details jsonb NOT NULL DEFAULT '{}',
            message bytea,
            message_sha256 bytea,
            message_bytes integer,
            kafka_topic text,
            kafka_partition integer,
            kafka_offset bigint,
            state text NOT NULL CHECK (state IN
                ('queued', 'running', 'completed', 'failed', 'dead')),
            attempts integer NOT NULL DEFAULT 0,
            error_code text,
            last_error text,
            run_id text,
            clean_text text,
            text_source text,
            content_hash text,
            outcome text,
            duplicate_of text,
            metrics jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            finished_at timestamptz,
            UNIQUE (kafka_topic, kafka_partition, kafka_offset)
        );
        CREATE INDEX jobs_collection_state ON rag_pipeline.jobs (collection_id, state, seq);
        CREATE INDEX jobs_run ON rag_pipeline.jobs (run_id) WHERE run_id IS NOT NULL;
        CREATE INDEX jobs_active ON rag_pipeline.jobs (state, updated_at)
            WHERE state IN ('queued', 'running');
        CREATE INDEX jobs_request ON rag_pipeline.jobs (request_id);

        CREATE TABLE rag_pipeline.documents (
            collection_id text NOT NULL,
            doc_id text NOT NULL,
            url text NOT NULL,
            file_path text NOT NULL,
            content_hash text NOT NULL,
            job_id bigint NOT NULL,
            indexed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (collection_id, doc_id)
        );
        CREATE INDEX documents_content ON rag_pipeline.documents (collection_id, content_hash);

        CREATE TABLE rag_pipeline.callbacks (
            id bigserial PRIMARY KEY,
            job_id bigint NOT NULL,
            request_id bigint,
            status text NOT NULL CHECK (status IN ('completed', 'failed')),
            error_msg text,
            idempotency_key text NOT NULL UNIQUE,
            state text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'delivered', 'rejected')),
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            last_error text,
            response_code integer,
            response_body text,
            result_event jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            delivered_at timestamptz
        );
        CREATE INDEX callbacks_due ON rag_pipeline.callbacks (next_attempt_at)
            WHERE state = 'pending';
        CREATE INDEX callbacks_job ON rag_pipeline.callbacks (job_id);
        """,
    ),
    (
        2,
        """
        -- Model request slots shared by every process (see model_slots.py).
        CREATE TABLE rag_pipeline.model_slots (
            kind text NOT NULL,
            slot integer NOT NULL,
            holder text,
            expires_at timestamptz,
            PRIMARY KEY (kind, slot)
        );
        CREATE FUNCTION rag_pipeline.release_model_slot(p_kind text, p_slot integer,
                                                        p_holder text)
        RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE rag_pipeline.model_slots SET holder = NULL, expires_at = NULL
            WHERE kind = p_kind AND slot = p_slot AND holder = p_holder;
            PERFORM pg_notify('rag_pipeline_model_slots', p_kind);
        END $$;
        """,
    ),
    (
        3,
        """
        -- Result events for topic indexing_job_results (PUBLISH_RESULTS), from the outbox.
        ALTER TABLE rag_pipeline.callbacks ADD COLUMN result_published boolean
            NOT NULL DEFAULT false;
        -- Indexing runs: a heartbeat while they work (reconciliation reads it) and the
        -- run-level outcome recorded by the run's hooks.
        CREATE TABLE rag_pipeline.runs (
            run_id text PRIMARY KEY,
            collection_id text NOT NULL,
            beat_at timestamptz NOT NULL DEFAULT now(),
            outcome text,
            finished_at timestamptz
        );
        -- Bumped by reconciliation for a collection whose queued jobs no run takes; part of
        -- the sensor's run_key, so that a new run is requested.
        CREATE TABLE rag_pipeline.collection_nudges (
            collection_id text PRIMARY KEY,
            nudge integer NOT NULL DEFAULT 0
        );
        """,
    ),
    (
        4,
        """
        -- A message is mostly base64 of gzip: PostgreSQL's pglz cannot shrink it and trying
        -- cost most of a staging tick. Stored out of line, uncompressed.
        ALTER TABLE rag_pipeline.jobs ALTER COLUMN message SET STORAGE EXTERNAL;
        """,
    ),
]


class LedgerUnavailable(Exception):
    """The ledger's database cannot be used; the message says what to check."""


class ConcurrentStaging(Exception):
    """Another consumer advanced the stored offsets while this tick was reading."""


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
    # Computed once: it is compared in memory, against the ledger, and stored.
    message_sha256: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "message_sha256", hashlib.sha256(self.message).digest())


@dataclass(frozen=True)
class FailedMessage:
    """A rejected message; recorded as a failed job when its job_id could be read."""

    job_id: int | None
    collection_id: str | None
    code: str
    error_msg: str
    topic: str
    partition: int
    offset: int
    message: bytes | None


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
class IndexedDocument:
    doc_id: str
    url: str
    file_path: str
    content_hash: str


@dataclass
class JobOutcome:
    """How a run leaves a job. state 'queued' means: retry in a later run (attempts+1)."""

    job_id: int
    request_id: int | None
    state: str
    outcome: str | None = None
    error_code: str | None = None
    error_msg: str | None = None
    duplicate_of: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    document: IndexedDocument | None = None
    collection_id: str | None = None

    def status_report(self) -> tuple[str, str | None] | None:
        """The (status, error_msg) the Go backend gets, for terminal states."""
        if self.state == "completed":
            return "completed", None
        if self.state in ("failed", "dead"):
            return "failed", self.error_msg or self.error_code or "failed"
        return None


@dataclass(frozen=True)
class OutboxRow:
    id: int
    job_id: int
    request_id: int | None
    status: str
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


PERMANENT_CONNECTION_ERRORS = ("password authentication failed", "does not exist",
                               "no pg_hba.conf entry", "role", "permission denied")


def is_permanent_connection_error(exc: BaseException) -> bool:
    """A connection error that waiting will not fix (credentials, names, permissions)."""
    message = str(exc).lower()
    return any(marker in message for marker in PERMANENT_CONNECTION_ERRORS)


def _callback_key(job_id: int, status: str) -> str:
    return f"job-{job_id}-{status}"


class JobLedger:
    """Named queries over the ledger, on a psycopg 3 connection pool."""

    def __init__(self, conninfo: str, password: str, *, max_size: int = 4,
                 application_name: str = "rag-pipeline") -> None:
        self.conninfo = conninfo
        self._password = password
        self.pool = ConnectionPool(
            conninfo,
            kwargs={"password": password, "application_name": application_name,
                    "connect_timeout": 10},
            min_size=1,
            max_size=max_size,
            open=False,
            name="rag-pipeline-ledger",
            # After a PostgreSQL restart every pooled connection is dead: check before lending
            # one, so the first query after a restart does not fail.
            check=ConnectionPool.check_connection,
        )

    def open(self, wait_timeout: float = 30.0) -> JobLedger:
        # One direct connection first: a wrong password or database fails at once, with a
        # message, instead of after the pool's retries.
        try:
            psycopg.connect(self.conninfo, password=self._password, connect_timeout=10).close()
        except psycopg.OperationalError as exc:
            if is_permanent_connection_error(exc):
                raise LedgerUnavailable(
                    f"PostgreSQL refused the ledger connection ({self.conninfo}): "
                    f"{str(exc).strip().splitlines()[-1]}. Check POSTGRES_USER, "
                    "POSTGRES_PASSWORD and POSTGRES_DB.") from None
        self.pool.open(wait=True, timeout=wait_timeout)
        return self

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> JobLedger:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        with self.pool.connection() as conn, conn.transaction():
            yield conn

    # --- schema ------------------------------------------------------------------------------
    def migrate(self) -> int:
        """Create or upgrade the schema; safe to call from many processes at once."""
        with self.transaction() as conn:
            # Serialises concurrent migrators (sensor ticks, run workers) on one key.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('rag_pipeline:migrate'))")
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations "
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute(f"SELECT version FROM {SCHEMA}.schema_migrations")}
            for version, ddl in MIGRATIONS:
                if version not in done:
                    conn.execute(ddl)
                    conn.execute(f"INSERT INTO {SCHEMA}.schema_migrations (version) VALUES (%s)",
                                 (version,))
        return MIGRATIONS[-1][0]

    def schema_version(self) -> int:
        with self.pool.connection() as conn:
            row = conn.execute(f"SELECT max(version) FROM {SCHEMA}.schema_migrations").fetchone()
        return row[0] or 0

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
    ) -> StageResult:
        """Write staged jobs, failed jobs and new offsets in ONE transaction.

        `expected` holds the offsets this tick started from; if another consumer moved them
        meanwhile, nothing is written (ConcurrentStaging) and the next tick starts afresh.
        """
        result = StageResult()
        with self.transaction() as conn:
            self._advance_offsets(conn, topic, offsets, expected)
            if jobs:
                result.inserted = self._insert_jobs(conn, jobs)
                result.duplicates = len(jobs) - len(result.inserted)
            for item in failed:
                if item.job_id is not None and self._insert_failed(conn, item):
                    result.failed_recorded += 1
        return result

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
                   "message_bytes", "kafka_topic", "kafka_partition", "kafka_offset")
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
                            "text"])
            for j in jobs:
                copy.write_row((
                    j.job_id, j.request_id, j.project_id, j.user_id, j.collection_id, j.url,
                    j.normalized_url, j.doc_id, j.title, Jsonb(j.details), j.message,
                    j.message_sha256, len(j.message), j.topic, j.partition, j.offset, "queued",
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
            "kafka_topic, kafka_partition, kafka_offset, state, error_code, last_error, "
            "finished_at) VALUES (%s, %s, '', %s, %s, %s, %s, %s, 'failed', %s, %s, now()) "
            "ON CONFLICT DO NOTHING RETURNING job_id",
            (item.job_id, item.collection_id or "", item.message,
             len(item.message or b""), item.topic, item.partition, item.offset, item.code,
             item.error_msg),
        ).fetchone()
        if row is None:
            return False
        self._enqueue_callback(conn, item.job_id, None, "failed", item.error_msg)
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

    # --- runs --------------------------------------------------------------------------------
    def claim_jobs(self, collection_id: str, run_id: str, run_family: Sequence[str],
                   limit: int, scope: str = "pending") -> list[RunJob]:
        """Take this run's jobs: those its family already owns, then queued ones up to `limit`.

        scope="everything" first requeues the latest job of every url of the collection
        that no live run owns, so the collection is processed again from the ledger.
        """
        with self.transaction() as conn:
            self._adopt(conn, collection_id, run_id, run_family)
            if scope == "everything":
                conn.execute(
                    "UPDATE rag_pipeline.jobs j SET state = 'queued', run_id = NULL, "
                    "updated_at = now() FROM (SELECT DISTINCT ON (normalized_url) job_id "
                    "  FROM rag_pipeline.jobs WHERE collection_id = %s "
                    "  AND normalized_url IS NOT NULL ORDER BY normalized_url, seq DESC) latest "
                    "WHERE j.job_id = latest.job_id AND j.state IN ('completed', 'failed', 'dead')",
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
                "coalesce(octet_length(clean_text), 0) FROM rag_pipeline.jobs "
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

    def kafka_coordinates(self, job_ids: Sequence[int]) -> dict[int, tuple[int, int, int]]:
        """(partition, offset, attempts) of each job's message."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT job_id, kafka_partition, kafka_offset, attempts FROM rag_pipeline.jobs "
                "WHERE job_id = ANY(%s)", (list(job_ids),),
            ).fetchall()
        return {r[0]: (r[1] if r[1] is not None else -1, r[2] if r[2] is not None else -1, r[3])
                for r in rows}

    def store_page_texts(self, rows: Sequence[tuple[int, str, str, str, str, dict[str, Any]]]
                         ) -> None:
        """(job_id, title, clean_text, text_source, content_hash, metrics) per cleaned page."""
        if not rows:
            return
        with self.transaction() as conn, conn.cursor() as cur:
            cur.executemany(
                "UPDATE rag_pipeline.jobs SET title = %s, clean_text = %s, text_source = %s, "
                "content_hash = %s, metrics = coalesce(metrics, '{}'::jsonb) || %s::jsonb, "
                "updated_at = now() WHERE job_id = %s",
                [(title, text, source, digest, json.dumps(metrics), job_id)
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
                "SELECT doc_id, url, file_path, content_hash FROM rag_pipeline.documents "
                "WHERE collection_id = %s AND doc_id = ANY(%s)",
                (collection_id, list(doc_ids)),
            ).fetchall()
        return {r[0]: IndexedDocument(*r) for r in rows}

    def documents_with_content(self, collection_id: str, hashes: Sequence[str]
                               ) -> dict[str, IndexedDocument]:
        """Indexed documents of the collection by content hash (for duplicate content)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT ON (content_hash) doc_id, url, file_path, content_hash "
                "FROM rag_pipeline.documents WHERE collection_id = %s "
                "AND content_hash = ANY(%s) ORDER BY content_hash, indexed_at",
                (collection_id, list(hashes)),
            ).fetchall()
        return {r[3]: IndexedDocument(*r) for r in rows}

    def document_urls(self, collection_id: str, doc_ids: Sequence[str]) -> dict[str, str]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT doc_id, url FROM rag_pipeline.documents "
                "WHERE collection_id = %s AND doc_id = ANY(%s)",
                (collection_id, list(doc_ids)),
            ).fetchall()
        return dict(rows)

    def finish_jobs(self, collection_id: str, outcomes: Sequence[JobOutcome],
                    max_retries: int) -> list[JobOutcome]:
        """Record outcomes in ONE transaction: job rows, indexed documents, outbox rows.

        A job to retry (state 'queued') whose attempts are used up becomes 'dead' instead.
        Returns the outcomes as recorded.
        """
        recorded = []
        with self.transaction() as conn:
            for o in outcomes:
                if o.state == "queued":
                    attempts = conn.execute(
                        "SELECT attempts FROM rag_pipeline.jobs WHERE job_id = %s",
                        (o.job_id,),
                    ).fetchone()[0]
                    if attempts + 1 > max_retries:
                        o.state = "dead"
                        o.error_msg = (f"dead after {attempts + 1} attempts: "
                                       f"{o.error_msg or o.error_code}")
                if o.state == "queued":
                    conn.execute(
                        "UPDATE rag_pipeline.jobs SET state = 'queued', run_id = NULL, "
                        "attempts = attempts + 1, error_code = %s, last_error = %s, "
                        "updated_at = now() WHERE job_id = %s",
                        (o.error_code, o.error_msg, o.job_id),
                    )
                else:
                    conn.execute(
                        "UPDATE rag_pipeline.jobs SET state = %s, outcome = %s, error_code = %s, "
                        "last_error = %s, duplicate_of = %s, "
                        "metrics = coalesce(metrics, '{}'::jsonb) || %s::jsonb, "
                        "attempts = attempts + CASE WHEN %s = 'dead' THEN 1 ELSE 0 END, "
                        "finished_at = now(), updated_at = now() WHERE job_id = %s",
                        (o.state, o.outcome, o.error_code, o.error_msg, o.duplicate_of,
                         json.dumps(o.metrics), o.state, o.job_id),
                    )
                if o.document is not None:
                    d = o.document
                    conn.execute(
                        "INSERT INTO rag_pipeline.documents (collection_id, doc_id, url, "
                        "file_path, content_hash, job_id) VALUES (%s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (collection_id, doc_id) DO UPDATE SET url = EXCLUDED.url, "
                        "file_path = EXCLUDED.file_path, content_hash = EXCLUDED.content_hash, "
                        "job_id = EXCLUDED.job_id, indexed_at = now()",
                        (collection_id, d.doc_id, d.url, d.file_path, d.content_hash, o.job_id),
                    )
                report = o.status_report()
                if report is not None:
                    metrics = conn.execute("SELECT metrics FROM rag_pipeline.jobs WHERE job_id "
                                           "= %s", (o.job_id,)).fetchone()[0]
                    self._enqueue_callback(conn, o.job_id, o.request_id, report[0], report[1],
                                           metrics)
                recorded.append(o)
        return recorded

    def forget_document(self, collection_id: str, doc_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM rag_pipeline.documents WHERE collection_id = %s "
                         "AND doc_id = %s", (collection_id, doc_id))

    def documents_missing_from_lightrag(self, collection_id: str) -> list[str]:
        """Indexed documents (per the ledger) that LightRAG does not hold as processed."""
        with self.pool.connection() as conn:
            exists = conn.execute("SELECT to_regclass('public.lightrag_doc_status')").fetchone()[0]
            query = (
                "SELECT d.doc_id FROM rag_pipeline.documents d WHERE d.collection_id = %s "
                + ("AND NOT EXISTS (SELECT 1 FROM public.lightrag_doc_status s "
                   "WHERE s.workspace = d.collection_id AND s.id = d.doc_id "
                   "AND s.status = 'processed') " if exists else "")
                + "ORDER BY d.doc_id"
            )
            rows = conn.execute(query, (collection_id,)).fetchall()
        return [r[0] for r in rows]

    def requeue_jobs_of_runs(self, run_ids: Sequence[str], error_code: str, reason: str,
                             max_retries: int) -> list[JobOutcome]:
        """Jobs left running by runs that died: queued again (attempts+1), or dead."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT job_id, request_id, collection_id FROM rag_pipeline.jobs "
                "WHERE state = 'running' AND run_id = ANY(%s) ORDER BY seq", (list(run_ids),),
            ).fetchall()
        by_collection: dict[str, list[JobOutcome]] = {}
        for job_id, request_id, collection_id in rows:
            by_collection.setdefault(collection_id, []).append(JobOutcome(
                job_id=job_id, request_id=request_id, state="queued", error_code=error_code,
                error_msg=f"{error_code}: {reason}", collection_id=collection_id))
        recorded: list[JobOutcome] = []
        for collection_id, outcomes in by_collection.items():
            recorded += self.finish_jobs(collection_id, outcomes, max_retries=max_retries)
        return recorded

    def running_jobs_of(self, run_ids: Sequence[str]) -> int:
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT count(*) FROM rag_pipeline.jobs WHERE state = 'running' "
                "AND run_id = ANY(%s)", (list(run_ids),),
            ).fetchone()[0]

    # --- outbox ------------------------------------------------------------------------------
    def _enqueue_callback(self, conn: psycopg.Connection, job_id: int, request_id: int | None,
                          status: str, error_msg: str | None,
                          result_event: dict[str, Any] | None = None) -> None:
        conn.execute(
            "INSERT INTO rag_pipeline.callbacks (job_id, request_id, status, error_msg, "
            "idempotency_key, result_event) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (idempotency_key) DO NOTHING",
            (job_id, request_id, status, error_msg, _callback_key(job_id, status),
             json.dumps(result_event) if result_event else None),
        )

    def lease_callbacks(self, limit: int, lease_seconds: float,
                        job_ids: Sequence[int] | None = None) -> list[OutboxRow]:
        """Due pending rows (or those of `job_ids`), leased so no other deliverer sends them."""
        with self.transaction() as conn:
            rows = conn.execute(
                "UPDATE rag_pipeline.callbacks c SET next_attempt_at = now() + "
                "make_interval(secs => %(lease)s) FROM (SELECT id FROM rag_pipeline.callbacks "
                "WHERE state = 'pending' AND next_attempt_at <= now() "
                "AND (%(jobs)s::bigint[] IS NULL OR job_id = ANY(%(jobs)s)) ORDER BY id "
                "LIMIT %(limit)s FOR UPDATE SKIP LOCKED) due WHERE c.id = due.id "
                "RETURNING c.id, c.job_id, c.request_id, c.status, c.error_msg, "
                "c.idempotency_key, c.attempts",
                {"lease": lease_seconds, "limit": limit,
                 "jobs": list(job_ids) if job_ids is not None else None},
            ).fetchall()
        return sorted((OutboxRow(*r) for r in rows), key=lambda r: r.id)

    def release_callbacks(self, ids: Sequence[int]) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE rag_pipeline.callbacks SET next_attempt_at = now() "
                         "WHERE id = ANY(%s) AND state = 'pending'", (list(ids),))

    def mark_callback_delivered(self, callback_id: int, status_code: int) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE rag_pipeline.callbacks SET state = 'delivered', attempts = attempts + 1, "
                "response_code = %s, delivered_at = now(), last_error = NULL WHERE id = %s",
                (status_code, callback_id))

    def mark_callback_rejected(self, callback_id: int, status_code: int, body: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE rag_pipeline.callbacks SET state = 'rejected', attempts = attempts + 1, "
                "response_code = %s, response_body = %s, last_error = %s WHERE id = %s",
                (status_code, body, f"HTTP {status_code}", callback_id))

    def mark_callback_retry(self, callback_id: int, error: str, status_code: int | None,
                            delay_seconds: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE rag_pipeline.callbacks SET attempts = attempts + 1, last_error = %s, "
                "response_code = %s, next_attempt_at = now() + make_interval(secs => %s) "
                "WHERE id = %s", (error[:1000], status_code, delay_seconds, callback_id))

    def unpublished_results(self, limit: int) -> list[OutboxRow]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, job_id, request_id, status, error_msg, idempotency_key, attempts, "
                "result_event, created_at FROM rag_pipeline.callbacks "
                "WHERE NOT result_published ORDER BY id LIMIT %s", (limit,),
            ).fetchall()
        return [OutboxRow(*r) for r in rows]

    def mark_results_published(self, ids: Sequence[int]) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE rag_pipeline.callbacks SET result_published = true "
                         "WHERE id = ANY(%s)", (list(ids),))

    def rejected_callbacks(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT job_id, status, response_code, response_body, attempts "
                "FROM rag_pipeline.callbacks WHERE state = 'rejected' ORDER BY id DESC "
                "LIMIT %s", (limit,),
            ).fetchall()

    def outbox_counts(self) -> dict[str, int]:
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT state, count(*) FROM rag_pipeline.callbacks "
                                "GROUP BY state").fetchall()
        return dict(rows)

    # --- liveness and reconciliation ---------------------------------------------------------
    def heartbeat(self, run_id: str, collection_id: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO rag_pipeline.runs (run_id, collection_id) VALUES (%s, %s) "
                "ON CONFLICT (run_id) DO UPDATE SET beat_at = now()", (run_id, collection_id))

    def finish_run(self, run_id: str, collection_id: str, outcome: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO rag_pipeline.runs (run_id, collection_id, outcome, finished_at) "
                "VALUES (%s, %s, %s, now()) ON CONFLICT (run_id) DO UPDATE SET "
                "outcome = EXCLUDED.outcome, finished_at = now()",
                (run_id, collection_id, outcome))

    def recent_failed_runs(self, collection_id: str, window_seconds: float) -> int:
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT count(*) FROM rag_pipeline.runs WHERE collection_id = %s "
                "AND outcome LIKE 'failure%%' "
                "AND finished_at > now() - make_interval(secs => %s)",
                (collection_id, window_seconds),
            ).fetchone()[0]

    def run_outcome(self, run_id: str) -> str | None:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT outcome FROM rag_pipeline.runs WHERE run_id = %s",
                               (run_id,)).fetchone()
        return row[0] if row else None

    def running_runs(self) -> list[tuple[str, str, Any]]:
        """(run_id, collection_id, last sign of life) of every run that owns running jobs."""
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT j.run_id, min(j.collection_id), "
                "greatest(max(r.beat_at), max(j.updated_at)) "
                "FROM rag_pipeline.jobs j LEFT JOIN rag_pipeline.runs r USING (run_id) "
                "WHERE j.state = 'running' GROUP BY j.run_id"
            ).fetchall()

    def stale_queued_collections(self, older_than_seconds: float) -> list[str]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT collection_id FROM rag_pipeline.jobs WHERE state = 'queued' "
                "AND updated_at < now() - make_interval(secs => %s) ORDER BY 1",
                (older_than_seconds,),
            ).fetchall()
        return [r[0] for r in rows]

    def nudge(self, collection_id: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO rag_pipeline.collection_nudges (collection_id, nudge) VALUES (%s, 1) "
                "ON CONFLICT (collection_id) DO UPDATE SET nudge = "
                "rag_pipeline.collection_nudges.nudge + 1", (collection_id,))
            conn.execute("UPDATE rag_pipeline.jobs SET updated_at = now() "
                         "WHERE collection_id = %s AND state = 'queued'", (collection_id,))

    def request_summaries(self, only_open: bool = False, limit: int = 200
                          ) -> list[RequestSummary]:
        """Per crawl request: total, completed, failed, dead, pending (queued + running)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT request_id, count(*), "
                "count(*) FILTER (WHERE state = 'completed'), "
                "count(*) FILTER (WHERE state = 'failed'), "
                "count(*) FILTER (WHERE state = 'dead'), "
                "count(*) FILTER (WHERE state IN ('queued', 'running')), "
                "min(created_at) FILTER (WHERE state IN ('queued', 'running')) "
                "FROM rag_pipeline.jobs GROUP BY request_id "
                "HAVING NOT %s OR count(*) FILTER (WHERE state IN ('queued', 'running')) > 0 "
                "ORDER BY min(created_at) FILTER (WHERE state IN ('queued', 'running')) "
                "NULLS LAST, request_id LIMIT %s", (only_open, limit),
            ).fetchall()
        return [RequestSummary(*r) for r in rows]

    # --- inspection --------------------------------------------------------------------------
    def job_states(self, collection_id: str | None = None) -> dict[str, int]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT state, count(*) FROM rag_pipeline.jobs "
                "WHERE %(c)s::text IS NULL OR collection_id = %(c)s GROUP BY state",
                {"c": collection_id},
            ).fetchall()
        return {state: count for state, count in rows}

    def job(self, job_id: int) -> dict[str, Any] | None:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT job_id, seq, request_id, collection_id, url, doc_id, title, state, "
                "attempts, error_code, last_error, run_id, outcome, duplicate_of, content_hash, "
                "metrics, kafka_topic, kafka_partition, kafka_offset, created_at, updated_at, "
                "finished_at FROM rag_pipeline.jobs WHERE job_id = %s",
                (job_id,),
            ).fetchone()

    def jobs(self, job_ids: Iterable[int]) -> list[dict[str, Any]]:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT job_id, collection_id, url, state, attempts, error_code, last_error, "
                "run_id, outcome, duplicate_of FROM rag_pipeline.jobs "
                "WHERE job_id = ANY(%s) ORDER BY job_id",
                (list(job_ids),),
            ).fetchall()

    def callbacks(self, job_id: int | None = None) -> list[dict[str, Any]]:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT id, job_id, status, error_msg, state, attempts, idempotency_key, "
                "response_code, next_attempt_at FROM rag_pipeline.callbacks "
                "WHERE %(j)s::bigint IS NULL OR job_id = %(j)s ORDER BY id",
                {"j": job_id},
            ).fetchall()


# --- one ledger per process ----------------------------------------------------------------
_shared: dict[tuple[str, str, int], JobLedger] = {}
_shared_lock = threading.Lock()


def shared_ledger(conninfo: str, password: str, max_size: int = 4) -> JobLedger:
    """The process's open, migrated ledger for these connection settings.

    The code server evaluates a sensor tick every few seconds and a run's steps share a
    process: opening a pool (TLS-less SCRAM handshakes, a migration check) for each would
    cost more CPU than the tick's own work. Closed at exit.
    """
    key = (conninfo, password, max_size)
    with _shared_lock:
        ledger = _shared.get(key)
        if ledger is None:
            ledger = JobLedger(conninfo, password, max_size=max_size).open()
            ledger.migrate()
            _shared[key] = ledger
        return ledger


@atexit.register
def close_shared_ledgers() -> None:
    with _shared_lock:
        while _shared:
            _shared.popitem()[1].close()
