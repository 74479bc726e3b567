-- Reverts 0001: indexing_requests without collection_id (the ids are lost). Idempotent.
BEGIN;
DROP INDEX IF EXISTS idx_indexing_requests_collection_id;
ALTER TABLE indexing_requests DROP COLUMN IF EXISTS collection_id;
COMMIT;
