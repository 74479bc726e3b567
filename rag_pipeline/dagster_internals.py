"""Every use of Dagster that is not its public API, in one place.

Dagster's public API (what `import dagster` exports and what its docs mark public) has no
equivalent for these; each is small and named for what the project needs, so a Dagster
upgrade that moves one breaks here, and `tests/test_dagster_internals.py` (which calls each
against a real instance) says which. Nothing else in the package imports `dagster._*` or
calls a non-public `DagsterInstance` method.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

# Documented (API docs, "ConfigurableResourceFactory") but not re-exported by dagster 1.13's
# top-level package: it lets definitions receive a ready client (ResourceParam[JobLedger]).
from dagster._config.pythonic_config.resource import ConfigurableResourceFactory
from dagster._core.definitions.run_request import InstigatorType

__all__ = ["ConfigurableResourceFactory", "count_runs", "daemon_heartbeats",
           "last_sensor_tick", "max_concurrent_runs", "report_run_failed"]


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
