"""The `retention` asset, materialized by the `apply_retention` job (RETENTION_CRON, daily).

Definitions only: what is pruned and what is kept is `rag_pipeline.retention`; retiring
superseded collections is `rag_pipeline.removal.retire_superseded`.
"""

import time

import dagster as dg

from rag_pipeline.assets.collections import DROP_LOCK_WAIT_SECONDS, remove_partition
from rag_pipeline.ledger import JobLedger
from rag_pipeline.observability.events import event_line
from rag_pipeline.removal import DropReport, retire_superseded
from rag_pipeline.resources.lightrag import LightRAGResource
from rag_pipeline.resources.processing import ProcessingResource
from rag_pipeline.retention import RetentionReport, prune_dagster_runs, prune_ledger
from rag_pipeline.settings import default_of


class RetentionConfig(dg.Config):
    retention_days: float = default_of("retention_days")
    retire_superseded_after_seconds: float = default_of("retire_superseded_after_seconds")
    # A pass stops after this long; the next one goes on where it stopped.
    budget_seconds: float = 900.0


@dg.asset(
    group_name="operations",
    kinds={"postgres"},
    description="What retention removed: collections superseded under their alias more than "
    "RETIRE_SUPERSEDED_AFTER_SECONDS ago (dropped: every LightRAG row, documents, payloads, "
    "partition), payloads (message, cleaned text) of jobs finished more than RETENTION_DAYS "
    "ago, and Dagster runs that ended before then (each job and partition keeps its latest "
    "success). Job rows and outcomes are kept.",
)
def retention(context: dg.AssetExecutionContext, config: RetentionConfig,
              ledger: dg.ResourceParam[JobLedger], lightrag: LightRAGResource,
              processing: ProcessingResource) -> dg.MaterializeResult:
    def retired(report: DropReport) -> None:
        remove_partition(context.instance, ledger, report.drop.collection_id)
        context.log.info(event_line("collection_dropped", collection_id=report.drop.collection_id,
                                    cause=report.drop.cause, rows=report.rows_removed,
                                    bytes=report.bytes_removed))

    drops = retire_superseded(
        ledger, config.retire_superseded_after_seconds,
        lambda c: ledger.writer_lock(c, DROP_LOCK_WAIT_SECONDS),
        max_retries=processing.max_retries, graph_storage=lightrag.lightrag_graph_storage,
        dropped=retired)
    retirement = {
        "collections_retired": dg.MetadataValue.int(len(drops)),
        "retired": dg.MetadataValue.md("\n".join(
            f"- {d.drop.collection_id} ({d.drop.alias}): {d.rows_removed} rows, "
            f"{d.bytes_removed} bytes" for d in drops) or "none"),
        "retired_rows_removed": dg.MetadataValue.int(sum(d.rows_removed for d in drops)),
        "retired_bytes_removed": dg.MetadataValue.int(sum(d.bytes_removed for d in drops)),
    }
    if config.retention_days <= 0:
        context.log.info("RETENTION_DAYS is 0: every payload and run is kept")
        return dg.MaterializeResult(metadata={"retention_days": 0, **retirement})
    report = RetentionReport()
    deadline = time.monotonic() + config.budget_seconds
    prune_ledger(ledger, config.retention_days, deadline, report, context.log.info)
    prune_dagster_runs(context.instance, config.retention_days, deadline, report,
                       context.log.info)
    return dg.MaterializeResult(metadata={
        "retention_days": dg.MetadataValue.float(config.retention_days),
        "jobs_pruned": dg.MetadataValue.int(report.jobs_pruned),
        "payload_bytes_pruned": dg.MetadataValue.int(report.bytes_pruned),
        "runs_deleted": dg.MetadataValue.int(report.runs_deleted),
        "runs_kept_latest": dg.MetadataValue.int(report.runs_kept),
        "finished": dg.MetadataValue.bool(report.finished),
        **retirement,
    })
