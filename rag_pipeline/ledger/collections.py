"""Collections: the alias each one answers to and the end of its crawl, recorded by the
staging tick (read by inspection, the metrics and the `crawl_requests` asset); an alias's
renewal: the rows a new collection carries over, and its release, when the alias begins to
answer from it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

from rag_pipeline.ledger.connection import LedgerConnection, fence_run
from rag_pipeline.ledger.counters import add_counters, labels
from rag_pipeline.ledger.records import (
    CollectionLife,
    CrawlSummary,
    IndexModels,
    RebuildPlan,
    Release,
    StagedCompletion,
    StagedJob,
)
from rag_pipeline.vocabulary import AliasChange


def record_collections_in(conn: psycopg.Connection, jobs: Sequence[StagedJob],
                          completions: Sequence[StagedCompletion]) -> None:
    """Inside the staging transaction: a row for each collection seen, with the alias its
    first message named (staging.split_alias_conflicts: `jobs` agree with it), and the end
    of a crawl when the crawler says so. A redelivery changes nothing."""
    firsts: dict[str, tuple[str | None, int]] = {}
    for job in jobs:
        firsts.setdefault(job.collection_id, (job.alias, job.request_id))
    if firsts:
        conn.execute(
            "INSERT INTO rag_pipeline.collections (collection_id, alias, request_id) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[]) "
            "ON CONFLICT (collection_id) DO NOTHING",
            (list(firsts), [a for a, _ in firsts.values()], [r for _, r in firsts.values()]))
    for c in completions:
        conn.execute(
            "INSERT INTO rag_pipeline.collections AS k (collection_id, alias, request_id, "
            "crawl_completed_at, crawl_pages, completion_staged_at) "
            "VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (collection_id) DO UPDATE SET "
            "alias = coalesce(k.alias, EXCLUDED.alias), request_id = EXCLUDED.request_id, "
            "crawl_completed_at = EXCLUDED.crawl_completed_at, "
            "crawl_pages = EXCLUDED.crawl_pages, "
            "completion_staged_at = coalesce(k.completion_staged_at, now())",
            (c.collection_id, c.alias, c.request_id, c.completed_at, c.pages))


class CollectionQueries(LedgerConnection):
    """What the ledger knows of each collection's alias and crawl."""

    def collection_aliases(self, collection_ids: Iterable[str]) -> dict[str, str | None]:
        """The alias of each known collection among `collection_ids` (None: it has none)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT collection_id, alias FROM rag_pipeline.collections "
                "WHERE collection_id = ANY(%s)", (list(set(collection_ids)),)).fetchall()
        return dict(rows)

    def crawls(self, limit: int = 200, crawling_only: bool = False,
               collection_id: str | None = None) -> list[CrawlSummary]:
        """Collections, newest first (or only those whose crawl has not said it is complete,
        oldest first), each with its jobs per state (the state counts, not a scan)."""
        where, order = "TRUE", "first_staged_at DESC"
        if crawling_only:
            where, order = "completion_staged_at IS NULL", "first_staged_at"
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT k.collection_id, k.alias, k.request_id, k.first_staged_at, "
                "k.crawl_completed_at, k.crawl_pages, coalesce((SELECT jsonb_object_agg("
                "  state, n) FROM (SELECT state, sum(n)::bigint AS n FROM (SELECT state, n "
                "  FROM rag_pipeline.state_counts WHERE tbl = 'jobs' "
                "  AND scope = k.collection_id UNION ALL SELECT state, n "
                "  FROM rag_pipeline.state_count_deltas WHERE tbl = 'jobs' "
                "  AND scope = k.collection_id) c GROUP BY state HAVING sum(n) <> 0) s), "
                "'{}'::jsonb) FROM rag_pipeline.collections k "
                f"WHERE {where} AND (%(c)s::text IS NULL OR k.collection_id = %(c)s) "
                f"ORDER BY {order} LIMIT %(limit)s",
                {"limit": limit, "c": collection_id}).fetchall()
        return [CrawlSummary(*r[:6], {s: int(n) for s, n in r[6].items()}) for r in rows]

    def crawls_incomplete(self) -> int:
        """Collections whose crawl has not said it is complete."""
        with self.pool.connection() as conn:
            return int(conn.execute(
                "SELECT count(*) FROM rag_pipeline.collections "
                "WHERE completion_staged_at IS NULL").fetchone()[0])

    # --- an alias's renewal (rag_pipeline/indexing/renewal.py) -------------------------------
    def collection_life(self, collection_id: str) -> CollectionLife | None:
        with self.pool.connection() as conn:
            row = conn.execute(
                f"SELECT {LIFE_COLUMNS} FROM rag_pipeline.collections WHERE collection_id = %s",
                (collection_id,)).fetchone()
        return CollectionLife(*row) if row else None

    def alias_collection(self, alias: str) -> str | None:
        """The collection `alias` answers from now (None: none yet)."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT collection_id FROM rag_pipeline.aliases WHERE alias = %s "
                               "AND dropped_at IS NULL", (alias,)).fetchone()
        return row[0] if row else None

    def carry_over(self, collection_id: str, run_id: str,
                   copy: Callable[[psycopg.Connection, str, str], dict[str, int]] | None
                   ) -> tuple[str | None, dict[str, int]]:
        """Decided once, at the collection's first run, in one fenced transaction: if its
        alias answers from another collection and it has no document yet, that
        collection's LightRAG rows (`copy(conn, source, target)`) and `documents` rows are copied
        into it. The source collection and the rows copied per table; (None, {}) when
        nothing is carried over (or it was decided before). `copy` None: cannot copy."""
        with self.transaction() as conn:
            fence_run(conn, run_id)
            row = conn.execute(
                "SELECT alias, carried_over_at, renews FROM rag_pipeline.collections "
                "WHERE collection_id = %s FOR UPDATE", (collection_id,)).fetchone()
            if row is None or row[1] is not None:
                return None, {}
            alias = row[0]
            source = alias and conn.execute(
                "SELECT collection_id FROM rag_pipeline.aliases WHERE alias = %s "
                "AND dropped_at IS NULL", (alias,)).fetchone()
            source = source[0] if source else None
            empty = not conn.execute("SELECT EXISTS (SELECT 1 FROM rag_pipeline.documents "
                                     "WHERE collection_id = %s AND deleted_at IS NULL)",
                                     (collection_id,)).fetchone()[0]
            copied: dict[str, int] = {}
            if source and source != collection_id and empty and copy is not None:
                copied = copy(conn, source, collection_id)
                conn.execute(
                    "INSERT INTO rag_pipeline.documents (collection_id, doc_id, url, "
                    "file_path, content_hash, job_id, indexed_at) SELECT %s, doc_id, url, "
                    "file_path, content_hash, job_id, indexed_at FROM rag_pipeline.documents "
                    "WHERE collection_id = %s AND deleted_at IS NULL", (collection_id, source))
            else:
                source = None
            conn.execute("UPDATE rag_pipeline.collections SET renews = %s, "
                         "carried_over_at = now() WHERE collection_id = %s",
                         (source, collection_id))
        return source, copied

    def ready_to_release(self, collection_id: str | None = None) -> list[tuple[str, int]]:
        """Collections whose crawl said it is complete, with every page it announced staged
        and none queued or running, not released yet (oldest first); each with the number
        of runs it has had (a run key: a run that failed to release is followed by another).
        Counted from the state counts, so a tick costs the same for a large crawl."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "WITH done AS (SELECT collection_id, crawl_pages, completion_staged_at "
                "  FROM rag_pipeline.collections WHERE completion_staged_at IS NOT NULL "
                "  AND released_at IS NULL AND drop_requested_at IS NULL "
                "  AND (%(c)s::text IS NULL OR collection_id = %(c)s)), "
                "jobs AS (SELECT scope, sum(n) FILTER (WHERE state IN ('queued', 'running')) "
                "  AS active, sum(n) AS received FROM (SELECT scope, state, n "
                "  FROM rag_pipeline.state_counts WHERE tbl = 'jobs' "
                "  AND scope IN (SELECT collection_id FROM done) UNION ALL "
                "  SELECT scope, state, n FROM rag_pipeline.state_count_deltas "
                "  WHERE tbl = 'jobs' AND scope IN (SELECT collection_id FROM done)) c "
                "  GROUP BY scope) "
                "SELECT d.collection_id, (SELECT count(*) FROM rag_pipeline.runs r "
                "  WHERE r.collection_id = d.collection_id) "
                "FROM done d LEFT JOIN jobs j ON j.scope = d.collection_id "
                "WHERE coalesce(j.active, 0) = 0 "
                "AND coalesce(j.received, 0) >= coalesce(d.crawl_pages, 0) "
                "ORDER BY d.completion_staged_at", {"c": collection_id}).fetchall()
        return [(r[0], int(r[1])) for r in rows]

    def unseen_documents(self, collection_id: str) -> list[str]:
        """Documents of the collection that none of its jobs named: pages it carried over
        that its crawl no longer found."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT d.doc_id FROM rag_pipeline.documents d WHERE d.collection_id = %s "
                "AND d.deleted_at IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM rag_pipeline.jobs j WHERE j.collection_id = "
                "d.collection_id AND j.doc_id = d.doc_id) ORDER BY d.doc_id",
                (collection_id,)).fetchall()
        return [r[0] for r in rows]

    def release(self, collection_id: str, run_id: str, removed: Sequence[str]) -> Release:
        """In one fenced transaction: forget the documents removed from LightRAG, and let the
        collection's alias answer from it, unless a newer collection of the alias already
        does (newer: its first page was staged later)."""
        with self.transaction() as conn:
            fence_run(conn, run_id)
            alias, first_staged, released_at, rebuild_of = conn.execute(
                "SELECT alias, first_staged_at, released_at, rebuild_of "
                "FROM rag_pipeline.collections WHERE collection_id = %s FOR UPDATE",
                (collection_id,)).fetchone()
            if released_at is not None:  # a retried step: done before
                return Release(collection_id, alias, None, None, 0)
            conn.execute("UPDATE rag_pipeline.documents SET deleted_at = now() "
                         "WHERE collection_id = %s AND doc_id = ANY(%s)",
                         (collection_id, list(removed)))
            previous = cause = None
            superseded = False
            if alias is not None:
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                             (f"rag_pipeline:alias:{alias}",))
                current = conn.execute(
                    "SELECT a.collection_id, k.first_staged_at FROM rag_pipeline.aliases a "
                    "JOIN rag_pipeline.collections k USING (collection_id) WHERE a.alias = %s",
                    (alias,)).fetchone()
                if current is None or (current[1], current[0]) < (first_staged, collection_id):
                    previous = current[0] if current else None
                    cause = (AliasChange.REBUILD if rebuild_of else AliasChange.RENEWAL
                             if previous else AliasChange.FIRST_CRAWL)
                    conn.execute(
                        "INSERT INTO rag_pipeline.aliases (alias, collection_id) VALUES (%s, %s) "
                        "ON CONFLICT (alias) DO UPDATE SET collection_id = EXCLUDED.collection_id,"
                        " changed_at = now(), dropped_at = NULL", (alias, collection_id))
                    conn.execute(
                        "INSERT INTO rag_pipeline.alias_changes (alias, collection_id, "
                        "previous_collection_id, cause, pages_removed) "
                        "VALUES (%s, %s, %s, %s, %s)",
                        (alias, collection_id, previous, cause, len(removed)))
                    conn.execute("UPDATE rag_pipeline.collections SET superseded_at = now() "
                                 "WHERE collection_id = %s", (previous,))
                    add_counters(conn, Counter({("alias_changes", labels(cause=cause)): 1}))
                else:
                    superseded = True
            conn.execute(
                "UPDATE rag_pipeline.collections SET released_at = now(), superseded_at = "
                "CASE WHEN %s THEN now() END WHERE collection_id = %s",
                (superseded, collection_id))
        return Release(collection_id, alias, previous, cause and cause.value, len(removed))

    def collection_models(self, collection_id: str) -> set[IndexModels | None]:
        """The models the collection's documents were indexed with (None: not recorded)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT llm_model, embedding_model, embedding_dim "
                "FROM rag_pipeline.documents WHERE collection_id = %s AND deleted_at IS NULL",
                (collection_id,)).fetchall()
        return {IndexModels(*r) if r[0] else None for r in rows}

    def plan_rebuild(self, alias: str, collection_id: str) -> RebuildPlan:
        """In one transaction: collection `collection_id` of `alias`, holding the pages of the
        alias's current collection again, each as an internal job (a negative id: nothing is
        reported for it) with the message its page was last indexed from, queued; its crawl
        already complete. Pages whose message retention pruned are listed, not queued."""
        with self.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                         (f"rag_pipeline:alias:{alias}",))
            source = conn.execute("SELECT collection_id FROM rag_pipeline.aliases "
                                  "WHERE alias = %s AND dropped_at IS NULL", (alias,)).fetchone()
            if source is None:
                raise LookupError(f"alias {alias!r} answers from no collection yet: there is "
                                  "nothing to rebuild (its first crawl has not completed)")
            source = source[0]
            conn.execute(
                "INSERT INTO rag_pipeline.collections (collection_id, alias, rebuild_of, "
                "carried_over_at, crawl_completed_at, completion_staged_at, crawl_pages) "
                "VALUES (%s, %s, %s, now(), now(), now(), 0)", (collection_id, alias, source))
            pages = conn.execute(
                "INSERT INTO rag_pipeline.jobs (job_id, project_id, user_id, collection_id, "
                "url, normalized_url, doc_id, title, details, message, message_sha256, "
                "message_bytes, state, produced_at) "
                "SELECT -nextval('rag_pipeline.internal_job_ids'), j.project_id, j.user_id, "
                "%s, j.url, j.normalized_url, j.doc_id, j.title, j.details, j.message, "
                "j.message_sha256, j.message_bytes, 'queued', now() "
                "FROM rag_pipeline.documents d JOIN rag_pipeline.jobs j ON j.job_id = d.job_id "
                "WHERE d.collection_id = %s AND d.deleted_at IS NULL AND j.message IS NOT NULL "
                "ORDER BY j.seq",
                (collection_id, source)).rowcount
            pruned = [r[0] for r in conn.execute(
                "SELECT d.url FROM rag_pipeline.documents d JOIN rag_pipeline.jobs j "
                "ON j.job_id = d.job_id WHERE d.collection_id = %s AND d.deleted_at IS NULL "
                "AND j.message IS NULL ORDER BY d.url", (source,)).fetchall()]
            conn.execute("UPDATE rag_pipeline.collections SET crawl_pages = %s "
                         "WHERE collection_id = %s", (pages, collection_id))
        return RebuildPlan(collection_id, alias, source, pages, pruned)

    def aliases(self, limit: int = 200) -> list[tuple[str, str, datetime]]:
        """(alias, the collection it answers from, since when), most recently moved first
        (an alias whose collection was dropped answers from none: `drops` lists it)."""
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT alias, collection_id, changed_at FROM rag_pipeline.aliases "
                "WHERE dropped_at IS NULL ORDER BY changed_at DESC LIMIT %s",
                (limit,)).fetchall()

    def alias_history(self, alias: str) -> list[dict[str, object]]:
        """Every change of the alias, oldest first."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT collection_id, previous_collection_id, cause, pages_removed, changed_at "
                "FROM rag_pipeline.alias_changes WHERE alias = %s ORDER BY id",
                (alias,)).fetchall()


LIFE_COLUMNS = ("collection_id, alias, first_staged_at, crawl_pages, completion_staged_at, "
                "renews, carried_over_at, released_at, superseded_at")
