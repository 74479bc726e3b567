"""Operations: the `crawl_requests` asset, kept true by the `reconcile_stuck_jobs` job.

Definitions only: the repairs are `rag_pipeline.reconciliation`. The job runs on the
`reconcile_stuck_jobs` schedule (RECONCILE_CRON, every 5 minutes by default) and can be
launched by hand from the UI.
"""

import dagster as dg

from rag_pipeline.callbacks import deliver_callbacks
from rag_pipeline.events import event_line
from rag_pipeline.partitions import COLLECTION_TAG
from rag_pipeline.reconciliation import (
    nudge_stale_collections,
    reconcile_runs,
    summary_table,
    totals,
)
from rag_pipeline.resources import (
    KafkaResource,
    LedgerResource,
    ProcessingResource,
    StatusApiResource,
    report_outcomes,
)

ACTIVE_RUN_STATUSES = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
                       dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
# How many undelivered statuses one reconciliation sends at most, and for how long.
DELIVERY_LIMIT = 5000
DELIVERY_SECONDS = 120.0


class ReconcileConfig(dg.Config):
    stuck_run_timeout_seconds: int = 900
    queued_job_grace_seconds: int = 120


@dg.asset(
    group_name="operations",
    kinds={"postgres"},
    description="Every crawl request (request_id) and the state of its jobs: total, "
    "completed, failed, dead, pending. Materialized by reconcile_stuck_jobs after its repairs.",
)
def crawl_requests(context: dg.AssetExecutionContext, config: ReconcileConfig,
                   ledger: LedgerResource, kafka: KafkaResource, status_api: StatusApiResource,
                   processing: ProcessingResource) -> dg.MaterializeResult:
    instance = context.instance

    def run_status(run_id: str) -> str | None:
        run = instance.get_run_by_id(run_id)
        return run.status.value if run is not None else None

    def has_run(collection_id: str) -> bool:
        return bool(instance.get_run_ids(filters=dg.RunsFilter(
            tags={COLLECTION_TAG: collection_id}, statuses=ACTIVE_RUN_STATUSES), limit=1))

    log = context.log.warning
    report = reconcile_runs(ledger.ledger, run_status,
                            stuck_after_seconds=config.stuck_run_timeout_seconds,
                            max_retries=processing.max_retries, log=log)
    released = report_outcomes(ledger, kafka, status_api, report.outcomes, log)
    nudged = nudge_stale_collections(ledger.ledger, has_run,
                                     grace_seconds=config.queued_job_grace_seconds, log=log)
    with status_api.client() as client:
        delivery = deliver_callbacks(ledger.ledger, client, status_api.policy,
                                     limit=DELIVERY_LIMIT, deadline_seconds=DELIVERY_SECONDS,
                                     log_event=log)
    delivery.add(released)
    rejected = ledger.ledger.rejected_callbacks()
    for row in rejected:
        context.log.info(event_line("status_rejected_listed", job_id=row["job_id"],
                                    status=row["status"], http_status=row["response_code"]))
    summaries = ledger.ledger.request_summaries()
    outbox = ledger.ledger.outbox_counts()
    context.log.info(event_line("reconciled", runs_declared_dead=len(report.runs_declared_dead),
                                jobs_requeued=report.jobs_requeued, jobs_dead=report.jobs_dead,
                                collections_nudged=len(nudged),
                                statuses_delivered=delivery.delivered,
                                statuses_retrying=delivery.retried))
    metadata = {k: dg.MetadataValue.int(v) for k, v in totals(summaries).items()}
    metadata.update({
        "runs_declared_dead": dg.MetadataValue.int(len(report.runs_declared_dead)),
        "jobs_requeued": dg.MetadataValue.int(report.jobs_requeued),
        "jobs_dead": dg.MetadataValue.int(report.jobs_dead),
        "collections_nudged": dg.MetadataValue.int(len(nudged)),
        "statuses_delivered": dg.MetadataValue.int(delivery.delivered),
        "statuses_retrying": dg.MetadataValue.int(outbox.get("pending", 0)),
        "statuses_rejected": dg.MetadataValue.int(outbox.get("rejected", 0)),
        "open_requests": dg.MetadataValue.md(
            summary_table([s for s in summaries if s.pending or s.failed or s.dead])),
    })
    return dg.MaterializeResult(metadata=metadata)


reconcile_stuck_jobs_job = dg.define_asset_job(
    "reconcile_stuck_jobs",
    selection=dg.AssetSelection.assets(crawl_requests),
    description="Requeue the jobs of dead runs (or declare them dead), nudge collections "
    "whose queued jobs have no run, redeliver statuses, summarise every crawl request.",
)


def build_reconcile_schedule(cron: str, stuck_run_timeout_seconds: int,
                             queued_job_grace_seconds: int) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="reconcile_stuck_jobs_schedule",
        job=reconcile_stuck_jobs_job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        run_config={"ops": {"crawl_requests": {"config": {
            "stuck_run_timeout_seconds": stuck_run_timeout_seconds,
            "queued_job_grace_seconds": queued_job_grace_seconds}}}},
        description="Runs reconcile_stuck_jobs (RECONCILE_CRON).",
    )
