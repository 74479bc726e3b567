"""The collection lock: at most one writer per LightRAG workspace (design invariant 5).

Held by an indexing run for as long as it writes its collection, on a PostgreSQL connection
of its own.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg

from rag_pipeline.ledger.connection import DEADLINES, process_name

LOCK_POLL_SECONDS = 1.0


class CollectionBusy(Exception):
    """Another writer holds the collection's advisory lock."""


class LockLost(ConnectionError):
    """The collection lock's connection broke (PostgreSQL restarted, or the liveness check
    terminated it): stop writing; a transient error, so the step retries and locks again."""


@contextmanager
def collection_lock(conninfo: str, password: str, collection_id: str, wait_seconds: float,
                    waiting: Callable[[], None] = lambda: None
                    ) -> Iterator[Callable[[], None]]:
    """PostgreSQL advisory lock of one collection, held on its own connection while writing.

    Two runs that escaped the run queue's one-per-collection limit still never write one
    LightRAG workspace at once. A killed writer's connection drops, and with it the lock; a
    writer declared dead has it terminated (its session carries this process's name).
    Yields `check()`, which raises LockLost once the lock's connection is gone: call it
    before each write.
    """
    with psycopg.connect(conninfo, password=password, autocommit=True,
                         application_name=process_name(), **DEADLINES) as conn:
        deadline = time.monotonic() + wait_seconds
        key = f"rag_pipeline:collection:{collection_id}"
        while not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise CollectionBusy(
                    f"collection {collection_id} is being written by another run "
                    f"(advisory lock held for more than {wait_seconds:.0f} s)"
                )
            waiting()  # the caller's lease: still alive, and not declared dead
            time.sleep(LOCK_POLL_SECONDS)

        def check() -> None:
            try:
                conn.execute("SELECT 1")
            except psycopg.Error as exc:
                raise LockLost(f"the lock of collection {collection_id} was lost "
                               f"({type(exc).__name__}: {exc})") from exc

        try:
            yield check
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
