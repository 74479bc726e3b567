"""`indexing_jobs_sensor`: stages Kafka messages into the ledger and requests runs.

Definitions only: staging is `rag_pipeline.staging.stage_messages`. Each tick:
1. stages what arrived (jobs + offsets in one ledger transaction; bad messages to the DLQ);
2. adds a `collections` partition per new collection;
3. requests one run per collection with queued jobs that no run will take: none waits in
   the queue for it and no running run of it still takes new jobs (`runs.accepting`);
   the run_key changes only when the waiting jobs change;
4. and one per collection whose crawl is complete and done but not released yet (its
   alias moves to it at the end of that run: indexing/renewal.py);
5. deletes the partition of a collection dropped outside Dagster (`rag-pipeline drop`).
"""


from typing import Any

import dagster as dg

from rag_pipeline.dagster_runs import (
    COLLECTION_TAG,
    WAITING_STATUSES,
    KnownPartitions,
    collections_partitions,
    runs_matching,
)
from rag_pipeline.ledger import JobLedger, PendingCollection
from rag_pipeline.observability.events import event_line
from rag_pipeline.resources import KafkaResource, ProcessingResource
from rag_pipeline.staging import stage_messages


def waiting_collections(instance: dg.DagsterInstance, job_name: str) -> set[str]:
    # Runs that exist but have not claimed their jobs yet: another request would be redundant.
    runs = runs_matching(instance, dg.RunsFilter(job_name=job_name,
                                                          statuses=list(WAITING_STATUSES)))
    return {run.tags[COLLECTION_TAG] for run in runs if COLLECTION_TAG in run.tags}


def taken_collections(instance: dg.DagsterInstance, job_name: str,
                      ledger: JobLedger) -> set[str]:
    """Collections whose queued jobs a run will take: one waits in the queue, or one is
    running and still takes new jobs (it has not cleared `runs.accepting`, finished or been
    declared dead; a run that started but has not beaten yet is about to take them)."""
    # Runs of any job (a backfill or a materialization from the UI writes a collection too).
    started = {run.run_id: run.tags[COLLECTION_TAG] for run in runs_matching(
        instance, dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        if COLLECTION_TAG in run.tags}
    released = ledger.runs_not_accepting(list(started)) if started else set()
    return waiting_collections(instance, job_name) | {
        collection for run_id, collection in started.items() if run_id not in released}


def run_requests(pending: list[PendingCollection], releasing: list[tuple[str, int]],
                 waiting: set[str]) -> list[dg.RunRequest]:
    keys = [(p.collection_id, p.run_key) for p in pending]
    keys += [(c, f"{c}:release:{runs}") for c, runs in releasing]
    return [dg.RunRequest(partition_key=c, run_key=key, tags={COLLECTION_TAG: c})
            for c, key in keys if c not in waiting]


def dropped_partitions(instance: dg.DagsterInstance, ledger: JobLedger) -> list[str]:
    """Partitions of dropped collections still to delete; those already gone are noted."""
    keys = ledger.partitions_to_remove()
    present = [k for k in keys if instance.has_dynamic_partition(collections_partitions.name, k)]
    if len(present) < len(keys):
        ledger.partitions_removed(set(keys) - set(present))
    return present


def build_indexing_jobs_sensor(job: Any,
                               interval_seconds: int) -> dg.SensorDefinition:
    """`job` is the asset job the sensor requests (index_collection)."""
    partitions = KnownPartitions()

    @dg.sensor(
        name="indexing_jobs_sensor",
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Stages indexing_jobs messages into the ledger (exactly once) and "
        "requests one index_collection run per collection with queued pages that no "
        "run will take.",
    )
    def indexing_jobs_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource,
                             ledger: dg.ResourceParam[JobLedger],
                             processing: ProcessingResource) -> dg.SensorResult:
        with kafka.consumer() as consumer, kafka.producer() as producer:
            report = stage_messages(consumer=consumer, producer=producer, ledger=ledger,
                                    config=processing.staging_config(kafka),
                                    budget=kafka.budget)
        pending = ledger.pending_collections()
        releasing = [(c, n) for c, n in ledger.ready_to_release()
                     if c not in {p.collection_id for p in pending}]
        new_partitions = partitions.missing(
            context.instance, [*(p.collection_id for p in pending), *(c for c, _ in releasing)])
        requests = run_requests(pending, releasing,
                                taken_collections(context.instance, job.name, ledger))
        dropped = dropped_partitions(context.instance, ledger)
        line = event_line("sensor_tick", **report.summary(), runs_requested=len(requests),
                          new_partitions=len(new_partitions), partitions_removed=len(dropped))
        context.log.info(line)
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=(
                ([collections_partitions.build_add_request(new_partitions)]
                 if new_partitions else [])
                + ([collections_partitions.build_delete_request(dropped)] if dropped else [])
            ),
            # The cursor is not needed for correctness (offsets live in the ledger); it shows
            # the last tick's figures in the UI.
            cursor=line,
        )

    return indexing_jobs_sensor
