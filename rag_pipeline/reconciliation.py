"""Repairing whatever went wrong on the way (the `reconcile_stuck_jobs` job), and what a
run that died leaves behind (run-failure sensors).

- (a run that failed, was canceled or died gives its jobs back through
  `liveness.release`; see `sensors/run_failures.py` and `liveness/check.py`);
- collections whose `queued` jobs have waited QUEUED_JOB_GRACE_SECONDS with no run are
  nudged, so that the sensor requests a new run;
- undelivered statuses are sent again; rejected ones are listed;
- open crawl requests (total, completed, failed, dead, pending) and jobs per state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from rag_pipeline.ledger import CrawlSummary, Drop, JobLedger, RequestSummary
from rag_pipeline.observability.events import event_line
from rag_pipeline.outbox import DeliveryReport, Outbox
from rag_pipeline.vocabulary import JobState

# How many undelivered statuses one reconciliation sends at most, and for how long.
DELIVERY_LIMIT = 5000
DELIVERY_SECONDS = 120.0
# Open crawl requests listed (longest waiting first).
OPEN_REQUESTS_SHOWN = 30


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
                       detail=f"queued jobs waited more than {grace_seconds:.0f} s with no run"))
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
                       detail=f"{failures} runs failed in {FAILED_RUN_WINDOW_SECONDS} s"))
        return False
    ledger.nudge(collection_id)
    log(event_line("collection_nudged", collection_id=collection_id,
                   detail="its run failed before claiming any job"))
    return True


@dataclass
class Reconciled:
    """What one reconciliation did and saw."""

    nudged: list[str]
    delivery: DeliveryReport
    open_requests: list[RequestSummary]
    jobs: dict[str, int]  # per state, all collections
    outbox: dict[str, int]  # per state


def reconcile(ledger: JobLedger, reporter: Outbox, has_run: Callable[[str], bool], *,
              grace_seconds: float, log: Callable[[str], None]) -> Reconciled:
    """The repairs of `reconcile_stuck_jobs`, then what it reports: each part reads what is
    in flight or a state count, never the history (docs/benchmarks.md, "Cost as the work
    grows")."""
    nudged = nudge_stale_collections(ledger, has_run, grace_seconds=grace_seconds, log=log)
    delivery = reporter.deliver(limit=DELIVERY_LIMIT, deadline_seconds=DELIVERY_SECONDS,
                                log_event=log)
    for row in ledger.rejected_outbox():
        log(event_line("outbox_rejected_listed", job_id=row["job_id"], status=row["status"],
                       http_status=row["response_code"]))
    ledger.fold_state_counts()
    return Reconciled(nudged=nudged, delivery=delivery,
                      open_requests=ledger.request_summaries(limit=OPEN_REQUESTS_SHOWN),
                      jobs=ledger.job_states(), outbox=ledger.outbox_counts())


def summary_table(summaries: list[RequestSummary], limit: int = OPEN_REQUESTS_SHOWN) -> str:
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


def totals(reconciled: Reconciled) -> dict[str, int]:
    jobs = reconciled.jobs
    return {
        "requests_open": len(reconciled.open_requests),
        "jobs_total": sum(jobs.values()),
        "jobs_completed": jobs.get(JobState.COMPLETED, 0),
        "jobs_failed": jobs.get(JobState.FAILED, 0),
        "jobs_dead": jobs.get(JobState.DEAD, 0),
        "jobs_pending": jobs.get(JobState.QUEUED, 0) + jobs.get(JobState.RUNNING, 0),
    }


def inspection_lines(ledger: JobLedger, collection_id: str | None = None) -> list[str]:
    """What `rag-pipeline inspect` prints: jobs per state, statuses per state, open crawl
    requests (state counts and jobs in flight only: as fast at a million jobs as at none)."""
    states = ledger.job_states(collection_id)
    outbox = ledger.outbox_counts()
    lines = [f"jobs{f' of {collection_id}' if collection_id else ''}: "
             + (", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none"),
             "statuses for the Go API: "
             + (", ".join(f"{n} {s}" for s, n in sorted(outbox.items())) or "none")]
    summaries = ledger.request_summaries(limit=OPEN_REQUESTS_SHOWN)
    if summaries:
        lines += ["open crawl requests:", summary_table(summaries)]
    if collection_id:
        lines += [crawl_line(c) for c in ledger.crawls(collection_id=collection_id)]
    aliases = ledger.aliases(limit=OPEN_REQUESTS_SHOWN)
    if aliases:
        lines.append("aliases (the collection each answers from):")
        lines += [f"  {alias} -> {collection} (since {since.isoformat(timespec='seconds')})"
                  for alias, collection, since in aliases]
    crawling = ledger.crawls(crawling_only=True, limit=OPEN_REQUESTS_SHOWN)
    if crawling:
        lines += ["crawls not said complete (no crawl_completed message yet), oldest first:",
                  crawl_table(crawling)]
    drops = ledger.drops(limit=OPEN_REQUESTS_SHOWN)
    if drops:
        lines.append("collections dropped or retired, newest first:")
        lines += [drop_line(d) for d in drops]
    return lines


def drop_line(drop: Drop) -> str:
    done = (f"done {drop.dropped_at.isoformat(timespec='seconds')}" if drop.dropped_at
            else "not finished (run the drop again)")
    return (f"  {drop.collection_id} (alias {drop.alias or 'none'}): {drop.cause}, asked "
            f"{drop.requested_at.isoformat(timespec='seconds')}, {done}, "
            f"{sum(drop.rows.values())} LightRAG rows removed")


def crawl_line(crawl: CrawlSummary) -> str:
    """One collection's name and crawl, for people."""
    said = (f"the crawler said it is complete with {crawl.crawl_pages} pages at "
            f"{crawl.crawl_completed_at.isoformat(timespec='seconds')}" if crawl.completed
            else "not said complete")
    return (f"collection {crawl.collection_id}: alias {crawl.alias or '(none)'}, request "
            f"{crawl.request_id}, {crawl.received} pages received, {said}")


def drop_table(drops: list[Drop]) -> str:
    """Markdown table of dropped and retired collections (`crawl_requests`)."""
    rows = ["| collection | alias | cause | asked | done | LightRAG rows removed |",
            "|---|---|---|---|---|---:|"]
    rows += [f"| {d.collection_id} | {d.alias or ''} | {d.cause} | "
             f"{d.requested_at.isoformat(timespec='seconds')} | "
             f"{d.dropped_at.isoformat(timespec='seconds') if d.dropped_at else 'not yet'}"
             f" | {sum(d.rows.values())} |" for d in drops]
    return "\n".join(rows)


def alias_table(aliases: list[tuple[str, str, datetime]]) -> str:
    """Markdown table of aliases and the collection each answers from (`crawl_requests`)."""
    rows = ["| alias | collection | since |", "|---|---|---|"]
    rows += [f"| {a} | {c} | {since.isoformat(timespec='seconds')} |" for a, c, since in aliases]
    return "\n".join(rows)


def crawl_table(crawls: list[CrawlSummary]) -> str:
    """Markdown table of crawls (the `crawl_requests` asset, `inspect`)."""
    rows = ["| collection | alias | request | first page staged | pages received |",
            "|---|---|---|---|---|"]
    rows += [f"| {c.collection_id} | {c.alias or ''} | {c.request_id} | "
             f"{c.first_staged_at.isoformat(timespec='seconds')} | {c.received} |"
             for c in crawls]
    return "\n".join(rows)
