"""Runs that died: their unfinished jobs are queued again (attempts+1), or declared dead
once attempts exceed MAX_RETRIES (dead letter + failed status to the Go backend).

Definitions only: the logic is `rag_pipeline.reconciliation.release_jobs_of_run`.
"""

from typing import Any

import dagster as dg

from rag_pipeline.ledger import JobLedger
from rag_pipeline.partitions import COLLECTION_TAG
from rag_pipeline.reconciliation import release_jobs_of_run, retry_if_failing_runs_below
from rag_pipeline.resources import KafkaResource, OutboxResource, ProcessingResource


def _release(context: Any, run: dg.DagsterRun, reason: str, ledger: JobLedger,
             kafka: KafkaResource, outbox: OutboxResource,
             processing: ProcessingResource) -> None:
    family = [r for r in (run.run_id, run.parent_run_id, run.root_run_id) if r]
    outcomes = release_jobs_of_run(ledger, family, reason, processing.max_retries,
                                   context.log.warning)
    outbox.bind(ledger, kafka).report(outcomes, context.log.warning)
    collection_id = run.tags.get(COLLECTION_TAG)
    if not outcomes and collection_id:
        # The run died before it claimed anything; its run_key is spent. A new one, unless
        # the collection's runs keep dying (reconcile_stuck_jobs retries those later).
        retry_if_failing_runs_below(ledger, collection_id, processing.max_retries,
                                    context.log.warning)


def build_run_failure_sensors(jobs: list[Any]) -> list[dg.SensorDefinition]:
    @dg.run_failure_sensor(
        name="indexing_run_failed",
        monitored_jobs=jobs,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="An indexing run failed: requeue its unfinished jobs, or declare them "
        "dead after MAX_RETRIES attempts.",
    )
    def indexing_run_failed(context: dg.RunFailureSensorContext,
                            ledger: dg.ResourceParam[JobLedger], kafka: KafkaResource,
                            outbox: OutboxResource, processing: ProcessingResource) -> None:
        message = context.failure_event.message or "the run failed"
        _release(context, context.dagster_run, f"run failed: {message[:500]}", ledger, kafka,
                 outbox, processing)

    @dg.run_status_sensor(
        name="indexing_run_canceled",
        run_status=dg.DagsterRunStatus.CANCELED,
        monitored_jobs=jobs,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="An indexing run was canceled: requeue its unfinished jobs.",
    )
    def indexing_run_canceled(context: dg.RunStatusSensorContext,
                              ledger: dg.ResourceParam[JobLedger], kafka: KafkaResource,
                              outbox: OutboxResource, processing: ProcessingResource) -> None:
        _release(context, context.dagster_run, "run canceled", ledger, kafka, outbox,
                 processing)

    return [indexing_run_failed, indexing_run_canceled]
