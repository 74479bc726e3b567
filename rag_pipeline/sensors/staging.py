"""`indexing_jobs_sensor`: stages Kafka messages into the ledger and requests runs.

Definitions only: staging is `rag_pipeline.staging.stage_messages`. Each tick:
1. stages what arrived (jobs + offsets in one ledger transaction; bad messages to the DLQ);
2. adds a `collections` partition per new collection;
3. requests one run per collection with queued jobs that no run will take: none waits in
   the queue for it and no running run of it still takes new jobs (`runs.accepting`);
   the run_key changes only when the waiting jobs change.
"""


from typing import Any

import dagster as dg

from rag_pipeline.events import event_line
from rag_pipeline.ledger import JobLedger, PendingCollection
from rag_pipeline.partitions import COLLECTION_TAG, collections_partitions
from rag_pipeline.resources import KafkaResource, ProcessingResource
from rag_pipeline.staging import stage_messages

# Runs that exist but have not claimed their jobs yet: another request would be redundant.
WAITING_RUN_STATUSES = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
                        dg.DagsterRunStatus.STARTING]
# A running run takes its collection's new jobs while it beats within this many seconds
# (it beats every 5 s); one that died is left out sooner than the liveness check declares it.
ACCEPTING_FRESH_SECONDS = 15.0


def waiting_collections(instance: dg.DagsterInstance, job_name: str) -> set[str]:
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name,
                                                   statuses=WAITING_RUN_STATUSES))
    return {run.tags[COLLECTION_TAG] for run in runs if COLLECTION_TAG in run.tags}


def run_requests(pending: list[PendingCollection], waiting: set[str]) -> list[dg.RunRequest]:
    return [
        dg.RunRequest(partition_key=p.collection_id, run_key=p.run_key,
                      tags={COLLECTION_TAG: p.collection_id})
        for p in pending if p.collection_id not in waiting
    ]


def build_indexing_jobs_sensor(job: Any,
                               interval_seconds: int) -> dg.SensorDefinition:
    """`job` is the asset job the sensor requests (index_collection)."""

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
        known = set(context.instance.get_dynamic_partitions(collections_partitions.name))
        new_partitions = sorted({p.collection_id for p in pending} - known)
        taken = (waiting_collections(context.instance, job.name)
                 | ledger.accepting_collections(ACCEPTING_FRESH_SECONDS))
        requests = run_requests(pending, taken)
        line = event_line("sensor_tick", **report.summary(), runs_requested=len(requests),
                          new_partitions=len(new_partitions))
        context.log.info(line)
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=(
                [collections_partitions.build_add_request(new_partitions)]
                if new_partitions else []
            ),
            # The cursor is not needed for correctness (offsets live in the ledger); it shows
            # the last tick's figures in the UI.
            cursor=line,
        )

    return indexing_jobs_sensor
