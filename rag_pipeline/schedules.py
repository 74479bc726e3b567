"""The schedule of the code location: `reconcile_stuck_jobs` every few minutes."""

from __future__ import annotations

import dagster as dg

from rag_pipeline.jobs import reconcile_stuck_jobs_job


def build_reconcile_schedule(cron: str, queued_job_grace_seconds: int
                             ) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="reconcile_stuck_jobs_schedule",
        job=reconcile_stuck_jobs_job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        run_config={"ops": {"crawl_requests": {"config": {
            "queued_job_grace_seconds": queued_job_grace_seconds}}}},
        description="Runs reconcile_stuck_jobs (RECONCILE_CRON).",
    )
