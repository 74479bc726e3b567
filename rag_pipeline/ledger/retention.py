"""Retention: what the ledger keeps of a finished job once RETENTION_DAYS have passed.

A finished job keeps its row: its outcome, error, attempts, metrics, its Kafka coordinates
and message_sha256 (a replayed message is still recognised as a duplicate, and a reused
job_id as a conflict), and its documents row (what LightRAG holds, by content hash: an
unchanged page crawled again is still skipped). What goes is what only a run needs while
it works on the job: the message as received, its Kafka key and headers (a producer's trace
data may ride in them) and the cleaned text. LightRAG's own tables are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

from rag_pipeline.ledger.connection import LedgerConnection


@dataclass(frozen=True)
class PruneBatch:
    jobs: int
    bytes: int  # message, key, headers and cleaned-text bytes dropped


class RetentionQueries(LedgerConnection):
    """Pruning finished jobs' payloads."""

    def prune_payloads(self, older_than_seconds: float, limit: int) -> PruneBatch:
        """Drop the message (value, Kafka key and headers) and cleaned text of up to `limit`
        jobs finished more than `older_than_seconds` ago whose statuses have all left the
        outbox (a pending status may still need its dead letter's original message). Oldest
        first."""
        with self.transaction() as conn:
            row = conn.execute(
                "WITH old AS (SELECT job_id, coalesce(octet_length(message), 0) "
                "  + coalesce(octet_length(clean_text), 0) + coalesce(octet_length(kafka_key), 0) "
                "  + coalesce(octet_length(kafka_headers::text), 0) AS bytes "
                "  FROM rag_pipeline.jobs j "
                "  WHERE j.pruned_at IS NULL AND j.state IN ('completed', 'failed', 'dead') "
                "  AND j.finished_at < now() - make_interval(secs => %s) "
                "  AND NOT EXISTS (SELECT 1 FROM rag_pipeline.outbox o "
                "                  WHERE o.job_id = j.job_id AND o.state = 'pending') "
                "  ORDER BY j.finished_at LIMIT %s FOR UPDATE SKIP LOCKED), "
                "pruned AS (UPDATE rag_pipeline.jobs j SET message = NULL, clean_text = NULL, "
                "  kafka_key = NULL, kafka_headers = NULL, pruned_at = now() "
                "  FROM old WHERE j.job_id = old.job_id "
                "  RETURNING old.bytes) "
                "SELECT count(*), coalesce(sum(bytes), 0) FROM pruned",
                (older_than_seconds, limit),
            ).fetchone()
        return PruneBatch(jobs=int(row[0]), bytes=int(row[1]))
