"""The never-started rule: which runs of collections have been launched (or could have
been) for too long without a first heartbeat.

A run that Dagster started or is starting is timed from its start; a queued run only from
the moment it had nothing in its way (a free run slot and no run of its collection in
progress), since a queued run may legitimately wait for long. The liveness check declares the
runs this finds dead unless they beat in the meantime (`liveness.check`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

RunPhase = Literal["QUEUED", "STARTING", "STARTED"]


@dataclass(frozen=True)
class SeenRun:
    """A run of a collection as Dagster's storage shows it (times are epoch seconds)."""

    run_id: str
    collection_id: str
    phase: RunPhase
    started_at: float | None
    updated_at: float


@dataclass
class NeverStarted:
    """Runs past the start timeout, and the queued runs' unblocked-since times to keep."""

    candidates: list[tuple[str, str, str]]
    unblocked_since: dict[str, float]


def never_started(runs: Iterable[SeenRun], *, in_progress: int, max_concurrent_runs: int | None,
                  unblocked_since: dict[str, float], now: float,
                  older_than_seconds: float) -> NeverStarted:
    """`runs`: every queued, starting or started run of a collection; `in_progress`: the runs
    that take a slot (tagged or not); `unblocked_since`: the last call's figures."""
    runs = list(runs)
    busy = {r.collection_id for r in runs if r.phase != "QUEUED"}
    free_slot = max_concurrent_runs is not None and in_progress < max_concurrent_runs
    found: list[tuple[str, str, str]] = []
    unblocked: dict[str, float] = {}
    for run in runs:
        if run.phase == "STARTED":
            since = run.started_at or run.updated_at
        elif run.phase == "STARTING":
            since = run.updated_at
        elif free_slot and run.collection_id not in busy:  # QUEUED with nothing in its way
            since = unblocked[run.run_id] = unblocked_since.get(run.run_id, now)
        else:
            continue
        if now - since > older_than_seconds:
            found.append((run.run_id, run.collection_id, run.phase))
    return NeverStarted(found, unblocked)
