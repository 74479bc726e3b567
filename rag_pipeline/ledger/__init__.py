"""The ledger: the PostgreSQL schema `rag_pipeline` that carries every guarantee.

All database access of the pipeline goes through `JobLedger`'s named methods, grouped by
concern in this package:

- `connection`: the pool, transactions, clear connection errors;
- `records`: the records that travel in and out, and their vocabulary (states, outcomes,
  reason codes);
- `schema`: the tables and their versioned migrations;
- `staging`: Kafka offsets and staged jobs (the staging sensor, `rag_pipeline/staging.py`);
- `collections`: each collection's alias and the end of its crawl, an alias's renewal;
- `removal`: a collection's drop and retirement;
- `runs`: claims, cleaned texts, indexed documents (what a run reads and writes);
- `outcomes`: how a job ends - its outcome, document and status row in one fenced
  transaction (`finish_jobs`: where every status row is born), a dead run's jobs requeued;
- `liveness`: heartbeats, silent and gone runs, declaring a run dead, run outcomes, nudges
  (the rules are `rag_pipeline/liveness/`);
- `outbox`: the status reports to the Go API;
- `inspection`: counts for people (state counts kept by triggers, not scans);
- `retention`: pruning finished jobs' payloads (RETENTION_DAYS);
- `counters`: counters that only grow, for the metrics exporter.

Values always travel as query parameters; no SQL text is ever built from message content.
"""

from __future__ import annotations

import atexit
import threading

from rag_pipeline.ledger.collections import CollectionQueries
from rag_pipeline.ledger.connection import (
    LedgerUnavailable,
    RunFenced,
    is_permanent_connection_error,
)
from rag_pipeline.ledger.counters import CounterQueries
from rag_pipeline.ledger.inspection import InspectionQueries
from rag_pipeline.ledger.liveness import LivenessQueries
from rag_pipeline.ledger.migrating import SchemaOutOfDate, SchemaQueries
from rag_pipeline.ledger.outbox import OutboxQueries
from rag_pipeline.ledger.outcomes import OutcomeQueries
from rag_pipeline.ledger.records import (
    CollectionLife,
    CrawlSummary,
    FailedMessage,
    IndexedDocument,
    IndexModels,
    JobOutcome,
    OutboxRow,
    PageText,
    PendingCollection,
    RebuildPlan,
    Release,
    RequestSummary,
    RunJob,
    StagedCompletion,
    StagedJob,
    StageResult,
)
from rag_pipeline.ledger.removal import Drop, RemovalQueries
from rag_pipeline.ledger.retention import PruneBatch, RetentionQueries
from rag_pipeline.ledger.runs import RunQueries
from rag_pipeline.ledger.serving import ServingQueries
from rag_pipeline.ledger.staging import ConcurrentStaging, StagingQueries

__all__ = ["CollectionLife", "ConcurrentStaging", "CrawlSummary", "Drop", "FailedMessage",
           "IndexModels", "IndexedDocument", "JobLedger", "JobOutcome", "LedgerUnavailable",
           "OutboxRow", "PageText", "PendingCollection", "PruneBatch", "RebuildPlan", "Release",
           "RequestSummary", "RunFenced", "RunJob", "SchemaOutOfDate", "StageResult",
           "StagedCompletion", "StagedJob", "is_permanent_connection_error", "shared_ledger"]


class JobLedger(SchemaQueries, StagingQueries, RunQueries, OutcomeQueries, LivenessQueries,
                OutboxQueries, InspectionQueries, CounterQueries, RetentionQueries,
                CollectionQueries, RemovalQueries, ServingQueries):
    """Named queries over the ledger, on a psycopg 3 connection pool."""


# --- one ledger per process ----------------------------------------------------------------
_shared: dict[tuple[str, str, int], JobLedger] = {}
_shared_lock = threading.Lock()


def shared_ledger(conninfo: str, password: str, max_size: int = 4) -> JobLedger:
    """The process's open ledger for these connection settings, at this code's schema
    (SchemaOutOfDate otherwise: `rag-pipeline migrate` is an explicit step).

    The code server evaluates a sensor tick every few seconds and a run's steps share a
    process: opening a pool (TLS-less SCRAM handshakes, a migration check) for each would
    cost more CPU than the tick's own work. Closed at exit.
    """
    key = (conninfo, password, max_size)
    with _shared_lock:
        ledger = _shared.get(key)
        if ledger is None:
            ledger = JobLedger(conninfo, password, max_size=max_size).open()
            try:
                ledger.require_current_schema()
            except BaseException:
                ledger.close()
                raise
            _shared[key] = ledger
        return ledger


@atexit.register
def close_shared_ledgers() -> None:
    with _shared_lock:
        while _shared:
            _shared.popitem()[1].close()
