"""The schedules of the code location: `reconcile_stuck_jobs` every few minutes,
`apply_retention` daily."""

from __future__ import annotations

import dagster as dg

from rag_pipeline.jobs import apply_retention_job, reconcile_stuck_jobs_job


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


def build_retention_schedule(cron: str, retention_days: float,
                             retire_superseded_after_seconds: float) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="apply_retention_schedule",
        job=apply_retention_job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        run_config={"ops": {"retention": {"config": {
            "retention_days": retention_days,
            "retire_superseded_after_seconds": retire_superseded_after_seconds}}}},
        description="Runs apply_retention (RETENTION_CRON) with RETENTION_DAYS and "
        "RETIRE_SUPERSEDED_AFTER_SECONDS.",
    )
