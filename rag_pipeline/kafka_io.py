"""Kafka client configuration and the few Kafka operations the pipeline performs.

All message-size limits derive from KAFKA_MAX_MESSAGE_BYTES (>= 16 MiB), so a 10 MB page
(~13.3 MB after base64) passes the producer, the broker, the topic and the consumer alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from rag_pipeline.settings import MIB, reveal
from rag_pipeline.settings.views import KafkaClientView

CLIENT_ID = "rag-pipeline"
LIBRDKAFKA_LOG = logging.getLogger("rag_pipeline.kafka.librdkafka")


@dataclass(frozen=True)
class KafkaOptions:
    """What a Kafka client of this project needs to know (names as in Settings)."""

    kafka_bootstrap_servers: str
    kafka_group_id: str
    kafka_auto_offset_reset: str
    kafka_max_message_bytes: int
    # The bytes a consumer's reader keeps per tick; its prefetch is sized from it.
    sensor_max_bytes: int
    kafka_security_protocol: str
    kafka_sasl_mechanism: str
    kafka_sasl_username: str
    kafka_sasl_password: str = field(repr=False)
    kafka_ssl_ca_location: str

    @classmethod
    def from_settings(cls, s: KafkaClientView) -> KafkaOptions:
        return cls(
            kafka_bootstrap_servers=s.kafka_bootstrap_servers,
            kafka_group_id=s.kafka_group_id,
            kafka_auto_offset_reset=s.kafka_auto_offset_reset,
            kafka_max_message_bytes=s.kafka_max_message_bytes,
            sensor_max_bytes=s.sensor_max_bytes,
            kafka_security_protocol=s.kafka_security_protocol,
            kafka_sasl_mechanism=s.kafka_sasl_mechanism,
            kafka_sasl_username=s.kafka_sasl_username,
            kafka_sasl_password=reveal(s.kafka_sasl_password),
            kafka_ssl_ca_location=s.kafka_ssl_ca_location,
        )


def client_config(options: KafkaOptions) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": options.kafka_bootstrap_servers,
        "client.id": CLIENT_ID,
        # librdkafka logs connection failures at error level on every retry; our callers
        # report unreachable brokers themselves with the address and what to do.
        "log_level": 3,
        # What it does log goes through Python's logging (JSON like every other line), not
        # as its own text on stderr; delivered when the client is polled.
        "logger": LIBRDKAFKA_LOG,
        "security.protocol": options.kafka_security_protocol,
    }
    if options.kafka_security_protocol.startswith("SASL_"):
        config.update({"sasl.mechanism": options.kafka_sasl_mechanism,
                       "sasl.username": options.kafka_sasl_username,
                       "sasl.password": options.kafka_sasl_password})
    if options.kafka_ssl_ca_location:
        config["ssl.ca.location"] = options.kafka_ssl_ca_location
    return config


def consumer_config(options: KafkaOptions) -> dict[str, Any]:
    """A consumer that never commits on its own: offsets live in the ledger
    (docs/design.md, section 3)."""
    # Bounded memory: librdkafka prefetches at most a quarter of the tick's budget, in
    # fetches of 1 MiB per partition. The broker still returns a first message larger than
    # that (up to max_message_bytes), so a 16 MB page is never stuck.
    fetch_max = options.kafka_max_message_bytes
    return {
        **client_config(options),
        "group.id": options.kafka_group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": options.kafka_auto_offset_reset,
        "max.partition.fetch.bytes": min(MIB, fetch_max),
        "fetch.max.bytes": fetch_max,
        "receive.message.max.bytes": fetch_max + 65536,
        "queued.max.messages.kbytes": max(1024, options.sensor_max_bytes // 4 // 1024),
        "fetch.wait.max.ms": 100,
    }


def producer_config(options: KafkaOptions) -> dict[str, Any]:
    return {
        **client_config(options),
        "message.max.bytes": options.kafka_max_message_bytes,
        "acks": "all",
        "enable.idempotence": True,
        # Kafka's murmur2 of the key, as the Go crawler (franz-go) and Java clients do: a
        # collection lands on one partition whoever produced it (librdkafka's default,
        # consistent_random, is CRC32). contract/vectors/partitions.json holds the vectors.
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "delivery.timeout.ms": 60000,
    }


# --- confirmed delivery --------------------------------------------------------------------
class DeliveryFailed(Exception):
    """Kafka did not confirm a delivery; the caller must not advance past the message."""


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
