"""The Kafka cluster: topics, client limits and the sensor's per-tick budget."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from rag_pipeline.kafka_io import KafkaOptions, consumer_config, producer_config
from rag_pipeline.staging import TickBudget


class KafkaResource(dg.ConfigurableResource):
    """The Kafka cluster: topics, client limits, and the sensor's per-tick budget."""

    kafka_bootstrap_servers: str
    kafka_group_id: str
    kafka_topic: str
    kafka_dlq_topic: str
    kafka_results_topic: str
    kafka_auto_offset_reset: str
    kafka_max_message_bytes: int
    publish_results: bool
    sensor_max_messages: int
    sensor_max_bytes: int
    sensor_time_budget_seconds: float
    kafka_security_protocol: str
    kafka_sasl_mechanism: str
    kafka_sasl_username: str
    kafka_sasl_password: str  # an EnvVar: its value never enters resource config
    kafka_ssl_ca_location: str

    @property
    def options(self) -> KafkaOptions:
        return KafkaOptions.from_settings(self)

    @property
    def budget(self) -> TickBudget:
        return TickBudget.from_settings(self)

    @contextmanager
    def consumer(self) -> Iterator[Any]:
        from confluent_kafka import Consumer

        consumer = Consumer(consumer_config(self.options))
        try:
            yield consumer
        finally:
            consumer.close()

    @contextmanager
    def producer(self) -> Iterator[Any]:
        from confluent_kafka import Producer

        producer = Producer(producer_config(self.options))
        try:
            yield producer
        finally:
            producer.flush(30)
