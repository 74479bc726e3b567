"""Migrations of the collections' life (docs/design.md, "Collections have a life"): kept
apart from schema.py's first twelve, in the same list and under the same rules."""

from __future__ import annotations

COLLECTION_MIGRATIONS: list[tuple[int, str]] = [
    (
        13,
        """
        -- One row per collection: the alias its first message named (or none, for good),
        -- the crawl request it holds and, once the crawler says so (a crawl_completed
        -- message), the end of that crawl with its page count. Then its life under the
        -- alias: the collection whose rows it carried over (renews; decided once, at its
        -- first run: carried_over_at) or whose pages it indexes again with the current
        -- models (rebuild_of), when its alias began answering from it (released_at) and
        -- when a newer one took over (superseded_at).
        CREATE TABLE rag_pipeline.collections (
            collection_id text PRIMARY KEY,
            alias text,
            request_id bigint,
            first_staged_at timestamptz NOT NULL DEFAULT now(),
            crawl_completed_at timestamptz,
            crawl_pages bigint,
            completion_staged_at timestamptz,
            renews text,
            rebuild_of text,
            carried_over_at timestamptz,
            released_at timestamptz,
            superseded_at timestamptz
        );
        CREATE INDEX collections_alias ON rag_pipeline.collections (alias, first_staged_at)
            WHERE alias IS NOT NULL;
        CREATE INDEX collections_crawling ON rag_pipeline.collections (first_staged_at)
            WHERE completion_staged_at IS NULL;
        CREATE INDEX collections_unreleased ON rag_pipeline.collections (completion_staged_at)
            WHERE completion_staged_at IS NOT NULL AND released_at IS NULL;
        -- The collection each alias answers from, and every change of it (vocabulary
        -- AliasChange: first_crawl, renewal, rebuild).
        CREATE TABLE rag_pipeline.aliases (
            alias text PRIMARY KEY,
            collection_id text NOT NULL REFERENCES rag_pipeline.collections,
            changed_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE rag_pipeline.alias_changes (
            id bigserial PRIMARY KEY,
            alias text NOT NULL,
            collection_id text NOT NULL,
            previous_collection_id text,
            cause text NOT NULL,
            pages_removed integer NOT NULL DEFAULT 0,
            changed_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX alias_changes_alias ON rag_pipeline.alias_changes (alias, id);
        -- Jobs the pipeline makes itself (a rebuild's pages indexed again) take negative
        -- ids from here: the Go API's job ids are positive, and nothing is reported for them.
        CREATE SEQUENCE rag_pipeline.internal_job_ids;
        -- The models each document was indexed with (NULL: before this migration); a
        -- renewal carries pages over only when they match the current ones.
        ALTER TABLE rag_pipeline.documents ADD COLUMN llm_model text,
            ADD COLUMN embedding_model text, ADD COLUMN embedding_dim integer;
        -- The collections staged before: no alias, and no crawl_completed message is to be
        -- waited for (the crawler could not say it then): neither crawling nor to release.
        INSERT INTO rag_pipeline.collections (collection_id, request_id, first_staged_at,
                                              completion_staged_at, carried_over_at,
                                              released_at)
        SELECT collection_id, max(request_id), min(created_at), now(), now(), now()
        FROM rag_pipeline.jobs WHERE collection_id <> '' GROUP BY collection_id;
        """,
    ),
    (
        14,
        """
        -- Removing what should go (docs/design.md, "Removing what should go"). A job is a
        -- page to index or a page to delete (vocabulary JobKind); a deleted page's document
        -- row stays, marked, until a later page of its url indexes it again.
        ALTER TABLE rag_pipeline.jobs ADD COLUMN kind text NOT NULL DEFAULT 'page'
            CHECK (kind IN ('page', 'page_deleted'));
        ALTER TABLE rag_pipeline.documents ADD COLUMN deleted_at timestamptz,
            ADD COLUMN deleted_by bigint;
        -- A drop: asked (drop_requested_at, with its cause: vocabulary DropCause), done
        -- (dropped_at) and what it removed per table, then its Dagster partition deleted
        -- (partition_removed_at). An alias whose collection was dropped
        -- answers nothing (aliases.dropped_at) until a new crawl of it is released.
        ALTER TABLE rag_pipeline.collections ADD COLUMN drop_requested_at timestamptz,
            ADD COLUMN drop_cause text, ADD COLUMN dropped_at timestamptz,
            ADD COLUMN dropped_rows jsonb, ADD COLUMN partition_removed_at timestamptz;
        CREATE INDEX collections_superseded ON rag_pipeline.collections (superseded_at)
            WHERE superseded_at IS NOT NULL AND dropped_at IS NULL;
        -- What the staging sensor looks for on every tick (partitions of dropped collections).
        CREATE INDEX collections_partition_to_remove ON rag_pipeline.collections (dropped_at)
            WHERE dropped_at IS NOT NULL AND partition_removed_at IS NULL;
        ALTER TABLE rag_pipeline.aliases ADD COLUMN dropped_at timestamptz;
        """,
    ),
    (
        15,
        """
        -- The query service cites a retrieved chunk by its file_path: the page's url and
        -- title are found from it (rag_pipeline/ledger/serving.py).
        CREATE INDEX documents_file_path ON rag_pipeline.documents (collection_id, file_path);
        """,
    ),
    (
        16,
        """
        -- A job's dead letter carries its message's own key and headers (the DLQ record).
        ALTER TABLE rag_pipeline.jobs ADD COLUMN kafka_key bytea,
            ADD COLUMN kafka_headers jsonb;
        """,
    ),
]
