"""Collections: the alias each one answers to and the end of its crawl, recorded by the
staging tick; read by inspection, the metrics and the `crawl_requests` asset."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import psycopg

from rag_pipeline.ledger.connection import LedgerConnection
from rag_pipeline.ledger.records import CrawlSummary, StagedCompletion, StagedJob


def record_collections_in(conn: psycopg.Connection, jobs: Sequence[StagedJob],
                          completions: Sequence[StagedCompletion]) -> None:
    """Inside the staging transaction: a row for each collection seen (its first alias said
    wins), and the end of a crawl when the crawler says so. A redelivery changes nothing."""
    firsts: dict[str, tuple[str | None, int]] = {}
    for job in jobs:
        alias, request_id = firsts.get(job.collection_id, (None, job.request_id))
        firsts[job.collection_id] = (alias or job.alias, request_id)
    if firsts:
        conn.execute(
            "INSERT INTO rag_pipeline.collections (collection_id, alias, request_id) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[]) "
            "ON CONFLICT (collection_id) DO UPDATE SET alias = EXCLUDED.alias "
            "WHERE rag_pipeline.collections.alias IS NULL AND EXCLUDED.alias IS NOT NULL",
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
