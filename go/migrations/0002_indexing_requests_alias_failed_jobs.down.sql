BEGIN;
ALTER TABLE IF EXISTS indexing_jobs DROP COLUMN IF EXISTS report_sequence;
ALTER TABLE indexing_requests DROP COLUMN IF EXISTS failed_jobs;
DROP INDEX IF EXISTS idx_indexing_requests_alias;
ALTER TABLE indexing_requests DROP COLUMN IF EXISTS alias;
COMMIT;
