"""The `crawl_requests` asset, materialized by the `reconcile_stuck_jobs` job after its
repairs.

Definitions only: the repairs are `rag_pipeline.reconciliation`. The job runs on the
`reconcile_stuck_jobs` schedule (RECONCILE_CRON, every 5 minutes by default) and can be
launched by hand from the UI.
"""

import dagster as dg

from rag_pipeline.events import event_line
from rag_pipeline.ledger import JobLedger
from rag_pipeline.partitions import COLLECTION_TAG
from rag_pipeline.reconciliation import nudge_stale_collections, summary_table, totals
from rag_pipeline.resources import KafkaResource, OutboxResource, ProcessingResource
from rag_pipeline.vocabulary import OutboxState

ACTIVE_RUN_STATUSES = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
                       dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
# How many undelivered statuses one reconciliation sends at most, and for how long.
DELIVERY_LIMIT = 5000
DELIVERY_SECONDS = 120.0


class ReconcileConfig(dg.Config):
    queued_job_grace_seconds: int = 120


@dg.asset(
    group_name="operations",
    kinds={"postgres"},
    description="Every crawl request (request_id) and the state of its jobs: total, "
    "completed, failed, dead, pending. Materialized by reconcile_stuck_jobs after its repairs.",
)
def crawl_requests(context: dg.AssetExecutionContext, config: ReconcileConfig,
                   ledger: dg.ResourceParam[JobLedger], kafka: KafkaResource,
                   outbox: OutboxResource, processing: ProcessingResource
                   ) -> dg.MaterializeResult:
    instance = context.instance

    def has_run(collection_id: str) -> bool:
        return bool(instance.get_run_ids(filters=dg.RunsFilter(
            tags={COLLECTION_TAG: collection_id}, statuses=ACTIVE_RUN_STATUSES), limit=1))

    log = context.log.warning
    reporter = outbox.bind(ledger, kafka)
    nudged = nudge_stale_collections(ledger, has_run,
                                     grace_seconds=config.queued_job_grace_seconds, log=log)
    delivery = reporter.deliver(limit=DELIVERY_LIMIT, deadline_seconds=DELIVERY_SECONDS,
                                log_event=log)
    for row in ledger.rejected_outbox():
        context.log.info(event_line("outbox_rejected_listed", job_id=row["job_id"],
                                    status=row["status"], http_status=row["response_code"]))
    summaries = ledger.request_summaries()
    counts = ledger.outbox_counts()
    context.log.info(event_line("reconciled", collections_nudged=len(nudged),
                                outbox_delivered=delivery.delivered,
                                outbox_retrying=delivery.retried))
    metadata = {k: dg.MetadataValue.int(v) for k, v in totals(summaries).items()}
    metadata.update({
        "collections_nudged": dg.MetadataValue.int(len(nudged)),
        "outbox_delivered": dg.MetadataValue.int(delivery.delivered),
        "outbox_pending": dg.MetadataValue.int(counts.get(OutboxState.PENDING, 0)),
        "outbox_rejected": dg.MetadataValue.int(counts.get(OutboxState.REJECTED, 0)),
        "open_requests": dg.MetadataValue.md(
            summary_table([s for s in summaries if s.pending or s.failed or s.dead])),
    })
    return dg.MaterializeResult(metadata=metadata)
