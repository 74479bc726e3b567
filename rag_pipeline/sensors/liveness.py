"""`run_liveness`: runs that stopped showing life are declared dead, failed in Dagster, and
their collections freed (invariant 9).

Definitions only: the check is `rag_pipeline.liveness.check.check_liveness`, the
never-started rule `liveness.never_started`; `InstanceRuns` is their view of Dagster's run
storage. The sensor runs in the code server and reaches runs only through the ledger and the
instance's storage, so it works whatever launcher started them and wherever they run.
"""

from __future__ import annotations

import json
import time

import dagster as dg

from rag_pipeline import dagster_internals
from rag_pipeline.dagster_runs import (
    COLLECTION_TAG,
    IN_PROGRESS_STATUSES,
    OUTCOME_OF_STATUS,
)
from rag_pipeline.ledger import JobLedger
from rag_pipeline.liveness.check import check_liveness
from rag_pipeline.liveness.never_started import SeenRun, never_started
from rag_pipeline.observability.events import event_line
from rag_pipeline.outbox import Outbox
from rag_pipeline.resources import ProcessingResource
from rag_pipeline.vocabulary import RunOutcome

LIVENESS_INTERVAL_SECONDS = 5


class InstanceRuns:
    """`liveness.check.RunStore` on a Dagster instance."""

    def __init__(self, instance: dg.DagsterInstance,
                 unblocked_since: dict[str, float] | None = None) -> None:
        self.instance = instance
        # Queued runs first seen with nothing in their way (run_id -> time).
        self.unblocked_since = dict(unblocked_since or {})

    def ended(self, run_id: str) -> RunOutcome | None:
        run = self.instance.get_run_by_id(run_id)
        return OUTCOME_OF_STATUS.get(run.status) if run is not None else None

    def fail(self, run_id: str, message: str) -> bool:
        run = self.instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        dagster_internals.report_run_failed(self.instance, run, message)
        return True

    def unbeaten_candidates(self, older_than_seconds: float) -> list[tuple[str, str, str]]:
        records = self.instance.get_run_records(
            filters=dg.RunsFilter(statuses=[*IN_PROGRESS_STATUSES, dg.DagsterRunStatus.QUEUED]))
        # Every run in progress takes a slot, tagged or not (reconcile_stuck_jobs too).
        in_progress = sum(1 for r in records if r.dagster_run.status in IN_PROGRESS_STATUSES)
        seen = [SeenRun(r.dagster_run.run_id, r.dagster_run.tags[COLLECTION_TAG],
                        r.dagster_run.status.value, r.start_time,
                        r.update_timestamp.timestamp())
                for r in records if COLLECTION_TAG in r.dagster_run.tags]
        result = never_started(
            seen, in_progress=in_progress,
            max_concurrent_runs=dagster_internals.max_concurrent_runs(self.instance),
            unblocked_since=self.unblocked_since, now=time.time(),
            older_than_seconds=older_than_seconds)
        self.unblocked_since = result.unblocked_since
        return result.candidates


@dg.sensor(
    name="run_liveness",
    minimum_interval_seconds=LIVENESS_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Declares dead the indexing runs that stopped beating "
    "(RUN_HEARTBEAT_TIMEOUT_SECONDS) or never started (RUN_START_TIMEOUT_SECONDS): fails "
    "them in Dagster, requeues their jobs and takes their collection lock away.",
)
def run_liveness(context: dg.SensorEvaluationContext, ledger: dg.ResourceParam[JobLedger],
                 outbox: dg.ResourceParam[Outbox],
                 processing: ProcessingResource) -> dg.SensorResult:
    runs = InstanceRuns(context.instance, json.loads(context.cursor or "{}"))
    timeouts = processing.liveness
    report = check_liveness(ledger, runs,
                            heartbeat_timeout_seconds=timeouts.run_heartbeat_timeout_seconds,
                            start_timeout_seconds=timeouts.run_start_timeout_seconds,
                            max_retries=timeouts.max_retries, emit=context.log.warning)
    outbox.report(report.outcomes)  # dead letters of jobs now dead
    line = event_line("liveness_checked", runs_declared_dead=len(report.declared_dead),
                      jobs_requeued=report.jobs_requeued, jobs_dead=report.jobs_dead)
    return dg.SensorResult(skip_reason=line, cursor=json.dumps(runs.unblocked_since))
