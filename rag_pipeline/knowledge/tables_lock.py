"""One LightRAG opening at a time per database, across processes.

LightRAG creates its tables when a process opens its first instance (`CREATE TABLE IF NOT
EXISTS`, and the vector tables once per embedding model). Two processes doing it at once on
a fresh database, or after a model change, can both pass the existence check and one fails
on PostgreSQL's catalog (a duplicate key in `pg_type`): concurrent first runs of a new
deployment would fail a step each. Openings hold a session advisory lock while LightRAG
initialises. Creating the tables takes well under a second, so an opening waits at most
TABLES_LOCK_WAIT_SECONDS and then goes on without the lock: a holder that takes longer is
stuck on something else (a statement blocked by another lock, up to its deadline), and
waiting for it would stall every collection's opening behind one stuck one.
"""

from __future__ import annotations

import logging
import time

import psycopg

from rag_pipeline.ledger.connection import DEADLINES, process_name
from rag_pipeline.observability.events import event_line

TABLES_LOCK = "rag_pipeline:lightrag_tables"
TABLES_LOCK_WAIT_SECONDS = 10.0
POLL_SECONDS = 0.2
log = logging.getLogger(__name__)


class TablesLock:
    """The lock on a connection of its own (its session ends, and the lock with it, when the
    process dies): `acquire()` waits up to TABLES_LOCK_WAIT_SECONDS, `release()` closes."""

    def __init__(self, conninfo: str, password: str) -> None:
        self.conninfo, self.password = conninfo, password
        self.conn: psycopg.Connection | None = None

    def acquire(self) -> None:
        conn = psycopg.connect(self.conninfo, password=self.password, autocommit=True,
                               application_name=process_name(), **DEADLINES)
        deadline = time.monotonic() + TABLES_LOCK_WAIT_SECONDS
        try:
            while not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))",
                                   (TABLES_LOCK,)).fetchone()[0]:
                if time.monotonic() > deadline:
                    log.warning(event_line("tables_lock_busy", lock=TABLES_LOCK,
                                           waited_seconds=TABLES_LOCK_WAIT_SECONDS))
                    conn.close()
                    return
                time.sleep(POLL_SECONDS)
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def release(self) -> None:
        if self.conn is not None:
            self.conn.close()  # the session's end releases the lock
            self.conn = None
