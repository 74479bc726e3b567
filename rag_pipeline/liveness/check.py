"""Liveness from the ledger (docs/design.md, invariant 9): no collection stays blocked.

Dagster cannot tell that a run worker died under the DefaultRunLauncher (its run monitoring
needs another launcher), and the code server's own orphan check dies with its host. So runs
prove they are alive in the ledger, wherever they execute:

- a working run holds a `RunLease` (`liveness.leases`);
- `check_liveness` (the `run_liveness` sensor, every few seconds) declares dead a run whose
  process is gone (no PostgreSQL session left under its name, GONE_AFTER_SECONDS without a
  beat: a killed process or container), a run silent for RUN_HEARTBEAT_TIMEOUT_SECONDS
  (any death, a lost host or network too), or a run that Dagster has started (or queued while a
  slot is free) for RUN_START_TIMEOUT_SECONDS without a first beat. Declaring dead, in this
  order: the PostgreSQL sessions of its process are terminated (its collection lock is
  released, its open transactions roll back, a frozen write lets go of the run's row); in
  ONE transaction the ledger marks it (its beats and every write are refused from then on)
  and gives its running jobs back (requeued, or dead after MAX_RETRIES); sessions opened
  meanwhile are terminated again; the Dagster run is marked failed with the detail, which
  frees the per-collection run slot and shows in the UI (tried again on every check until it
  succeeds); the collection is nudged so that a new run is requested.
- every check also sweeps: `running` jobs of runs that finished or were declared dead go
  back to the queue, so no path that half ends a run can strand its jobs.

Nothing here assumes that the daemon, the code server and the run share a host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from rag_pipeline.ledger import JobLedger, JobOutcome
from rag_pipeline.liveness.leases import HEARTBEAT_SECONDS
from rag_pipeline.liveness.release import log_released, release_jobs_of_run
from rag_pipeline.observability.events import event_line
from rag_pipeline.vocabulary import DeathCause, JobState, RunOutcome

# A killed process loses its PostgreSQL sessions at once (its kernel closes the sockets), so
# a run with no session left and three beats missed is dead: taken over in seconds instead
# of RUN_HEARTBEAT_TIMEOUT_SECONDS. Three beats, so that a live run whose connections broke
# (a PostgreSQL restart, a pool recycling) has reconnected long before.
GONE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS


class RunStore(Protocol):
    """What the check needs from Dagster's run storage (the sensor passes the instance's)."""

    def ended(self, run_id: str) -> RunOutcome | None:
        """How the run ended in Dagster; None while it has not ended (or is unknown)."""

    def fail(self, run_id: str, message: str) -> bool:
        """Mark a run that has not ended as failed; False when it had already ended."""

    def unbeaten_candidates(self, older_than_seconds: float) -> list[tuple[str, str, str]]:
        """(run_id, collection_id, status) of runs of collections that Dagster has started
        or is starting, or that wait queued while a run slot is free and no run of their
        collection is in progress, for longer than `older_than_seconds`."""


@dataclass
class LivenessReport:
    declared_dead: list[str] = field(default_factory=list)
    jobs_requeued: int = 0
    jobs_dead: int = 0
    collections: set[str] = field(default_factory=set)
    outcomes: list[JobOutcome] = field(default_factory=list)

    def released(self, collection_id: str, outcomes: list[JobOutcome]) -> None:
        """Count the jobs a run gave back; their collection gets a new run."""
        self.outcomes += outcomes
        self.jobs_requeued += sum(1 for o in outcomes if o.state == JobState.QUEUED)
        self.jobs_dead += sum(1 for o in outcomes if o.state == JobState.DEAD)
        if outcomes:
            self.collections.add(collection_id)


def declare_dead(ledger: JobLedger, runs: RunStore, run_id: str, collection_id: str,
                 detail: str, cause: DeathCause, max_retries: int, report: LivenessReport,
                 emit: Callable[[str], None]) -> None:
    """Take everything away from one run (see the module's docstring for the order)."""
    sessions = ledger.terminate_run_sessions(run_id)
    outcomes = ledger.declare_run_dead(run_id, collection_id, detail, cause, max_retries)
    log_released(outcomes, run_id, emit)
    sessions += ledger.terminate_run_sessions(run_id)
    failed_in_dagster = fail_in_dagster(ledger, runs, run_id, detail, emit)
    report.declared_dead.append(run_id)
    report.collections.add(collection_id)  # its queued run, if any, was failed with it
    report.released(collection_id, outcomes)
    emit(event_line("run_declared_dead", run_id=run_id, collection_id=collection_id,
                    cause=cause, detail=detail, sessions_terminated=sessions, jobs=len(outcomes),
                    failed_in_dagster=failed_in_dagster))


def fail_in_dagster(ledger: JobLedger, runs: RunStore, run_id: str, detail: str,
                    emit: Callable[[str], None]) -> bool:
    """Mark a dead run failed in Dagster (frees its run slot); recorded once done, so that a
    failure here is tried again by the next check."""
    try:
        failed = runs.fail(run_id, f"rag-pipeline declared this run dead: {detail}")
    except Exception as exc:
        emit(event_line("run_not_failed_in_dagster", run_id=run_id,
                        detail=f"{type(exc).__name__}: {exc}"))
        return False
    ledger.mark_failed_in_dagster(run_id)
    return failed


def sweep(ledger: JobLedger, runs: RunStore, max_retries: int, report: LivenessReport,
          emit: Callable[[str], None]) -> None:
    """What a half-ended run left: its jobs still `running`, its Dagster run not failed."""
    for run_id, collection_id in ledger.running_jobs_of_ended_runs():
        report.released(collection_id, release_jobs_of_run(
            ledger, [run_id], "its run had ended or was declared dead with the job running",
            max_retries, emit))
    for run_id, detail in ledger.dead_runs_not_failed_in_dagster():
        fail_in_dagster(ledger, runs, run_id, detail, emit)


def check_liveness(ledger: JobLedger, runs: RunStore, *, heartbeat_timeout_seconds: float,
                   start_timeout_seconds: float, max_retries: int,
                   emit: Callable[[str], None],
                   gone_after_seconds: float = GONE_AFTER_SECONDS) -> LivenessReport:
    """Declare dead every run that stopped showing life, and free what it held."""
    report = LivenessReport()
    for run_id, collection_id, silent, cause in ledger.silent_runs(heartbeat_timeout_seconds,
                                                                   gone_after_seconds):
        ended = runs.ended(run_id)
        if ended is not None:
            # It ended (its outcome was not recorded): nothing to stop, only jobs to free.
            ledger.finish_run(run_id, collection_id, ended)
            report.released(collection_id, release_jobs_of_run(
                ledger, [run_id], f"the run ended ({ended}) with jobs running", max_retries,
                emit))
            continue
        if cause == DeathCause.GONE:
            detail = (f"no heartbeat for {silent:.0f} s and no PostgreSQL session left: its "
                      "process is gone")
        else:
            detail = (f"no heartbeat for {silent:.0f} s (RUN_HEARTBEAT_TIMEOUT_SECONDS="
                      f"{heartbeat_timeout_seconds:.0f}); its process or host is gone")
        declare_dead(ledger, runs, run_id, collection_id, detail, cause, max_retries, report,
                     emit)
    candidates = runs.unbeaten_candidates(start_timeout_seconds)
    beating = ledger.beating_runs([c[0] for c in candidates]) if candidates else set()
    for run_id, collection_id, status in candidates:
        if run_id in beating:
            continue
        detail = (f"{status.lower()} for more than {start_timeout_seconds:.0f} s without a "
                  "first heartbeat (RUN_START_TIMEOUT_SECONDS); it never started working")
        declare_dead(ledger, runs, run_id, collection_id, detail, DeathCause.NEVER_STARTED,
                     max_retries, report, emit)
    sweep(ledger, runs, max_retries, report, emit)
    for collection_id in report.collections:
        ledger.nudge(collection_id)  # a new run_key: the staging sensor requests a run
    return report
