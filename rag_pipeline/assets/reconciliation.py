"""The `crawl_requests` asset, materialized by the `reconcile_stuck_jobs` job after its
repairs.

Definitions only: the repairs are `rag_pipeline.reconciliation`. The job runs on the
`reconcile_stuck_jobs` schedule (RECONCILE_CRON, every 5 minutes by default) and can be
launched by hand from the UI.
"""

import dagster as dg

from rag_pipeline.dagster_runs import ACTIVE_STATUSES, COLLECTION_TAG, runs_matching
from rag_pipeline.ledger import JobLedger
from rag_pipeline.observability.events import event_line
from rag_pipeline.outbox import Outbox
from rag_pipeline.reconciliation import (
    OPEN_REQUESTS_SHOWN,
    alias_table,
    crawl_table,
    drop_table,
    reconcile,
    summary_table,
    totals,
)
from rag_pipeline.resources import ProcessingResource
from rag_pipeline.settings import default_of
from rag_pipeline.vocabulary import OutboxState


class ReconcileConfig(dg.Config):
    queued_job_grace_seconds: int = default_of("queued_job_grace_seconds")


@dg.asset(
    group_name="operations",
    kinds={"postgres"},
    description="Jobs per state, every open crawl request (request_id) with the state "
    "of its jobs (total, completed, failed, dead, pending), the crawls the crawler has "
    "not said complete, and the collection each alias answers from. Materialized by "
    "reconcile_stuck_jobs after its repairs.",
)
def crawl_requests(context: dg.AssetExecutionContext, config: ReconcileConfig,
                   ledger: dg.ResourceParam[JobLedger], outbox: dg.ResourceParam[Outbox],
                   processing: ProcessingResource
                   ) -> dg.MaterializeResult:
    instance = context.instance

    def has_run(collection_id: str) -> bool:
        return bool(runs_matching(instance, dg.RunsFilter(
            tags={COLLECTION_TAG: collection_id}, statuses=list(ACTIVE_STATUSES)), limit=1))

    done = reconcile(ledger, outbox, has_run,
                     grace_seconds=config.queued_job_grace_seconds, log=context.log.warning)
    context.log.info(event_line("reconciled", collections_nudged=len(done.nudged),
                                outbox_delivered=done.delivery.delivered,
                                outbox_retrying=done.delivery.retried))
    metadata = {k: dg.MetadataValue.int(v) for k, v in totals(done).items()}
    metadata.update({
        "collections_nudged": dg.MetadataValue.int(len(done.nudged)),
        "outbox_delivered": dg.MetadataValue.int(done.delivery.delivered),
        "outbox_pending": dg.MetadataValue.int(done.outbox.get(OutboxState.PENDING, 0)),
        "outbox_rejected": dg.MetadataValue.int(done.outbox.get(OutboxState.REJECTED, 0)),
        "open_requests": dg.MetadataValue.md(summary_table(done.open_requests)),
        "crawls_incomplete": dg.MetadataValue.int(ledger.crawls_incomplete()),
        "incomplete_crawls": dg.MetadataValue.md(crawl_table(
            ledger.crawls(crawling_only=True, limit=OPEN_REQUESTS_SHOWN))),
        "aliases": dg.MetadataValue.md(alias_table(ledger.aliases(limit=OPEN_REQUESTS_SHOWN))),
        "drops": dg.MetadataValue.md(drop_table(ledger.drops(limit=OPEN_REQUESTS_SHOWN))),
    })
    return dg.MaterializeResult(metadata=metadata)
