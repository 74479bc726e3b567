"""Dagster resources: the systems the pipeline talks to, configured from the settings.

Each resource only holds configuration and hands out the plain clients that the
logic modules use (`JobLedger`, Kafka clients, ...). Secrets are `EnvVar`s in
`definitions.py`, so their values never appear in run config or the UI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from psycopg.conninfo import make_conninfo
from pydantic import PrivateAttr

from rag_pipeline.callbacks import (
    DeliveryPolicy,
    DeliveryReport,
    StatusClient,
    deliver_callbacks,
    publish_results,
)
from rag_pipeline.contract import ContentLimits
from rag_pipeline.kafka_io import KafkaOptions, consumer_config, producer_config
from rag_pipeline.ledger import JobLedger, JobOutcome, shared_ledger
from rag_pipeline.models import ModelOptions
from rag_pipeline.reporting import dead_letter_failures
from rag_pipeline.staging import StagingConfig, TickBudget
from rag_pipeline.workspaces import LightRAGOptions, PostgresOptions, WorkspacePool, shared_pool


class KafkaResource(dg.ConfigurableResource):
    """The Kafka cluster: topics, client limits, and the sensor's per-tick budget."""

    bootstrap_servers: str
    group_id: str = "rag-processor"
    topic: str = "indexing_jobs"
    dlq_topic: str = "indexing_jobs_dlq"
    results_topic: str = "indexing_job_results"
    auto_offset_reset: str = "earliest"
    max_message_bytes: int = 20 * 1024 * 1024
    publish_results: bool = False
    tick_max_messages: int = 2000
    tick_max_bytes: int = 64 * 1024 * 1024
    tick_seconds: float = 20.0

    @property
    def options(self) -> KafkaOptions:
        return KafkaOptions(
            bootstrap_servers=self.bootstrap_servers, group_id=self.group_id,
            auto_offset_reset=self.auto_offset_reset, max_message_bytes=self.max_message_bytes,
            tick_max_bytes=self.tick_max_bytes,
        )

    @property
    def budget(self) -> TickBudget:
        return TickBudget(self.tick_max_messages, self.tick_max_bytes, self.tick_seconds)

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
    """How pages are processed: limits, which text is indexed, run sizes, retries."""

    max_payload_bytes: int = 50 * 1024 * 1024
    max_text_bytes: int = 8 * 1024 * 1024
    text_source: str = "prefer_extracted"
    jobs_per_run: int = 200
    run_batch_bytes: int = 32 * 1024 * 1024
    max_retries: int = 3
    retry_backoff: float = 1.0

    def staging_config(self, kafka: KafkaResource) -> StagingConfig:
        return StagingConfig(
            topic=kafka.topic, dlq_topic=kafka.dlq_topic,
            auto_offset_reset=kafka.auto_offset_reset,
            limits=ContentLimits(kafka.max_message_bytes, self.max_payload_bytes,
                                 self.max_text_bytes),
        )


class LedgerResource(dg.ConfigurableResource):
    """The ledger in PostgreSQL (schema rag_pipeline); migrated when first opened."""

    host: str
    port: int = 5432
    user: str = "postgres"
    password: str
    dbname: str = "mcpdocs"
    pool_size: int = 4

    _ledger: JobLedger | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        conninfo = make_conninfo(host=self.host, port=self.port, user=self.user,
                                 dbname=self.dbname)
        # Shared by every tick and step of this process (opened and migrated once).
        self._ledger = shared_ledger(conninfo, self.password, self.pool_size)

    @property
    def ledger(self) -> JobLedger:
        if self._ledger is None:
            raise RuntimeError("LedgerResource used outside of a Dagster execution")
        return self._ledger


class LightRAGResource(dg.ConfigurableResource):
    """LightRAG on PostgreSQL: one workspace per collection, and the models it calls.

    LLM_MAX_CONCURRENCY and EMBEDDING_MAX_CONCURRENCY are totals across every concurrent
    run: requests take slots shared through PostgreSQL (model_slots.py), so one run alone
    may use them all and several runs share them (README, "Concurrency").
    """

    pg_host: str
    pg_port: int = 5432
    pg_user: str = "postgres"
    pg_password: str
    pg_dbname: str = "mcpdocs"
    graph_storage: str = "PGTableGraphStorage"
    max_instances: int = 10
    instance_ttl_seconds: int = 300
    max_parallel_insert: int = 8
    model_base_url: str
    model_api_key: str = "not-needed"
    stand_in_model: bool = False
    llm_model: str = "gpt-4o-mini"
    embedding_model: str = "text-embedding-3-small"
    embedding_dim: int = 1536
    llm_max_concurrency: int = 8
    embedding_max_concurrency: int = 8
    model_timeout_seconds: float = 120.0
    max_retries: int = 3
    retry_backoff: float = 1.0

    def options(self) -> LightRAGOptions:
        return LightRAGOptions(
            postgres=PostgresOptions(self.pg_host, self.pg_port, self.pg_user, self.pg_password,
                                     self.pg_dbname),
            models=ModelOptions(
                base_url=self.model_base_url, api_key=self.model_api_key,
                llm_model=self.llm_model, embedding_model=self.embedding_model,
                embedding_dim=self.embedding_dim,
                llm_max_async=self.llm_max_concurrency,
                embedding_max_async=self.embedding_max_concurrency,
                timeout_s=self.model_timeout_seconds, max_retries=self.max_retries,
                retry_backoff=self.retry_backoff, stand_in=self.stand_in_model,
            ),
            graph_storage=self.graph_storage,
            max_parallel_insert=self.max_parallel_insert,
            max_instances=self.max_instances,
            ttl_seconds=self.instance_ttl_seconds,
            shared_slots=True,
        )

    def pool(self) -> WorkspacePool:
        return shared_pool(self.options())

    @property
    def conninfo(self) -> str:
        return make_conninfo(host=self.pg_host, port=self.pg_port, user=self.pg_user,
                             dbname=self.pg_dbname)


class StatusApiResource(dg.ConfigurableResource):
    """The Go backend's job status endpoint (PATCH .../jobs/{job_id}/status)."""

    base_url: str
    timeout_seconds: float = 10.0
    retry_backoff: float = 1.0
    max_backoff_seconds: float = 300.0

    @property
    def policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(timeout_seconds=self.timeout_seconds,
                              base_backoff_seconds=self.retry_backoff,
                              max_backoff_seconds=self.max_backoff_seconds)

    @contextmanager
    def client(self) -> Iterator[StatusClient]:
        client = StatusClient(self.base_url, self.timeout_seconds)
        try:
            yield client
        finally:
            client.close()


def report_outcomes(ledger: LedgerResource, kafka: KafkaResource, status_api: StatusApiResource,
                    outcomes: list[JobOutcome], log: Callable[[str], None]) -> DeliveryReport:
    """After jobs reach a terminal state: dead letters for failed and dead ones (confirmed),
    then their statuses to the Go backend right away (the outbox keeps what fails)."""
    if any(o.state in ("failed", "dead") for o in outcomes):
        with kafka.producer() as producer:
            dead_letter_failures(producer, ledger.ledger, outcomes, source_topic=kafka.topic,
                                 dlq_topic=kafka.dlq_topic,
                                 max_message_bytes=kafka.max_message_bytes)
    terminal = [o.job_id for o in outcomes if o.state in ("completed", "failed", "dead")]
    report = DeliveryReport()
    if terminal:
        with status_api.client() as client:
            report = deliver_callbacks(ledger.ledger, client, status_api.policy,
                                       job_ids=terminal, log_event=log)
    if kafka.publish_results:
        with kafka.producer() as producer:
            report.results_published += publish_results(ledger.ledger, producer,
                                                         kafka.results_topic)
    return report
