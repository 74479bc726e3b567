"""`run_liveness`: runs that stopped showing life are declared dead, failed in Dagster, and
their collections freed (invariant 9).

Definitions only: the check is `rag_pipeline.liveness.check_liveness`; `InstanceRuns` is
its view of Dagster's run storage. The sensor runs in the code server and reaches runs only
through the ledger and the instance's storage, so it works whatever launcher started them
and wherever they run.
"""

from __future__ import annotations

import contextlib
import json
import time

import dagster as dg

from rag_pipeline.ledger import JobLedger
from rag_pipeline.liveness.leases import check_liveness
from rag_pipeline.observability.events import event_line
from rag_pipeline.partitions import COLLECTION_TAG
from rag_pipeline.resources import KafkaResource, OutboxResource, ProcessingResource

LIVENESS_INTERVAL_SECONDS = 5
S = dg.DagsterRunStatus
STARTING_OR_STARTED = [S.STARTING, S.STARTED]


class InstanceRuns:
    """`liveness.RunStore` on a Dagster instance."""

    def __init__(self, instance: dg.DagsterInstance,
                 unblocked_since: dict[str, float] | None = None) -> None:
        self.instance = instance
        # Queued runs first seen with nothing in their way (run_id -> time): a queued run is
        # timed from that moment, not from its creation (it may wait legitimately for long).
        self.unblocked_since = dict(unblocked_since or {})

    def status(self, run_id: str) -> str | None:
        run = self.instance.get_run_by_id(run_id)
        return run.status.value if run is not None else None

    def fail(self, run_id: str, message: str) -> bool:
        run = self.instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self.instance.report_run_failed(run, message)
        return True

    def _max_concurrent_runs(self) -> int | None:
        with contextlib.suppress(Exception):  # a run coordinator without a queue
            return self.instance.get_concurrency_config().run_queue_config.max_concurrent_runs
        return None

    def unbeaten_candidates(self, older_than_seconds: float) -> list[tuple[str, str, str]]:
        now = time.time()
        records = self.instance.get_run_records(
            filters=dg.RunsFilter(statuses=[*STARTING_OR_STARTED, S.QUEUED]))
        # Every run in progress takes a slot, tagged or not (reconcile_stuck_jobs too).
        in_progress = [r for r in records if r.dagster_run.status in STARTING_OR_STARTED]
        active = [r for r in records if COLLECTION_TAG in r.dagster_run.tags]
        busy = {r.dagster_run.tags[COLLECTION_TAG] for r in in_progress
                if COLLECTION_TAG in r.dagster_run.tags}
        slots = self._max_concurrent_runs()
        free_slot = slots is not None and len(in_progress) < slots
        found = []
        unblocked: dict[str, float] = {}
        for record in active:
            run = record.dagster_run
            collection_id = run.tags[COLLECTION_TAG]
            if run.status == S.STARTED:
                since = record.start_time or record.update_timestamp.timestamp()
            elif run.status == S.STARTING:
                since = record.update_timestamp.timestamp()
            elif free_slot and collection_id not in busy:  # QUEUED with nothing in its way
                since = unblocked[run.run_id] = self.unblocked_since.get(run.run_id, now)
            else:
                continue
            if now - since > older_than_seconds:
                found.append((run.run_id, collection_id, run.status.value))
        self.unblocked_since = unblocked
        return found


@dg.sensor(
    name="run_liveness",
    minimum_interval_seconds=LIVENESS_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Declares dead the indexing runs that stopped beating "
    "(RUN_HEARTBEAT_TIMEOUT_SECONDS) or never started (RUN_START_TIMEOUT_SECONDS): fails "
    "them in Dagster, requeues their jobs and takes their collection lock away.",
)
def run_liveness(context: dg.SensorEvaluationContext, ledger: dg.ResourceParam[JobLedger],
                 kafka: KafkaResource, outbox: OutboxResource,
                 processing: ProcessingResource) -> dg.SensorResult:
    runs = InstanceRuns(context.instance, json.loads(context.cursor or "{}"))
    report = check_liveness(ledger, runs,
                            heartbeat_timeout_seconds=processing.run_heartbeat_timeout_seconds,
                            start_timeout_seconds=processing.run_start_timeout_seconds,
                            max_retries=processing.max_retries, emit=context.log.warning)
    outbox.bind(ledger, kafka).report(report.outcomes)  # dead letters of jobs now dead
    line = event_line("liveness_checked", runs_declared_dead=len(report.declared_dead),
                      jobs_requeued=report.jobs_requeued, jobs_dead=report.jobs_dead)
    return dg.SensorResult(skip_reason=line, cursor=json.dumps(runs.unblocked_since))
