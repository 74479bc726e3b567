"""The pipeline's topics, made explicit: `rag-pipeline kafka ensure-topics` creates what is
missing and sets what differs, through Kafka's AdminClient, instead of relying on broker
auto-creation (whose 1 MiB `max.message.bytes` refuses large pages).

Idempotent: a second run changes nothing. A topic with fewer partitions than the settings
say is reported, not grown: adding partitions moves keys to other partitions, and a
collection's messages would lose their order (an operator decides that, with Kafka's tools).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rag_pipeline.settings.views import KafkaAdminView

TIMEOUT_S = 30.0
HOUR_MS = 3_600_000


class TopicAction(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REFUSED = "refused"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


@dataclass
class TopicChange:
    topic: str
    action: TopicAction
    detail: str = ""
    changed: dict[str, str] = field(default_factory=dict)


class TopicsError(Exception):
    """A topic could not be created or configured; the message says what to do."""


def wanted_topics(s: KafkaAdminView) -> list[TopicSpec]:
    """indexing_jobs, its DLQ and the results topic, as the settings describe them."""
    size = {"max.message.bytes": str(s.kafka_max_message_bytes)}
    kept = {"retention.ms": str(int(s.kafka_retention_hours * HOUR_MS))}
    dlq_kept = {"retention.ms": str(int(s.kafka_dlq_retention_hours * HOUR_MS))}
    replicas = s.kafka_replication_factor
    return [  # the three need the size: the DLQ carries a page, results are small
        TopicSpec(s.kafka_topic, s.kafka_topic_partitions, replicas, {**size, **kept}),
        TopicSpec(s.kafka_dlq_topic, s.kafka_dlq_partitions, replicas, {**size, **dlq_kept}),
        TopicSpec(s.kafka_results_topic, s.kafka_dlq_partitions, replicas, kept),
    ]


def ensure_topics(admin: Any, specs: list[TopicSpec]) -> list[TopicChange]:
    """Create the missing topics and set the configuration that differs; one change each."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewTopic,
        ResourceType,
    )

    try:
        existing = admin.list_topics(timeout=TIMEOUT_S).topics
    except KafkaException as exc:
        raise TopicsError(f"Kafka is unreachable ({exc}); check KAFKA_BOOTSTRAP_SERVERS "
                          "and the security settings") from None
    changes: list[TopicChange] = []
    missing = [s for s in specs if s.name not in existing]
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication_factor, config=s.config)
             for s in missing], operation_timeout=TIMEOUT_S)
        for spec in missing:
            try:
                futures[spec.name].result(timeout=TIMEOUT_S * 2)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):  # created meanwhile by another
                    raise TopicsError(f"creating topic {spec.name} failed: {exc}") from None
            changes.append(TopicChange(spec.name, TopicAction.CREATED,
                                       f"{spec.partitions} partitions", dict(spec.config)))
    present = [s for s in specs if s.name in existing]
    if not present:
        return changes
    resources = {s.name: ConfigResource(ResourceType.TOPIC, s.name) for s in present}
    described = admin.describe_configs(list(resources.values()))
    for spec in present:
        partitions = len(existing[spec.name].partitions)
        if partitions < spec.partitions:
            changes.append(TopicChange(
                spec.name, TopicAction.REFUSED,
                f"has {partitions} partitions, the settings say {spec.partitions}: adding "
                "partitions moves keys (a collection's order), so it is left to you "
                "(kafka-topics.sh --alter --partitions), or set the setting to match"))
            continue
        current = described[resources[spec.name]].result(timeout=TIMEOUT_S)
        differing = {k: v for k, v in spec.config.items()
                     if k not in current or current[k].value != v}
        if not differing:
            changes.append(TopicChange(spec.name, TopicAction.UNCHANGED))
            continue
        resource = ConfigResource(ResourceType.TOPIC, spec.name, incremental_configs=[
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
            for k, v in differing.items()])
        try:
            admin.incremental_alter_configs([resource])[resource].result(timeout=TIMEOUT_S)
        except KafkaException as exc:
            raise TopicsError(f"configuring topic {spec.name} failed: {exc}") from None
        changes.append(TopicChange(spec.name, TopicAction.UPDATED, "", differing))
    return changes
