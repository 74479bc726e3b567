"""Migrations of the collections' life (docs/design.md, "Collections have a life"): kept
apart from schema.py's first twelve, in the same list and under the same rules."""

from __future__ import annotations

COLLECTION_MIGRATIONS: list[tuple[int, str]] = [
    (
        13,
        """
        -- One row per collection: the alias its pages carry (the first one said wins), the
        -- crawl request it holds and, once the crawler says so (a crawl_completed message),
        -- the end of that crawl with its page count.
        CREATE TABLE rag_pipeline.collections (
            collection_id text PRIMARY KEY,
            alias text,
            request_id bigint,
            first_staged_at timestamptz NOT NULL DEFAULT now(),
            crawl_completed_at timestamptz,
            crawl_pages bigint,
            completion_staged_at timestamptz
        );
        CREATE INDEX collections_alias ON rag_pipeline.collections (alias, first_staged_at)
            WHERE alias IS NOT NULL;
        CREATE INDEX collections_crawling ON rag_pipeline.collections (first_staged_at)
            WHERE completion_staged_at IS NULL;
        -- The collections staged before: no alias, and no crawl_completed message is to be
        -- waited for (the crawler could not say it then), so they do not count as crawling.
        INSERT INTO rag_pipeline.collections (collection_id, request_id, first_staged_at,
                                              completion_staged_at)
        SELECT collection_id, max(request_id), min(created_at), now() FROM rag_pipeline.jobs
        WHERE collection_id <> '' GROUP BY collection_id;
        """,
    ),
]
