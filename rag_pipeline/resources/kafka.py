"""The Kafka cluster and how pages are processed (limits, how runs stream, retries)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from rag_pipeline.indexing.pages import PageLimits
from rag_pipeline.indexing.run import StreamLimits
from rag_pipeline.kafka_io import KafkaOptions, consumer_config, producer_config
from rag_pipeline.settings import joined
from rag_pipeline.staging import StagingConfig, TickBudget


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


class ProcessingResource(dg.ConfigurableResource):
    """How pages are processed: limits, which text is indexed, how runs stream, retries."""

    max_payload_bytes: int
    max_text_bytes: int
    text_source: str
    run_batch_bytes: int
    run_idle_seconds: float
    run_max_seconds: float
    max_retries: int
    retry_backoff: float
    run_heartbeat_timeout_seconds: int
    run_stall_timeout_seconds: int
    run_start_timeout_seconds: int

    def staging_config(self, kafka: KafkaResource) -> StagingConfig:
        return StagingConfig.from_settings(joined(kafka, self))

    @property
    def page_limits(self) -> PageLimits:
        return PageLimits(self.max_payload_bytes, self.max_text_bytes,
                          self.text_source)  # type: ignore[arg-type]

    def stream_limits(self, workers: int, max_jobs: int | None = None) -> StreamLimits:
        """`workers`: the pages LightRAG works on at once; twice as many are kept in flight."""
        return StreamLimits(window=2 * workers, idle_seconds=self.run_idle_seconds,
                            max_seconds=self.run_max_seconds,
                            stall_seconds=self.run_stall_timeout_seconds,
                            max_retries=self.max_retries, batch_bytes=self.run_batch_bytes,
                            max_jobs=max_jobs)
