"""The `retention` asset, materialized by the `apply_retention` job (RETENTION_CRON, daily).

Definitions only: what is pruned and what is kept is `rag_pipeline.retention`.
"""

import time

import dagster as dg

from rag_pipeline.ledger import JobLedger
from rag_pipeline.retention import RetentionReport, prune_dagster_runs, prune_ledger
from rag_pipeline.settings import default_of


class RetentionConfig(dg.Config):
    retention_days: float = default_of("retention_days")
    # A pass stops after this long; the next one goes on where it stopped.
    budget_seconds: float = 900.0


@dg.asset(
    group_name="operations",
    kinds={"postgres"},
    description="What retention removed: payloads (message, cleaned text) of jobs finished "
    "more than RETENTION_DAYS ago, and Dagster runs that ended before then (each job and "
    "partition keeps its latest success). Job rows, outcomes and LightRAG are kept.",
)
def retention(context: dg.AssetExecutionContext, config: RetentionConfig,
              ledger: dg.ResourceParam[JobLedger]) -> dg.MaterializeResult:
    if config.retention_days <= 0:
        context.log.info("RETENTION_DAYS is 0: everything is kept")
        return dg.MaterializeResult(metadata={"retention_days": 0})
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
    })
