"""The Dagster code location of rag-pipeline.

Settings are read once here (a missing or invalid one stops the code location with a
message naming it). `build_resources` is the one mapping from Settings to resources: each
resource field carries the Settings name, and secrets become `EnvVar`s so that their values
never appear in run config, resource config, snapshots or the UI.
"""

from __future__ import annotations

import os

import dagster as dg

from rag_pipeline import dagster_internals
from rag_pipeline.assets.collections import alias_rebuilds, collection_drops
from rag_pipeline.assets.indexing import indexing_assets
from rag_pipeline.assets.reconciliation import crawl_requests
from rag_pipeline.assets.retention import retention
from rag_pipeline.jobs import (
    INDEXING_JOBS,
    apply_retention_job,
    drop_collection_job,
    index_collection_job,
    rebuild_alias_job,
    reconcile_stuck_jobs_job,
)
from rag_pipeline.loggers import json_run_logger
from rag_pipeline.observability.logs import configure_process_logging
from rag_pipeline.resources import RESOURCE_TYPES
from rag_pipeline.schedules import build_reconcile_schedule, build_retention_schedule
from rag_pipeline.sensors.delivery import status_deliverer
from rag_pipeline.sensors.liveness import run_liveness
from rag_pipeline.sensors.run_failures import build_run_failure_sensors
from rag_pipeline.sensors.staging import build_indexing_jobs_sensor
from rag_pipeline.settings import SECRET_FIELDS, Settings, env_name, load_settings, reveal
from rag_pipeline.settings.dotenv_shadow import warn_if_shadowed


def setting_value(s: Settings, name: str) -> object:
    """A resource field's value: the setting, or an EnvVar for a secret that is set.

    A secret read from `.env` is put into this process's environment first (without
    overriding an exported value), so that the EnvVar resolves here and in the run workers
    this process starts, and the value itself is never written into resource config.
    """
    value = getattr(s, name)
    if name not in SECRET_FIELDS:
        return value
    secret = reveal(value)
    if not secret:
        return ""
    os.environ.setdefault(env_name(name), secret)
    return dg.EnvVar(env_name(name))


def build_resources(s: Settings) -> dict[str, dg.ConfigurableResource]:
    """Every resource from the settings; a field named after a resource key (the outbox's
    `ledger` and `kafka`) gets that resource."""
    built: dict[str, dg.ConfigurableResource] = {}
    for key, kind in RESOURCE_TYPES.items():
        built[key] = kind(**{name: built[name] if name in built else setting_value(s, name)
                             for name in kind.model_fields})
    return built


def build_definitions(s: Settings,
                      resources: dict[str, dg.ConfigurableResource] | None = None
                      ) -> dg.Definitions:
    """The code location for these settings; `resources` replaces some (tests inject faults)."""
    return dg.Definitions(
        assets=[*indexing_assets, crawl_requests, retention, alias_rebuilds, collection_drops],
        jobs=[*INDEXING_JOBS, reconcile_stuck_jobs_job, apply_retention_job,
              rebuild_alias_job, drop_collection_job],
        sensors=[build_indexing_jobs_sensor(index_collection_job, s.sensor_interval_seconds),
                 run_liveness, status_deliverer, *build_run_failure_sensors()],
        schedules=[build_reconcile_schedule(s.reconcile_cron, s.queued_job_grace_seconds),
                   build_retention_schedule(s.retention_cron, s.retention_days,
                                            s.retire_superseded_after_seconds)],
        resources={**build_resources(s), **(resources or {})},
        # Run logs on the console: one JSON object per line, or text (LOG_FORMAT).
        loggers={"console": json_run_logger if s.log_format == "json"
                 else dg.colored_console_logger},
        # Every job in the run's own process: a run is already a process that imports the
        # whole code location; a process per step would pay that again per step.
        executor=dg.in_process_executor,
    )


_settings = load_settings()
configure_process_logging(_settings.log_format)
if _settings.log_format == "json":
    dagster_internals.default_run_logger(json_run_logger)
warn_if_shadowed()
defs = build_definitions(_settings)
