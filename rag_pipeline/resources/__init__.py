"""Dagster resources: the systems the pipeline talks to, configured from the settings.

Each resource holds configuration under the Settings field names (no defaults of its own:
`definitions.build_resources` is the one mapping from Settings) and the resources it depends
on, and hands out the plain clients that the logic modules use: `JobLedger`, Kafka clients,
`Outbox`, `WorkspacePool`. Secrets are `EnvVar`s, so their values never appear in run config
or the UI.
"""

from rag_pipeline.resources.kafka import KafkaResource
from rag_pipeline.resources.ledger import LedgerResource
from rag_pipeline.resources.lightrag import LightRAGResource
from rag_pipeline.resources.outbox import OutboxResource
from rag_pipeline.resources.processing import ProcessingResource

# Resource key -> resource type, as the definitions bind them; a resource that depends on
# others comes after them (its fields of those types are given the ones built before).
RESOURCE_TYPES = {
    "kafka": KafkaResource,
    "processing": ProcessingResource,
    "ledger": LedgerResource,
    "lightrag": LightRAGResource,
    "outbox": OutboxResource,
}

__all__ = ["RESOURCE_TYPES", "KafkaResource", "LedgerResource", "LightRAGResource",
           "OutboxResource", "ProcessingResource"]
