"""Every use of Dagster that is not its public API, in one place.

Dagster's public API (what `import dagster` exports and what its docs mark public) has no
equivalent for these; each is small and named for what the project needs, so a Dagster
upgrade that moves one breaks here, and `tests/test_dagster_internals.py` (which calls each
against a real instance) says which. Nothing else in the package imports `dagster._*` or
calls a non-public `DagsterInstance` method.
"""

from __future__ import annotations

import logging
from typing import Any

import dagster as dg

# Documented (API docs, "ConfigurableResourceFactory") but not re-exported by dagster 1.13's
# top-level package: it lets definitions receive a ready client (ResourceParam[JobLedger]).
from dagster._config.pythonic_config.resource import ConfigurableResourceFactory
from dagster._core.definitions.run_request import InstigatorType

__all__ = ["ConfigurableResourceFactory", "count_runs", "daemon_heartbeats",
           "default_run_logger", "instigation_console_through", "last_sensor_tick",
           "max_concurrent_runs", "report_run_failed", "run_workers_start_with"]


def default_run_logger(logger_def: dg.LoggerDefinition) -> None:
    """Runs log through `logger_def` (at the instance's python_log_level, else INFO) unless
    their run config names loggers.

    Dagster uses a job's loggers only for runs whose run config names them; sensors,
    schedules and the UI launch runs with none, and Dagster then falls back to its colored
    text console at DEBUG (`default_system_loggers`), also for the run worker's own events
    before the job starts. A job-level default run config cannot carry the loggers either:
    it must then be complete, and rebuild_alias's alias has no default."""
    from dagster._core.execution import context_creation_job

    def system_loggers(instance: Any) -> list[tuple[dg.LoggerDefinition, dict[str, Any]]]:
        level = getattr(instance, "python_log_level", None) or "INFO"
        return [(logger_def, {"name": "dagster", "log_level": level})]

    context_creation_job.default_system_loggers = system_loggers  # type: ignore[assignment]


def run_workers_start_with(entry_point: list[str]) -> None:
    """A code server started after this (`dagster api grpc` in this process) names
    `entry_point` as the command of its runs' workers (`<entry_point> api execute_run ...`),
    which the Docker and Kubernetes run launchers start in their own containers.

    Dagster's CLI offers only `dagster` or `python -m dagster` for it
    (`--use-python-environment-entry-point`)."""
    from dagster._cli import api

    api.DEFAULT_DAGSTER_ENTRY_POINT = entry_point  # type: ignore[misc]


def instigation_console_through(handler: logging.Handler) -> None:
    """Sensors' and schedules' `context.log` echo to the console through `handler`.

    Dagster gives each evaluation's InstigationLogger a console logger of its own
    (`create_console_logger`: coloredlogs text), which neither the CLI's --log-format nor
    Python's logging configuration reaches; the UI's captured tick logs are unchanged."""
    from dagster._core.definitions import instigation_logger

    def console_logger(name: str, level: int | str) -> logging.Logger:
        logger = logging.Logger(name, level=level)
        logger.addHandler(handler)
        return logger

    instigation_logger.create_console_logger = console_logger  # type: ignore[assignment]


def report_run_failed(instance: dg.DagsterInstance, run: dg.DagsterRun, message: str) -> None:
    """Mark a run failed with a message (frees its tag-concurrency slot, shows in the UI)."""
    instance.report_run_failed(run, message)


def max_concurrent_runs(instance: dg.DagsterInstance) -> int | None:
    """The run queue's limit; None under a run coordinator without a queue."""
    try:
        return instance.get_concurrency_config().run_queue_config.max_concurrent_runs
    except Exception:
        return None


def daemon_heartbeats(instance: dg.DagsterInstance) -> dict[str, float]:
    """Daemon type (SENSOR, SCHEDULER, ...) -> the epoch time of its last heartbeat."""
    return {kind: beat.timestamp for kind, beat in (instance.get_daemon_heartbeats() or {}).items()}


def last_sensor_tick(instance: dg.DagsterInstance, sensor_name: str) -> Any | None:
    """The latest tick of a sensor of that name (any code location), or None."""
    latest = None
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name != sensor_name:
            continue
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        if ticks and (latest is None or ticks[0].timestamp > latest.timestamp):
            latest = ticks[0]
    return latest


def count_runs(instance: dg.DagsterInstance, filters: dg.RunsFilter) -> int:
    """How many runs match, counted by the storage (get_run_records would load them)."""
    return instance.get_runs_count(filters)
