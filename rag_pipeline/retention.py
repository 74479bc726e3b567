"""Retention (RETENTION_DAYS): what is kept of finished work, and for how long.

- The ledger: a finished job's message and cleaned text are dropped RETENTION_DAYS after it
  finished, once its statuses left the outbox; the job row, its outcome, its Kafka
  coordinates and digest (replays stay duplicates) and its documents row stay for good
  (`ledger/retention.py`). LightRAG's tables lose no page here: they are the index (whole
  superseded collections are retired beside this: `rag_pipeline.removal`).
- Dagster: runs that ended more than RETENTION_DAYS ago are deleted with their event logs,
  except the latest successful run of each job and partition, so that every collection's
  partition status, lineage and last materialization stay in the UI. Sensor and schedule
  ticks are purged by Dagster's daemon (`retention:` in dagster.yaml).
Both work in batches, oldest first, within a time budget: a first pass over a large
backlog is spread over several days' runs instead of one long transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg

from rag_pipeline.dagster_runs import COLLECTION_TAG, ENDED_STATUSES, runs_matching
from rag_pipeline.ledger import JobLedger
from rag_pipeline.observability.events import event_line

DAY_SECONDS = 86_400
BATCH = 1000



@dataclass
class RetentionReport:
    jobs_pruned: int = 0
    bytes_pruned: int = 0
    runs_deleted: int = 0
    runs_kept: int = 0  # old runs kept: the latest success of their job and partition
    finished: bool = True  # False: the time budget ran out, the next pass goes on


def prune_ledger(ledger: JobLedger, days: float, deadline: float,
                 report: RetentionReport, log: Callable[[str], None]) -> None:
    """Payloads of jobs finished more than `days` ago, a batch at a time until `deadline`
    (time.monotonic())."""
    while True:
        if time.monotonic() >= deadline:
            report.finished = False
            return
        batch = ledger.prune_payloads(days * DAY_SECONDS, BATCH)
        report.jobs_pruned += batch.jobs
        report.bytes_pruned += batch.bytes
        if batch.jobs:
            log(event_line("payloads_pruned", jobs=report.jobs_pruned,
                           bytes=report.bytes_pruned))
        if batch.jobs < BATCH:
            return


def prune_dagster_runs(instance: dg.DagsterInstance, days: float, deadline: float,
                       report: RetentionReport, log: Callable[[str], None],
                       batch: int = BATCH // 10) -> None:
    """Runs ended more than `days` ago, oldest first, but the latest success of each job
    and partition."""
    cutoff = datetime.now(UTC) - timedelta(days=days)
    # The last run kept: deleted runs are gone from the next page anyway, and a deleted
    # run as the cursor would match nothing and end the pass early.
    cursor: str | None = None
    while True:
        records = instance.get_run_records(
            filters=dg.RunsFilter(statuses=list(ENDED_STATUSES), updated_before=cutoff),
            limit=batch, ascending=True, cursor=cursor)
        if not records:
            return
        for record in records:
            if time.monotonic() >= deadline:
                report.finished = False
                return
            run = record.dagster_run
            if _latest_success(instance, run) == run.run_id:
                report.runs_kept += 1
                cursor = run.run_id
                continue
            instance.delete_run(run.run_id)
            report.runs_deleted += 1
        log(event_line("runs_deleted", runs=report.runs_deleted, kept=report.runs_kept))


def _latest_success(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    tags = {COLLECTION_TAG: run.tags[COLLECTION_TAG]} if COLLECTION_TAG in run.tags else {}
    latest = runs_matching(instance, dg.RunsFilter(
        job_name=run.job_name, tags=tags, statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1)
    return latest[0].run_id if latest else None
