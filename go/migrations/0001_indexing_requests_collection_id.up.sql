-- The Go backend's indexing_requests gains collection_id: one UUID per indexing request,
-- the LightRAG workspace of its pages (shared/GO_CONTRACT.md, "Database change").
-- Idempotent: a second run changes nothing, and keeps the ids the first one gave.
BEGIN;
ALTER TABLE indexing_requests ADD COLUMN IF NOT EXISTS collection_id varchar(36);
-- Existing requests need a value before the column becomes NOT NULL: a UUID each, as
-- CreateIndexingRequest makes for new ones (uuid.New().String()).
UPDATE indexing_requests SET collection_id = gen_random_uuid()::text
    WHERE collection_id IS NULL;
ALTER TABLE indexing_requests ALTER COLUMN collection_id SET NOT NULL;
-- GORM's name for `uniqueIndex` on this field, so AutoMigrate finds it in place.
CREATE UNIQUE INDEX IF NOT EXISTS idx_indexing_requests_collection_id
    ON indexing_requests (collection_id);
COMMIT;
