"""The outbox: where job outcomes go (the Go API's status endpoint, DLQ, result events),
handed out as the plain `Outbox`, built on the ledger and Kafka resources it depends on."""

# No `from __future__ import annotations`: Dagster reads ResourceDependency at class creation.
import dagster as dg

from rag_pipeline.dagster_internals import ConfigurableResourceFactory
from rag_pipeline.ledger import JobLedger
from rag_pipeline.outbox import Outbox
from rag_pipeline.resources.kafka import KafkaResource


class OutboxResource(ConfigurableResourceFactory[Outbox]):
    """The Go API's status endpoint (PATCH .../jobs/{job_id}/status) and the delivery policy
    of the outbox; definitions receive the ready `Outbox` (`ResourceParam[Outbox]`)."""

    ledger: dg.ResourceDependency[JobLedger]
    kafka: KafkaResource
    go_backend_url: str
    go_api_timeout_seconds: float
    go_api_token: str  # an EnvVar: its value never enters resource config
    outbox_max_backoff_seconds: float
    retry_backoff: float

    def build(self, ledger: JobLedger) -> Outbox:
        """The plain `Outbox` on this ledger (also for tests and benchmarks)."""
        return Outbox.from_settings(ledger, self.kafka, self)

    def create_resource(self, context: dg.InitResourceContext) -> Outbox:
        return self.build(self.ledger)
