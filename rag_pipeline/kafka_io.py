"""Kafka client configuration and the few Kafka operations the pipeline performs.

All message-size limits derive from KAFKA_MAX_MESSAGE_BYTES (>= 16 MiB), so a 10 MB page
(~13.3 MB after base64) passes the producer, the broker, the topic and the consumer alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rag_pipeline.settings import MIB, Settings

CLIENT_ID = "rag-pipeline"


@dataclass(frozen=True)
class KafkaOptions:
    """What a Kafka client of this project needs to know."""

    bootstrap_servers: str
    group_id: str
    auto_offset_reset: str
    max_message_bytes: int
    # The bytes a consumer's reader keeps per tick; its prefetch is sized from it.
    tick_max_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaOptions:
        return cls(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.kafka_group_id,
            auto_offset_reset=settings.kafka_auto_offset_reset,
            max_message_bytes=settings.kafka_max_message_bytes,
            tick_max_bytes=settings.sensor_max_bytes,
        )


def client_config(options: KafkaOptions) -> dict[str, Any]:
    return {
        "bootstrap.servers": options.bootstrap_servers,
        "client.id": CLIENT_ID,
        # librdkafka logs connection failures at error level on every retry; our callers
        # report unreachable brokers themselves with the address and what to do.
        "log_level": 3,
    }


def consumer_config(options: KafkaOptions) -> dict[str, Any]:
    """A consumer that never commits on its own: offsets live in the ledger (DESIGN.md 3)."""
    # Bounded memory: librdkafka prefetches at most a quarter of the tick's budget, in
    # fetches of 1 MiB per partition. The broker still returns a first message larger than
    # that (up to max_message_bytes), so a 16 MB page is never stuck.
    fetch_max = options.max_message_bytes
    return {
        **client_config(options),
        "group.id": options.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": options.auto_offset_reset,
        "max.partition.fetch.bytes": min(MIB, fetch_max),
        "fetch.max.bytes": fetch_max,
        "receive.message.max.bytes": fetch_max + 65536,
        "queued.max.messages.kbytes": max(1024, options.tick_max_bytes // 4 // 1024),
        "fetch.wait.max.ms": 100,
    }


def producer_config(options: KafkaOptions) -> dict[str, Any]:
    return {
        **client_config(options),
        "message.max.bytes": options.max_message_bytes,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "delivery.timeout.ms": 60000,
    }


# --- dead letters ---------------------------------------------------------------------------
class DeliveryFailed(Exception):
    """Kafka did not confirm a delivery; the caller must not advance past the message."""


def dead_letter(
    *,
    original: bytes | None,
    error_class: str,
    error: str,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    retry_count: int = 0,
    job_id: int | None = None,
    collection_id: str | None = None,
    max_bytes: int,
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The DLQ record (value) and its Kafka Connect-style headers.

    The original message is embedded as text when it is UTF-8, else base64; one too large
    for the DLQ topic is cut (the headers still locate the full original in its topic).
    """
    import base64

    from rag_pipeline.contract import DeadLetter

    original = original or b""
    limit = max(0, max_bytes - 64 * 1024) * 3 // 4  # room for the record and base64
    truncated = len(original) > limit
    body = original[:limit]
    try:
        text, encoding = body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(body).decode("ascii"), "base64"
    record = DeadLetter(
        original_message=text,
        original_message_encoding=encoding,
        original_truncated=truncated,
        error=error,
        error_class=error_class,
        retry_count=retry_count,
        job_id=job_id,
        collection_id=collection_id,
    )
    headers = [
        ("__connect.errors.topic", source_topic.encode()),
        ("__connect.errors.partition", str(source_partition).encode()),
        ("__connect.errors.offset", str(source_offset).encode()),
        ("__connect.errors.exception.class.name", error_class.encode()),
        ("__connect.errors.exception.message", error[:1000].encode("utf-8", "replace")),
    ]
    return record.model_dump_json().encode(), headers


def produce_confirmed(producer: Any, topic: str,
                      records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]],
                      timeout: float = 30.0) -> None:
    """Produce (key, value, headers) records and wait until Kafka confirmed every one."""
    if not records:
        return
    errors: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for key, value, headers in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=headers,
                                 on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.2)
    if producer.flush(timeout) > 0:
        raise DeliveryFailed(f"Kafka did not confirm {topic} deliveries within {timeout:.0f} s")
    if errors:
        raise DeliveryFailed(f"Kafka refused {len(errors)} {topic} records: {errors[0]}")
