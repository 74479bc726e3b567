"""Kafka client configuration and the few Kafka operations the pipeline performs.

All message-size limits derive from KAFKA_MAX_MESSAGE_BYTES (>= 16 MiB), so a 10 MB page
(~13.3 MB after base64) passes the producer, the broker, the topic and the consumer alike.
"""

from __future__ import annotations

from typing import Any

from rag_pipeline.settings import Settings

CLIENT_ID = "rag-pipeline"


def client_config(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "client.id": CLIENT_ID,
        # librdkafka logs connection failures at error level on every retry; our callers
        # report unreachable brokers themselves with the address and what to do.
        "log_level": 3,
    }


def consumer_config(settings: Settings, queued_kbytes: int | None = None) -> dict[str, Any]:
    """A consumer that never commits on its own: offsets live in the ledger (DESIGN.md 3)."""
    max_message = settings.kafka_max_message_bytes
    fetch_max = max(max_message, 52428800)
    return {
        **client_config(settings),
        "group.id": settings.kafka_group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": settings.kafka_auto_offset_reset,
        "max.partition.fetch.bytes": max_message,
        "fetch.max.bytes": fetch_max,
        "receive.message.max.bytes": fetch_max + 65536,
        # Bounded memory: librdkafka prefetches at most this much (it still returns one
        # message larger than the limit, so a 16 MB page is never stuck).
        "queued.max.messages.kbytes": queued_kbytes or max(1024, settings.sensor_max_bytes // 2048),
        "fetch.wait.max.ms": 100,
        "session.timeout.ms": 45000,
    }


def producer_config(settings: Settings) -> dict[str, Any]:
    return {
        **client_config(settings),
        "message.max.bytes": settings.kafka_max_message_bytes,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "delivery.timeout.ms": 60000,
    }
