"""The outbox: where job outcomes go (the Go API's status endpoint, DLQ, result events)."""

from __future__ import annotations

import dagster as dg

from rag_pipeline.ledger import JobLedger
from rag_pipeline.outbox import Outbox
from rag_pipeline.resources.kafka import KafkaResource
from rag_pipeline.settings import joined


class OutboxResource(dg.ConfigurableResource):
    """The Go API's status endpoint (PATCH .../jobs/{job_id}/status) and the delivery policy
    of the outbox; `bind` hands out the plain `Outbox`."""

    go_backend_url: str
    go_api_timeout_seconds: float
    go_api_token: str  # an EnvVar: its value never enters resource config
    outbox_max_backoff_seconds: float
    retry_backoff: float

    def bind(self, ledger: JobLedger, kafka: KafkaResource) -> Outbox:
        return Outbox.from_settings(ledger, joined(self, kafka))
