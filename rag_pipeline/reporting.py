"""Reporting job outcomes outward: dead letters for pages that cannot be processed.

(Status callbacks to the Go backend go through the ledger's outbox; see `callbacks.py`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rag_pipeline.kafka_io import dead_letter, produce_confirmed
from rag_pipeline.ledger import JobLedger, JobOutcome


def dead_letter_failures(producer: Any, ledger: JobLedger, outcomes: Sequence[JobOutcome], *,
                         source_topic: str, dlq_topic: str, max_message_bytes: int) -> int:
    """Publish every failed or dead job to the DLQ with its original message; confirmed."""
    failed = [o for o in outcomes if o.state in ("failed", "dead")]
    if not failed:
        return 0
    messages = ledger.messages([o.job_id for o in failed])
    coordinates = ledger.kafka_coordinates([o.job_id for o in failed])
    records = []
    for o in failed:
        partition, offset, attempts = coordinates.get(o.job_id, (-1, -1, 0))
        value, headers = dead_letter(
            original=messages.get(o.job_id), error_class=o.error_code or o.state,
            error=o.error_msg or o.state, source_topic=source_topic,
            source_partition=partition, source_offset=offset, retry_count=attempts,
            job_id=o.job_id, collection_id=o.collection_id, max_bytes=max_message_bytes,
        )
        key = o.collection_id.encode() if o.collection_id else None
        records.append((key, value, headers))
    produce_confirmed(producer, dlq_topic, records)
    return len(records)
