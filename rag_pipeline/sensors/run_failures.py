"""Runs that failed or were canceled: their unfinished jobs are queued again (attempts+1), or
declared dead once attempts exceed MAX_RETRIES (dead letter + failed status to the Go backend).

Definitions only: the logic is `rag_pipeline.reconciliation.release_jobs_of_run`. These
sensors watch every job of the code location (the indexing jobs, a backfill, a
materialization of the assets from the UI): a run that holds no jobs is left alone. Runs
that die without Dagster noticing are found by `run_liveness` instead.
"""

from typing import Any

import dagster as dg

from rag_pipeline.ledger import JobLedger
from rag_pipeline.partitions import COLLECTION_TAG
from rag_pipeline.reconciliation import release_jobs_of_run, retry_if_failing_runs_below
from rag_pipeline.resources import KafkaResource, OutboxResource, ProcessingResource


def _release(context: Any, run: dg.DagsterRun, outcome: str, reason: str, ledger: JobLedger,
             kafka: KafkaResource, outbox: OutboxResource,
             processing: ProcessingResource) -> None:
    collection_id = run.tags.get(COLLECTION_TAG)
    if collection_id is None:
        return  # not a run of a collection (reconcile_stuck_jobs)
    if ledger.run_outcome(run.run_id) is None:
        ledger.finish_run(run.run_id, collection_id, outcome)
    family = [r for r in (run.run_id, run.parent_run_id, run.root_run_id) if r]
    outcomes = release_jobs_of_run(ledger, family, reason, processing.max_retries,
                                   context.log.warning)
    outbox.bind(ledger, kafka).report(outcomes)
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
                            ledger: dg.ResourceParam[JobLedger], kafka: KafkaResource,
                            outbox: OutboxResource, processing: ProcessingResource) -> None:
        message = context.failure_event.message or "the run failed"
        _release(context, context.dagster_run, "failure", f"run failed: {message[:500]}",
                 ledger, kafka, outbox, processing)

    @dg.run_status_sensor(
        name="indexing_run_canceled",
        run_status=dg.DagsterRunStatus.CANCELED,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="A run of a collection was canceled: requeue its unfinished jobs.",
    )
    def indexing_run_canceled(context: dg.RunStatusSensorContext,
                              ledger: dg.ResourceParam[JobLedger], kafka: KafkaResource,
                              outbox: OutboxResource, processing: ProcessingResource) -> None:
        _release(context, context.dagster_run, "canceled", "run canceled", ledger, kafka,
                 outbox, processing)

    return [indexing_run_failed, indexing_run_canceled]
