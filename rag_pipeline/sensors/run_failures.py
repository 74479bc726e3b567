"""Runs that failed or were canceled: their unfinished jobs are queued again (attempts+1), or
declared dead once attempts exceed MAX_RETRIES (dead letter + failed status to the Go backend).

Definitions only: the logic is `rag_pipeline.liveness.release.release_jobs_of_run`. These
sensors watch every job of the code location (the indexing jobs, a backfill, a
materialization of the assets from the UI): a run that holds no jobs is left alone. Runs
that die without Dagster noticing are found by `run_liveness` instead.
"""

from typing import Any

import dagster as dg

from rag_pipeline.dagster_runs import COLLECTION_TAG, run_family
from rag_pipeline.ledger import JobLedger
from rag_pipeline.liveness.release import release_jobs_of_run
from rag_pipeline.outbox import Outbox
from rag_pipeline.reconciliation import retry_if_failing_runs_below
from rag_pipeline.resources import ProcessingResource
from rag_pipeline.vocabulary import RunOutcome


def _release(context: Any, run: dg.DagsterRun, outcome: RunOutcome, detail: str,
             ledger: JobLedger, outbox: Outbox, processing: ProcessingResource) -> None:
    collection_id = run.tags.get(COLLECTION_TAG)
    if collection_id is None:
        return  # not a run of a collection (reconcile_stuck_jobs)
    if ledger.run_outcome(run.run_id) is None:
        ledger.finish_run(run.run_id, collection_id, outcome)
    outcomes = release_jobs_of_run(ledger, run_family(run), detail, processing.max_retries,
                                   context.log.warning)
    outbox.report(outcomes)
    if not outcomes:
        # The run died before it claimed anything; its run_key is spent. A new one, unless
        # the collection's runs keep dying (reconcile_stuck_jobs retries those later).
        retry_if_failing_runs_below(ledger, collection_id, processing.max_retries,
                                    context.log.warning)


def build_run_failure_sensors() -> list[dg.SensorDefinition]:
    @dg.run_failure_sensor(
        name="indexing_run_failed",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="A run of a collection failed: requeue its unfinished jobs, or declare "
        "them dead after MAX_RETRIES attempts.",
    )
    def indexing_run_failed(context: dg.RunFailureSensorContext,
                            ledger: dg.ResourceParam[JobLedger], outbox: dg.ResourceParam[Outbox],
                            processing: ProcessingResource) -> None:
        message = context.failure_event.message or "the run failed"
        _release(context, context.dagster_run, RunOutcome.FAILURE,
                 f"run failed: {message[:500]}", ledger, outbox, processing)

    @dg.run_status_sensor(
        name="indexing_run_canceled",
        run_status=dg.DagsterRunStatus.CANCELED,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="A run of a collection was canceled: requeue its unfinished jobs.",
    )
    def indexing_run_canceled(context: dg.RunStatusSensorContext,
                              ledger: dg.ResourceParam[JobLedger],
                              outbox: dg.ResourceParam[Outbox],
                              processing: ProcessingResource) -> None:
        _release(context, context.dagster_run, RunOutcome.CANCELED, "run canceled", ledger,
                 outbox, processing)

    return [indexing_run_failed, indexing_run_canceled]
