-- The Go backend's indexing_requests gains alias (the collection's name, shared by the
-- requests that renew it; shared/GO_CONTRACT.md) and failed_jobs (kept exact by
-- go/statushandler beside completed_jobs); indexing_jobs gains report_sequence, the number
-- of the last status report the handler applied. Idempotent.
BEGIN;
ALTER TABLE indexing_requests ADD COLUMN IF NOT EXISTS alias varchar(64);
-- GORM's name for `index` on this field, so AutoMigrate finds it in place.
CREATE INDEX IF NOT EXISTS idx_indexing_requests_alias ON indexing_requests (alias);
ALTER TABLE indexing_requests ADD COLUMN IF NOT EXISTS failed_jobs bigint NOT NULL DEFAULT 0;
ALTER TABLE IF EXISTS indexing_jobs
    ADD COLUMN IF NOT EXISTS report_sequence bigint NOT NULL DEFAULT 0;
COMMIT;
