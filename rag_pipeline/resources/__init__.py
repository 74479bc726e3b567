"""Dagster resources: the systems the pipeline talks to, configured from the settings.

Each resource holds configuration only, under the Settings field names (no defaults of its
own: `definitions.build_resources` is the one mapping from Settings), and hands out the plain
clients that the logic modules use: `JobLedger`, Kafka clients, `Outbox`, `WorkspacePool`.
Secrets are `EnvVar`s, so their values never appear in run config or the UI.
"""

from rag_pipeline.resources.kafka import KafkaResource, ProcessingResource
from rag_pipeline.resources.ledger import LedgerResource
from rag_pipeline.resources.lightrag import LightRAGResource
from rag_pipeline.resources.outbox import OutboxResource

# Resource key -> resource type, as the definitions bind them.
RESOURCE_TYPES = {
    "kafka": KafkaResource,
    "processing": ProcessingResource,
    "ledger": LedgerResource,
    "lightrag": LightRAGResource,
    "outbox": OutboxResource,
}

__all__ = ["RESOURCE_TYPES", "KafkaResource", "LedgerResource", "LightRAGResource",
           "OutboxResource", "ProcessingResource"]
