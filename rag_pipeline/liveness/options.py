"""Liveness's settings: how long a run may be silent, stalled or unstarted before it is
declared dead, and how many attempts a job gets (README, configuration table)."""

from __future__ import annotations

from dataclasses import dataclass

from rag_pipeline.settings.views import LivenessView


@dataclass(frozen=True)
class LivenessOptions:
    run_heartbeat_timeout_seconds: float
    run_stall_timeout_seconds: float
    run_start_timeout_seconds: float
    max_retries: int

    @classmethod
    def from_settings(cls, s: LivenessView) -> LivenessOptions:
        return cls(run_heartbeat_timeout_seconds=s.run_heartbeat_timeout_seconds,
                   run_stall_timeout_seconds=s.run_stall_timeout_seconds,
                   run_start_timeout_seconds=s.run_start_timeout_seconds,
                   max_retries=s.max_retries)
