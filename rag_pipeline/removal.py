"""Dropping a collection (by the `drop_collection` job, `rag-pipeline drop`, or the
retention schedule retiring a superseded one): nothing it put anywhere is left behind.

1. The drop is asked in the ledger (`request_drop`): from then on the collection takes no
   message (staging fails them with `collection_dropped`, reported to the Go API), and its
   queued jobs fail the same way.
2. Its writer lock is taken (waiting for a running run to finish what it holds), so
   nothing writes the workspace while it is emptied.
3. Every row of its workspace leaves every LightRAG table (found in the catalog:
   `knowledge.tables`), a batch at a time, counted in the ledger as it goes.
4. The ledger forgets its documents and payloads, and its alias (if it answered from it)
   answers nothing (`finish_drop`).
5. Its Dagster partition is deleted: by the staging sensor's next tick (a run cannot
   delete the partition it materializes), at once when retention retires it.
Each step can be repeated, so a drop killed anywhere is finished by running it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial

from rag_pipeline.knowledge.tables import (
    GRAPH_TABLES,
    delete_workspace_rows,
    dropping_order,
    workspace_bytes,
)
from rag_pipeline.ledger import Drop, JobLedger
from rag_pipeline.vocabulary import DropCause

log = logging.getLogger(__name__)

DELETE_BATCH_ROWS = 5000
TABLE_GRAPH_STORAGE = "PGTableGraphStorage"

# Takes a collection's writer lock (indexing.locks.collection_lock), yielding its check.
LockOf = Callable[[str], AbstractContextManager[Callable[[], None]]]


@dataclass(frozen=True)
class DropReport:
    drop: Drop
    bytes_removed: int  # the rows' stored size before this attempt deleted them
    graph_left: bool = False  # PGGraphStorage: the workspace's graph is in Apache AGE

    @property
    def rows_removed(self) -> int:
        return sum(self.drop.rows.values())


def drop_collection(ledger: JobLedger, collection_id: str, cause: DropCause, lock_of: LockOf,
                    *, max_retries: int, graph_storage: str = TABLE_GRAPH_STORAGE,
                    batch_rows: int = DELETE_BATCH_ROWS,
                    progress: Callable[[str, int], None] = lambda table, rows: None,
                    ) -> DropReport:
    """Drop `collection_id` (see the module's docstring); `progress(table, rows)` after each
    batch deleted."""
    asked = ledger.request_drop(collection_id, cause, max_retries)
    log.info("dropping collection %s (%s): %d queued jobs failed", collection_id,
             asked.cause, asked.jobs_failed)
    with lock_of(collection_id) as check:
        with ledger.pool.connection() as conn:
            before = workspace_bytes(conn, collection_id)
            tables = dropping_order(conn)
        for table in tables:
            while True:
                check()  # the lock still held: nothing else writes the workspace
                rows = ledger.delete_batch(collection_id, table, partial(
                    delete_workspace_rows, table=table, workspace=collection_id,
                    batch=batch_rows))
                if rows:
                    progress(table, rows)
                if rows < batch_rows:
                    break
        done = ledger.finish_drop(collection_id)
    graph_left = graph_storage != TABLE_GRAPH_STORAGE
    if graph_left:
        log.warning("collection %s: LIGHTRAG_GRAPH_STORAGE=%s keeps the workspace's graph in "
                    "Apache AGE, outside the tables a drop empties (%s are); drop that graph "
                    "with AGE's drop_graph", collection_id, graph_storage,
                    ", ".join(GRAPH_TABLES))
    return DropReport(Drop(**{**done.__dict__, "jobs_failed": asked.jobs_failed}), before,
                      graph_left)


def retire_superseded(ledger: JobLedger, after_seconds: float, lock_of: LockOf, *,
                      max_retries: int, graph_storage: str = TABLE_GRAPH_STORAGE,
                      dropped: Callable[[DropReport], None] = lambda report: None
                      ) -> list[DropReport]:
    """Drop the collections superseded under their alias more than `after_seconds` ago
    (RETIRE_SUPERSEDED_AFTER_SECONDS; the retention schedule)."""
    reports = []
    for collection_id in ledger.retirable(after_seconds):
        report = drop_collection(ledger, collection_id, DropCause.RETIRED, lock_of,
                                 max_retries=max_retries, graph_storage=graph_storage)
        dropped(report)
        reports.append(report)
    return reports
