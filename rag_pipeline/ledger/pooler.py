"""Sessions that stay sessions: the start-up check against connection poolers.

The pipeline needs one PostgreSQL session per client connection for as long as the
connection is open, and its deadlines on every session:

- one writer per collection is a session advisory lock (`indexing/locks.py`);
- model slots wake waiters with LISTEN/NOTIFY (`knowledge/model_slots.py`);
- liveness finds a run's sessions by `application_name` and terminates them (`liveness/`);
- LightRAG's asyncpg pool prepares statements per session;
- STATEMENT_TIMEOUT_MS bounds every statement (invariant 11).

Behind PgBouncer in transaction or statement mode (or any proxy that hands one server
session to many clients) each of these breaks without an error: the lock guards nothing,
live runs look gone, pooled sessions of other runs are terminated. PgBouncer in session mode
keeps them (tested by the `pgbouncer` fault scenario), but it drops the startup parameters
that carry the deadline, so the database must carry it. Every process checks both when it
opens the ledger and refuses to start otherwise (docs/deployment.md, "Connection poolers").
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import psycopg

PROBE_SETTING = "rag_pipeline.session_probe"
POOLER_DOC = "docs/deployment.md, \"Connection poolers\""


class PoolerRefused(Exception):
    """PostgreSQL is reached through something that shares sessions or drops deadlines."""


def check_sessions(connect: Callable[[], psycopg.Connection], where: str) -> None:
    """Raise PoolerRefused unless two connections made by `connect` (autocommit, with the
    project's deadlines) each keep a PostgreSQL session of their own, with its deadline.

    A session-sharing pooler gives an idle client's server session to the next transaction
    of another client (PgBouncer reuses the most recently released one first): the second
    connection's transaction then sees the first one's backend and session setting."""
    try:
        first, second = connect(), connect()
    except psycopg.OperationalError as exc:
        said = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        if "unsupported startup parameter" in said:
            raise PoolerRefused(
                f"PostgreSQL at {where} is reached through a connection pooler that refuses "
                f"the pipeline's deadline parameters ({said}). Configure PgBouncer with "
                "`ignore_startup_parameters = extra_float_digits, options, statement_timeout` "
                "and set the deadline on the database instead: ALTER DATABASE <db> SET "
                f"statement_timeout = '120s' ({POOLER_DOC}).") from None
        raise
    with first, second:
        token = secrets.token_hex(8)
        mine = first.execute(f"SELECT pg_backend_pid() FROM set_config('{PROBE_SETTING}', "
                             "%s, false)", (token,)).fetchone()[0]
        try:
            with second.transaction():
                other, seen = second.execute(
                    f"SELECT pg_backend_pid(), current_setting('{PROBE_SETTING}', true)"
                ).fetchone()
                again = [first.execute("SELECT pg_backend_pid()").fetchone()[0]
                         for _ in range(3)]
        except psycopg.Error as exc:  # statement mode refuses transaction blocks
            raise PoolerRefused(_shared(where, f"a transaction block was refused: {exc}")
                                ) from None
        if other == mine or seen == token or set(again) != {mine}:
            raise PoolerRefused(_shared(where, "two connections shared one server session"))
        deadline = first.execute("SELECT current_setting('statement_timeout')").fetchone()[0]
    if deadline in ("0", "0ms"):
        raise PoolerRefused(
            f"PostgreSQL at {where} runs statements without a deadline: the statement_timeout "
            "the pipeline sends when it connects did not reach the server (a connection "
            "pooler drops it). Set it on the database: ALTER DATABASE <db> SET "
            f"statement_timeout = '120s' ({POOLER_DOC}).")


def _shared(where: str, evidence: str) -> str:
    return (f"PostgreSQL at {where} is reached through a connection pooler that shares server "
            f"sessions between clients ({evidence}): PgBouncer in transaction or statement "
            "mode, or a proxy that multiplexes. The pipeline's one-writer lock, liveness and "
            "LightRAG's prepared statements need a session per connection: connect to "
            f"PostgreSQL directly or through PgBouncer with pool_mode = session ({POOLER_DOC}).")
