"""Repairing whatever went wrong on the way (the `reconcile_stuck_jobs` job), and what a
run that died leaves behind (run-failure sensors).

- the `running` jobs of a run that failed or was canceled are queued again with attempts+1,
  or declared dead once attempts exceed MAX_RETRIES (dead letter + failed status); runs that
  die silently are the liveness check's (`liveness.py`);
- collections whose `queued` jobs have waited QUEUED_JOB_GRACE_SECONDS with no run are
  nudged, so that the sensor requests a new run;
- undelivered statuses are sent again; rejected ones are listed;
- per crawl request, a summary (total, completed, failed, dead, pending).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rag_pipeline.events import event_line
from rag_pipeline.ledger import JobLedger, JobOutcome, RequestSummary
from rag_pipeline.vocabulary import Reason


def release_jobs_of_run(ledger: JobLedger, run_ids: list[str], reason: str, max_retries: int,
                        log: Callable[[str], None]) -> list[JobOutcome]:
    """A run died: its running jobs go back to the queue, or to dead after MAX_RETRIES."""
    outcomes = ledger.requeue_jobs_of_runs(run_ids, Reason.RUN_FAILED, reason, max_retries)
    for o in outcomes:
        log(event_line("job_released", job_id=o.job_id, request_id=o.request_id,
                       collection_id=o.collection_id, run_id=run_ids[0], state=o.state,
                       reason=o.error_code, error=o.error_msg))
    return outcomes


def nudge_stale_collections(ledger: JobLedger, has_run: Callable[[str], bool], *,
                            grace_seconds: float, log: Callable[[str], None]) -> list[str]:
    """Collections whose queued jobs wait with no run: a new run_key for the sensor."""
    nudged = []
    for collection_id in ledger.stale_queued_collections(grace_seconds):
        if has_run(collection_id):
            continue
        ledger.nudge(collection_id)
        nudged.append(collection_id)
        log(event_line("collection_nudged", collection_id=collection_id,
                       reason=f"queued jobs waited more than {grace_seconds:.0f} s with no run"))
    return nudged


FAILED_RUN_WINDOW_SECONDS = 600


def retry_if_failing_runs_below(ledger: JobLedger, collection_id: str, limit: int,
                                log: Callable[[str], None]) -> bool:
    """Nudge a collection whose run failed before claiming jobs, unless its runs failed
    `limit` times in the last FAILED_RUN_WINDOW_SECONDS (then reconciliation retries later,
    at the pace of its schedule)."""
    failures = ledger.recent_failed_runs(collection_id, FAILED_RUN_WINDOW_SECONDS)
    if failures > limit:
        log(event_line("collection_not_retried", collection_id=collection_id,
                       reason=f"{failures} runs failed in {FAILED_RUN_WINDOW_SECONDS} s"))
        return False
    ledger.nudge(collection_id)
    log(event_line("collection_nudged", collection_id=collection_id,
                   reason="its run failed before claiming any job"))
    return True


def summary_table(summaries: list[RequestSummary], limit: int = 30) -> str:
    """A markdown table of crawl requests for the UI."""
    lines = ["| request_id | total | completed | failed | dead | pending | waiting since |",
             "|---:|---:|---:|---:|---:|---:|---|"]
    for s in summaries[:limit]:
        since = s.oldest_pending.isoformat(timespec="seconds") if s.oldest_pending else ""
        lines.append(f"| {s.request_id} | {s.total} | {s.completed} | {s.failed} | {s.dead} "
                     f"| {s.pending} | {since} |")
    if len(summaries) > limit:
        lines.append(f"| ... {len(summaries) - limit} more | | | | | | |")
    return "\n".join(lines)


def totals(summaries: list[RequestSummary]) -> dict[str, Any]:
    return {
        "requests": len(summaries),
        "requests_open": sum(1 for s in summaries if s.pending),
        "jobs_total": sum(s.total for s in summaries),
        "jobs_completed": sum(s.completed for s in summaries),
        "jobs_failed": sum(s.failed for s in summaries),
        "jobs_dead": sum(s.dead for s in summaries),
        "jobs_pending": sum(s.pending for s in summaries),
    }
