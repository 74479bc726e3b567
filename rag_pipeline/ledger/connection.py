"""The ledger's connection: one psycopg 3 pool, transactions, and clear connection errors.

`LedgerConnection` is the base of every query group of `JobLedger` (the modules of this
package); nothing else in the project opens a ledger connection of its own, except the
collection's writer lock (`indexing/locks.py`), which holds a session of its own.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from rag_pipeline.ledger.pooler import PoolerRefused, check_sessions

SCHEMA = "rag_pipeline"
TLS_ERRORS = ("certificate", "ssl", "root cert")
PERMANENT_CONNECTION_ERRORS = ("password authentication failed", "does not exist",
                               "no pg_hba.conf entry", "role", "permission denied", *TLS_ERRORS)


_PROCESS_TOKEN = secrets.token_hex(4)

# Deadlines of every psycopg connection of the project (invariant 11: nothing hangs for
# ever). A statement waits at most STATEMENT_TIMEOUT_MS (a lock held by someone else, a
# server that stalls; migrations lift it for themselves); TCP keepalives and
# tcp_user_timeout end a connection whose peer vanished (a host that froze or a network cut:
# the socket stays open, nothing answers) within about a minute instead of the kernel's
# default of hours.
STATEMENT_TIMEOUT_MS = 120_000
DEADLINES = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30,
             "keepalives_interval": 10, "keepalives_count": 3, "tcp_user_timeout": 60_000,
             "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"}


class RunFenced(Exception):
    """The run was declared dead: the ledger refuses its writes (invariant 11)."""


def fence_run(conn: psycopg.Connection, run_id: str) -> None:
    """Inside a run's write transaction: raise RunFenced if the run was declared dead.

    The run's row is locked FOR SHARE until the transaction ends, and declaring a run dead
    updates that row: so either the declaration comes first and this write is refused, or
    the write commits first and the declaration (which gives the run's jobs away in the
    same transaction) sees it. A run with no row yet (it has not beaten) is not fenced."""
    # One statement: the row is locked and read at once (a check, then a lock, would let a
    # declaration in between).
    row = conn.execute("SELECT declared_dead_at IS NOT NULL, declared_dead_msg FROM "
                       "rag_pipeline.runs WHERE run_id = %s FOR SHARE", (run_id,)).fetchone()
    if row is not None and row[0]:
        raise RunFenced(f"run {run_id} was declared dead ({row[1]}); the ledger refuses its "
                        "writes")
PROCESS_NAME_PREFIX = "rag-pipeline:"


def process_name() -> str:
    """The application_name of this process's PostgreSQL sessions (ledger, collection lock,
    LightRAG): a run declared dead has the sessions of its process terminated by this name,
    wherever that process runs. The random part keeps a reused pid from matching."""
    return f"{PROCESS_NAME_PREFIX}{socket.gethostname()[:30]}:{os.getpid()}:{_PROCESS_TOKEN}"


class LedgerUnavailable(Exception):
    """The ledger's database cannot be used; the message says what to check."""


def is_permanent_connection_error(exc: BaseException) -> bool:
    """A connection error that waiting will not fix (credentials, names, permissions)."""
    message = str(exc).lower()
    return any(marker in message for marker in PERMANENT_CONNECTION_ERRORS)


class LedgerConnection:
    """A psycopg 3 connection pool on the ledger's database."""

    def __init__(self, conninfo: str, password: str, *, max_size: int = 4,
                 application_name: str | None = None, wait_seconds: float = 30.0) -> None:
        self.conninfo = conninfo
        self._password = password
        self._application_name = application_name or process_name()
        self.pool = ConnectionPool(
            conninfo,
            kwargs={"password": password, "application_name": self._application_name,
                    **DEADLINES},
            min_size=1,
            max_size=max_size,
            open=False,
            name="rag-pipeline-ledger",
            timeout=wait_seconds,  # how long a caller waits for a connection
            # After a PostgreSQL restart every pooled connection is dead: check before lending
            # one, so the first query after a restart does not fail.
            check=ConnectionPool.check_connection,
        )

    def open(self, wait_timeout: float = 30.0) -> Self:
        # One direct connection first: a wrong password or database fails at once, with a
        # message, instead of after the pool's retries.
        try:
            psycopg.connect(self.conninfo, password=self._password, connect_timeout=10).close()
        except psycopg.OperationalError as exc:
            if is_permanent_connection_error(exc):
                said = str(exc).strip().splitlines()[-1]
                check = ("POSTGRES_SSLMODE and POSTGRES_SSLROOTCERT (the CA of the server's "
                         "certificate)" if any(m in said.lower() for m in TLS_ERRORS)
                         else "POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB")
                raise LedgerUnavailable(
                    f"PostgreSQL refused the ledger connection ({self.conninfo}): {said}. "
                    f"Check {check}.") from None
        # Before the pool: through a pooler that refuses the deadline parameters, the pool
        # would only retry until its timeout.
        parts = conninfo_to_dict(self.conninfo)
        where = f"{parts.get('host', '')}:{parts.get('port', '5432')}/{parts.get('dbname', '')}"
        try:
            check_sessions(lambda: psycopg.connect(
                self.conninfo, password=self._password, autocommit=True,
                application_name=self._application_name, **DEADLINES), where)
        except PoolerRefused as exc:
            raise LedgerUnavailable(str(exc)) from None
        self.pool.open(wait=True, timeout=wait_timeout)
        return self

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        with self.pool.connection() as conn, conn.transaction():
            yield conn
