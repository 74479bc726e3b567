"""The Dagster code location of rag-pipeline.

Settings are read once here (a missing or invalid one stops the code location with a
message naming it); resources get their values from them, secrets as `EnvVar`s so that
their values never appear in run config or the UI.
"""

from __future__ import annotations

import os

import dagster as dg

from rag_pipeline.assets.indexing import (
    index_collection_job,
    indexing_assets,
    reindex_collection_job,
)
from rag_pipeline.assets.operations import (
    build_reconcile_schedule,
    crawl_requests,
    reconcile_stuck_jobs_job,
)
from rag_pipeline.resources import (
    KafkaResource,
    LedgerResource,
    LightRAGResource,
    ProcessingResource,
    StatusApiResource,
)
from rag_pipeline.sensors.indexing_jobs import build_indexing_jobs_sensor
from rag_pipeline.sensors.run_failures import build_run_failure_sensors
from rag_pipeline.settings import Settings, load_settings


def secret(name: str, value: str | None) -> str | dg.EnvVar:
    """The secret as an EnvVar when it comes from the environment (never inlined)."""
    return dg.EnvVar(name) if os.environ.get(name) else (value or "")


def build_resources(s: Settings) -> dict[str, dg.ConfigurableResource]:
    password = secret("POSTGRES_PASSWORD", s.postgres_password.get_secret_value())
    api_key = (secret("OPENAI_API_KEY", s.openai_api_key.get_secret_value())
               if s.openai_api_key else "not-needed")
    return {
        "kafka": KafkaResource(
            bootstrap_servers=s.kafka_bootstrap_servers, group_id=s.kafka_group_id,
            topic=s.kafka_topic, dlq_topic=s.kafka_dlq_topic,
            results_topic=s.kafka_results_topic, auto_offset_reset=s.kafka_auto_offset_reset,
            max_message_bytes=s.kafka_max_message_bytes, publish_results=s.publish_results,
            tick_max_messages=s.sensor_max_messages, tick_max_bytes=s.sensor_max_bytes,
            tick_seconds=s.sensor_time_budget_seconds,
        ),
        "ledger": LedgerResource(host=s.postgres_host, port=s.postgres_port,
                                 user=s.postgres_user, password=password, dbname=s.postgres_db),
        "processing": ProcessingResource(
            max_payload_bytes=s.max_payload_bytes, max_text_bytes=s.max_text_bytes,
            text_source=s.text_source,
            jobs_per_run=s.jobs_per_run, run_batch_bytes=s.run_batch_bytes,
            max_retries=s.max_retries, retry_backoff=s.retry_backoff,
        ),
        "lightrag": LightRAGResource(
            pg_host=s.postgres_host, pg_port=s.postgres_port, pg_user=s.postgres_user,
            pg_password=password, pg_dbname=s.postgres_db,
            graph_storage=s.lightrag_graph_storage, max_instances=s.max_rag_instances,
            instance_ttl_seconds=s.rag_instance_ttl_seconds, max_parallel_insert=s.max_workers,
            model_base_url=s.model_base_url, model_api_key=api_key,
            stand_in_model=s.uses_stand_in_model, llm_model=s.openai_llm_model,
            embedding_model=s.openai_embedding_model, embedding_dim=s.embedding_dim,
            llm_max_concurrency=s.llm_max_concurrency,
            embedding_max_concurrency=s.embedding_max_concurrency,
            model_timeout_seconds=s.model_timeout_seconds, max_retries=s.max_retries,
            retry_backoff=s.retry_backoff,
        ),
        "status_api": StatusApiResource(
            base_url=s.go_backend_url, timeout_seconds=s.callback_timeout_seconds,
            retry_backoff=s.retry_backoff, max_backoff_seconds=s.callback_max_backoff_seconds,
        ),
    }


def build_definitions(s: Settings,
                      resources: dict[str, dg.ConfigurableResource] | None = None
                      ) -> dg.Definitions:
    """The code location for these settings; `resources` replaces some (tests inject faults)."""
    indexing_jobs = [index_collection_job, reindex_collection_job]
    return dg.Definitions(
        assets=[*indexing_assets, crawl_requests],
        jobs=[*indexing_jobs, reconcile_stuck_jobs_job],
        sensors=[build_indexing_jobs_sensor(index_collection_job, s.sensor_interval_seconds),
                 *build_run_failure_sensors(indexing_jobs)],
        schedules=[build_reconcile_schedule(s.reconcile_cron, s.stuck_run_timeout_seconds,
                                            s.queued_job_grace_seconds)],
        resources={**build_resources(s), **(resources or {})},
        # Every job in the run's own process: a run is already a process that imports the
        # whole code location; a process per step would pay that again per step.
        executor=dg.in_process_executor,
    )


defs = build_definitions(load_settings())
