"""Dropping a collection, as the ledger sees it (the steps are `rag_pipeline/removal.py`):
asked once (`request_drop`: from then on the collection takes no message, its queued jobs
fail with `collection_dropped`), its LightRAG rows deleted and counted a batch at a time
(`delete_batch`), and done (`finish_drop`: its documents and payloads gone, its alias
answering nothing). Every step can be repeated: a drop killed midway is finished by
running it again."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from rag_pipeline.ledger.connection import LedgerConnection
from rag_pipeline.ledger.counters import add_counters, labels
from rag_pipeline.ledger.outcomes import finish_jobs_in
from rag_pipeline.ledger.records import JobOutcome
from rag_pipeline.ledger.staging import DROPS_LOCK
from rag_pipeline.vocabulary import AliasChange, DropCause, JobState, Reason


@dataclass(frozen=True)
class Drop:
    """A collection's drop as far as it went."""

    collection_id: str
    alias: str | None
    cause: DropCause
    requested_at: datetime
    dropped_at: datetime | None = None
    # Rows removed per LightRAG table, over every attempt.
    rows: dict[str, int] = field(default_factory=dict)
    jobs_failed: int = 0  # queued jobs ended as collection_dropped by this request
    documents: int = 0  # ledger documents rows removed when it finished
    alias_dropped: bool = False  # its alias answered from it, and now answers nothing


class RemovalQueries(LedgerConnection):
    """A collection's drop and its retirement."""

    def writer_lock(self, collection_id: str, wait_seconds: float,
                    waiting: Callable[[], None] = lambda: None
                    ) -> AbstractContextManager[Callable[[], None]]:
        """The collection's writer lock, on a connection of its own (indexing.locks)."""
        from rag_pipeline.indexing.locks import collection_lock  # indexing imports the ledger

        return collection_lock(self.conninfo, self._password, collection_id, wait_seconds,
                               waiting)

    def dropped_collections(self, collection_ids: Iterable[str]) -> set[str]:
        """Those of `collection_ids` whose drop was asked: they take no message."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT collection_id FROM rag_pipeline.collections WHERE collection_id = "
                "ANY(%s) AND drop_requested_at IS NOT NULL", (list(set(collection_ids)),))
            return {r[0] for r in rows.fetchall()}

    def collection_of(self, *, collection_id: str | None = None, alias: str | None = None
                      ) -> str:
        """The collection a drop names: an id the ledger knows, or the one an alias answers
        from (LookupError says what is known instead)."""
        with self.pool.connection() as conn:
            if alias is not None:
                row = conn.execute("SELECT collection_id FROM rag_pipeline.aliases "
                                   "WHERE alias = %s AND dropped_at IS NULL", (alias,)).fetchone()
                if row is None:
                    raise LookupError(f"alias {alias!r} answers from no collection (never "
                                      "released, or dropped); `rag-pipeline inspect` lists "
                                      "aliases and collections")
                return row[0]
            known = conn.execute("SELECT 1 FROM rag_pipeline.collections WHERE collection_id = "
                                 "%s", (collection_id,)).fetchone()
        if known is None:
            raise LookupError(f"collection {collection_id!r} is not in the ledger; "
                              "`rag-pipeline inspect` lists the collections")
        return collection_id

    def request_drop(self, collection_id: str, cause: DropCause, max_retries: int) -> Drop:
        """In one transaction: the drop asked (once; a repeated ask keeps the first cause),
        the collection's queued jobs failed with `collection_dropped` (each reported to the
        Go API). Running jobs are left to their run, which the drop waits for."""
        with self.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (DROPS_LOCK,))
            conn.execute(
                "UPDATE rag_pipeline.collections SET drop_requested_at = coalesce("
                "drop_requested_at, now()), drop_cause = coalesce(drop_cause, %s) "
                "WHERE collection_id = %s", (cause, collection_id))
            queued = conn.execute(
                "SELECT job_id, request_id FROM rag_pipeline.jobs WHERE collection_id = %s "
                "AND state = 'queued' ORDER BY seq FOR UPDATE", (collection_id,)).fetchall()
            detail = (f"{Reason.COLLECTION_DROPPED}: collection {collection_id} was dropped "
                      "before this page was indexed")
            failed = finish_jobs_in(conn, collection_id, [JobOutcome(
                job_id=j, request_id=r, state=JobState.FAILED, reason=Reason.COLLECTION_DROPPED,
                error_msg=detail, collection_id=collection_id) for j, r in queued], max_retries)
        drop = self.drop_of(collection_id)
        return Drop(**{**drop.__dict__, "jobs_failed": len(failed)})

    def drop_of(self, collection_id: str) -> Drop:
        with self.pool.connection() as conn:
            row = conn.execute(f"SELECT {DROP_COLUMNS} FROM rag_pipeline.collections "
                               "WHERE collection_id = %s AND drop_requested_at IS NOT NULL",
                               (collection_id,)).fetchone()
        if row is None:
            raise LookupError(f"no drop of collection {collection_id!r} was asked")
        return _drop(row)

    def delete_batch(self, collection_id: str, table: str,
                     delete: Callable[[psycopg.Connection], int]) -> int:
        """One batch of a drop: `delete(conn)` removes rows of one LightRAG table, and they
        are added to the drop's record in the same transaction (a drop killed anywhere
        leaves an exact count)."""
        with self.transaction() as conn:
            rows = delete(conn)
            if rows:
                conn.execute(
                    "UPDATE rag_pipeline.collections SET dropped_rows = coalesce(dropped_rows, "
                    "'{}'::jsonb) || jsonb_build_object(%s::text, coalesce((dropped_rows ->> "
                    "%s::text)::bigint, 0) + %s) WHERE collection_id = %s",
                    (table, table, rows, collection_id))
        return rows

    def finish_drop(self, collection_id: str) -> Drop:
        """In one transaction: the collection's documents forgotten, its jobs' payloads
        (message, key, headers and text) removed, the drop done; its alias, if it answered
        from it, answers nothing from now on. The jobs stay: what was reported stays on record."""
        with self.transaction() as conn:
            alias, cause, dropped_at = conn.execute(
                "SELECT alias, drop_cause, dropped_at FROM rag_pipeline.collections "
                "WHERE collection_id = %s FOR UPDATE", (collection_id,)).fetchone()
            documents = conn.execute("DELETE FROM rag_pipeline.documents WHERE collection_id "
                                     "= %s", (collection_id,)).rowcount
            conn.execute("UPDATE rag_pipeline.jobs SET message = NULL, clean_text = NULL, "
                         "kafka_key = NULL, kafka_headers = NULL WHERE collection_id = %s "
                         "AND (message IS NOT NULL OR clean_text IS NOT NULL "
                         "OR kafka_key IS NOT NULL OR kafka_headers IS NOT NULL)",
                         (collection_id,))
            alias_dropped = alias is not None and conn.execute(
                "UPDATE rag_pipeline.aliases SET dropped_at = now(), changed_at = now() "
                "WHERE alias = %s AND collection_id = %s AND dropped_at IS NULL",
                (alias, collection_id)).rowcount == 1
            if alias_dropped:
                conn.execute("INSERT INTO rag_pipeline.alias_changes (alias, collection_id, "
                             "previous_collection_id, cause) VALUES (%s, %s, %s, %s)",
                             (alias, collection_id, collection_id, AliasChange.DROPPED))
                add_counters(conn, Counter({("alias_changes",
                                             labels(cause=AliasChange.DROPPED)): 1}))
            if dropped_at is None:
                conn.execute("UPDATE rag_pipeline.collections SET dropped_at = now() "
                             "WHERE collection_id = %s", (collection_id,))
                add_counters(conn, Counter({("collections_dropped", labels(cause=cause)): 1}))
        drop = self.drop_of(collection_id)
        return Drop(**{**drop.__dict__, "documents": documents, "alias_dropped": alias_dropped})

    def partitions_to_remove(self) -> list[str]:
        """Dropped collections whose Dagster partition may still exist."""
        with self.pool.connection() as conn:
            return [r[0] for r in conn.execute(
                "SELECT collection_id FROM rag_pipeline.collections WHERE dropped_at IS NOT "
                "NULL AND partition_removed_at IS NULL ORDER BY dropped_at").fetchall()]

    def partitions_removed(self, collection_ids: Iterable[str]) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE rag_pipeline.collections SET partition_removed_at = now() "
                         "WHERE collection_id = ANY(%s) AND partition_removed_at IS NULL",
                         (list(collection_ids),))

    def retirable(self, after_seconds: float, limit: int = 100) -> list[str]:
        """Collections superseded under their alias more than `after_seconds` ago and not
        dropped yet, oldest first (RETIRE_SUPERSEDED_AFTER_SECONDS)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT collection_id FROM rag_pipeline.collections WHERE superseded_at < "
                "now() - make_interval(secs => %s) AND dropped_at IS NULL "
                "AND collection_id NOT IN (SELECT collection_id FROM rag_pipeline.aliases "
                "WHERE dropped_at IS NULL) ORDER BY superseded_at LIMIT %s",
                (after_seconds, limit)).fetchall()
        return [r[0] for r in rows]

    def drops(self, limit: int = 50) -> list[Drop]:
        """Drops asked, newest first, with what they removed (for `inspect`)."""
        with self.pool.connection() as conn:
            rows = conn.execute(f"SELECT {DROP_COLUMNS} FROM rag_pipeline.collections "
                                "WHERE drop_requested_at IS NOT NULL "
                                "ORDER BY drop_requested_at DESC LIMIT %s", (limit,)).fetchall()
        return [_drop(r) for r in rows]


DROP_COLUMNS = ("collection_id, alias, drop_cause, drop_requested_at, dropped_at, "
                "coalesce(dropped_rows, '{}'::jsonb)")


def _drop(row: tuple) -> Drop:
    return Drop(row[0], row[1], DropCause(row[2]), row[3], row[4], dict(row[5]))
