"""What the query service reads of the ledger: which collection a name answers from, the URL
and title of a cited page, the collections and how far a crawl request is. Read-only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rag_pipeline.ledger.connection import LedgerConnection
from rag_pipeline.ledger.records import IndexModels


@dataclass(frozen=True)
class Citation:
    url: str
    title: str


@dataclass(frozen=True)
class CollectionEntry:
    """A collection as the query service lists it."""

    collection_id: str
    alias: str | None
    answers_for_alias: bool  # the alias's current collection (a query by alias reads it)
    first_staged_at: datetime
    crawl_completed_at: datetime | None
    crawl_pages: int | None
    pages_by_state: dict[str, int]
    models: list[IndexModels]

    @property
    def complete(self) -> bool:
        """The crawler said the crawl is complete and no page of it waits or runs."""
        waiting = self.pages_by_state.get("queued", 0) + self.pages_by_state.get("running", 0)
        return self.crawl_completed_at is not None and waiting == 0


@dataclass(frozen=True)
class RequestJob:
    job_id: int
    url: str
    state: str
    outcome: str | None
    reason: str | None
    updated_at: datetime


@dataclass(frozen=True)
class RequestStatus:
    request_id: int
    collections: dict[str, str | None]  # the request's collections and their aliases
    jobs_by_state: dict[str, int]
    jobs: list[RequestJob]  # one page of them, by job_id

    @property
    def total(self) -> int:
        return sum(self.jobs_by_state.values())

    @property
    def complete(self) -> bool:
        return self.total > 0 and not (self.jobs_by_state.get("queued", 0)
                                       + self.jobs_by_state.get("running", 0))


class ServingQueries(LedgerConnection):
    """The query service's reads."""

    def ping(self) -> None:
        """Raises unless PostgreSQL answers (the service's readiness)."""
        with self.pool.connection(timeout=5) as conn:
            conn.execute("SELECT 1")

    def resolve(self, ref: str) -> tuple[str, str | None] | None:
        """The collection an alias or a collection id answers from, and its alias (None: no
        such collection, or it was dropped)."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT collection_id, alias FROM rag_pipeline.aliases WHERE alias = %(r)s "
                "AND dropped_at IS NULL UNION ALL SELECT collection_id, alias "
                "FROM rag_pipeline.collections WHERE collection_id = %(r)s "
                "AND drop_requested_at IS NULL LIMIT 1", {"r": ref}).fetchone()
        return (row[0], row[1]) if row else None

    def citations(self, collection_id: str, file_paths: list[str]) -> dict[str, Citation]:
        """The URL and title of each page a LightRAG file_path names."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT d.file_path, d.url, coalesce(j.title, '') FROM rag_pipeline.documents d "
                "LEFT JOIN rag_pipeline.jobs j ON j.job_id = d.job_id "
                "WHERE d.collection_id = %s AND d.file_path = ANY(%s)",
                (collection_id, list(set(file_paths)))).fetchall()
        return {path: Citation(url, title) for path, url, title in rows}

    def collection_entries(self, limit: int = 200,
                           only: list[str] | None = None) -> list[CollectionEntry]:
        """Collections not dropped, newest first (`only`: these collection ids)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT k.collection_id, k.alias, a.collection_id IS NOT NULL, "
                "k.first_staged_at, k.crawl_completed_at, k.crawl_pages "
                "FROM rag_pipeline.collections k LEFT JOIN rag_pipeline.aliases a "
                "ON a.alias = k.alias AND a.collection_id = k.collection_id "
                "AND a.dropped_at IS NULL WHERE k.drop_requested_at IS NULL "
                "AND (%(only)s::text[] IS NULL OR k.collection_id = ANY(%(only)s)) "
                "ORDER BY k.first_staged_at DESC LIMIT %(limit)s",
                {"limit": limit, "only": only}).fetchall()
            models = conn.execute(
                "SELECT DISTINCT collection_id, llm_model, embedding_model, embedding_dim "
                "FROM rag_pipeline.documents WHERE collection_id = ANY(%s) "
                "AND deleted_at IS NULL AND llm_model IS NOT NULL",
                ([r[0] for r in rows],)).fetchall()
            # Jobs per state of every listed collection in one read (state counts + deltas).
            states: dict[str, dict[str, int]] = {r[0]: {} for r in rows}
            for scope, state, n in conn.execute(
                    "SELECT scope, state, sum(n)::bigint FROM (SELECT scope, state, n "
                    "FROM rag_pipeline.state_counts WHERE tbl = 'jobs' AND scope = ANY(%(c)s) "
                    "UNION ALL SELECT scope, state, n FROM rag_pipeline.state_count_deltas "
                    "WHERE tbl = 'jobs' AND scope = ANY(%(c)s)) c GROUP BY 1, 2 "
                    "HAVING sum(n) <> 0", {"c": list(states)}).fetchall():
                states[scope][state] = int(n)
        by_collection: dict[str, list[IndexModels]] = {}
        for collection_id, *m in models:
            by_collection.setdefault(collection_id, []).append(IndexModels(*m))
        return [CollectionEntry(*r, pages_by_state=states[r[0]],
                                models=by_collection.get(r[0], [])) for r in rows]

    def request_status(self, request_id: int, offset: int = 0,
                       limit: int = 100) -> RequestStatus | None:
        """A crawl request's jobs per state and one page of its jobs (None: no job of it)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT j.collection_id, k.alias, j.state, count(*) FROM rag_pipeline.jobs j "
                "LEFT JOIN rag_pipeline.collections k ON k.collection_id = j.collection_id "
                "WHERE j.request_id = %s GROUP BY 1, 2, 3", (request_id,)).fetchall()
            if not rows:
                return None
            counts: dict[str, int] = {}
            for _c, _a, state, n in rows:
                counts[state] = counts.get(state, 0) + int(n)
            jobs = conn.execute(
                "SELECT job_id, url, state, outcome, reason, updated_at "
                "FROM rag_pipeline.jobs WHERE request_id = %s ORDER BY job_id "
                "OFFSET %s LIMIT %s", (request_id, offset, limit)).fetchall()
        return RequestStatus(request_id, {c: a for c, a, _s, _n in rows}, counts,
                             [RequestJob(*j) for j in jobs])
