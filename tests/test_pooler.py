"""Connection poolers (docs/deployment.md, "Connection poolers"): through Debian's PgBouncer,
started by the test, a pooler that shares server sessions or drops the deadline is refused
when a process opens the ledger, with a message that says what to change; PgBouncer in
session mode keeps what the one-writer lock and liveness rest on. The `pgbouncer_*` fault
scenarios (tests/test_reliability.py, `make reliability`) run the whole pipeline through it.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from bench.pgbouncer import database_deadline, pooled
from rag_pipeline.indexing.locks import CollectionBusy, collection_lock
from rag_pipeline.ledger import JobLedger, LedgerUnavailable
from rag_pipeline.ledger.connection import DEADLINES
from tests.conftest import EXTERNAL

pytestmark = pytest.mark.skipif(EXTERNAL, reason="PgBouncer is put in front of the local stack")


def open_ledger(settings) -> JobLedger:
    return JobLedger(settings.postgres_conninfo(),
                     settings.postgres_password.get_secret_value()).open()


@pytest.fixture
def deadline_on_database(stack, settings):
    database_deadline(settings, [settings.postgres_db])
    yield
    with psycopg.connect(settings.postgres_conninfo("postgres"), autocommit=True,
                         **settings.postgres_kwargs()) as conn:
        conn.execute(f'ALTER DATABASE "{settings.postgres_db}" RESET statement_timeout')


@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_a_pooler_that_shares_sessions_is_refused_when_the_ledger_opens(
        settings, deadline_on_database, mode):
    with pooled(settings, mode) as through, pytest.raises(LedgerUnavailable) as refused:
        open_ledger(through)
    said = str(refused.value)
    assert "shares server sessions" in said and "pool_mode = session" in said, said
    assert "Connection poolers" in said
    assert settings.postgres_password.get_secret_value() not in said


def test_a_pooler_that_drops_the_deadline_is_refused(stack, settings):
    with pooled(settings, "session") as through, pytest.raises(LedgerUnavailable) as refused:
        open_ledger(through)
    assert "without a deadline" in str(refused.value)
    assert "ALTER DATABASE" in str(refused.value)


def test_a_pooler_that_refuses_the_deadline_parameters_says_how_to_configure_it(
        stack, settings, deadline_on_database):
    with (pooled(settings, "session", ignore_startup_parameters="extra_float_digits") as through,
          pytest.raises(LedgerUnavailable) as refused):
        open_ledger(through)
    said = str(refused.value)
    assert "unsupported startup parameter" in said and "ignore_startup_parameters" in said


def test_session_mode_keeps_the_writer_lock_the_deadline_and_the_names_liveness_reads(
        settings, deadline_on_database, unique):
    with pooled(settings, "session") as through:
        ledger = open_ledger(through)
        try:
            with ledger.pool.connection() as conn:
                assert conn.execute("SHOW statement_timeout").fetchone()[0] == "2min"
            conninfo, password = through.postgres_conninfo(), through.postgres_password
            secret = password.get_secret_value()
            with collection_lock(conninfo, secret, f"pool-{unique}", 5) as check:
                # A second writer through the pooler is kept out (its own server session).
                with pytest.raises(CollectionBusy), collection_lock(
                        conninfo, secret, f"pool-{unique}", 1.5):
                    pass
                check()
                # Liveness finds the process's sessions by name and ends them: the lock's
                # connection through the pooler breaks with them.
                name = f"rag-pipeline:pool-test:1:{unique}"
                with psycopg.connect(conninfo, password=secret, autocommit=True,
                                     application_name=name, **DEADLINES) as named:
                    named.execute("SELECT 1")  # PgBouncer links a server at the first query
                    with ledger.pool.connection() as conn:
                        seen = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                                            "application_name = %s", (name,)).fetchone()[0]
                        assert seen == 1
                        ended = conn.execute(
                            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM "
                            "pg_stat_activity WHERE application_name = %s", (name,)
                        ).fetchone()[0]
                    assert ended == 1
                    with pytest.raises(psycopg.OperationalError):
                        named.execute("SELECT 1")
            # A process that closes its connections leaves no session under its name (the
            # pooler resets the server session it gives back): the `gone` rule holds.
            with psycopg.connect(conninfo, password=secret, autocommit=True,
                                 application_name=name + "-closed", **DEADLINES) as closing:
                closing.execute("SELECT 1")
            time.sleep(0.5)
            with ledger.pool.connection() as conn:
                left = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                                    "application_name = %s", (name + "-closed",)).fetchone()[0]
            assert left == 0
            # The lock was released with its session: another writer gets it at once.
            with collection_lock(conninfo, secret, f"pool-{unique}", 1.5) as check:
                check()
        finally:
            ledger.close()


def test_the_premise_asyncpg_as_lightrag_uses_it_breaks_in_transaction_mode(
        settings, deadline_on_database):
    """Why the refusal is the choice (docs/deployment.md): asyncpg with its default
    statement cache, as LightRAG's pool runs it, loses its prepared statements when
    PgBouncer 1.18 hands its transactions to other server sessions; in session mode it
    does not. If this ever passes in transaction mode, the choice is worth revisiting."""
    import asyncio

    import asyncpg

    async def errors_of(port: int) -> list[str]:
        pool = await asyncpg.create_pool(
            host="127.0.0.1", port=port, user=settings.postgres_user,
            password=settings.postgres_password.get_secret_value(),
            database=settings.postgres_db, min_size=4, max_size=8)
        found: list[str] = []

        async def one(i: int) -> None:
            try:
                async with pool.acquire() as conn:
                    await conn.fetch(f"SELECT $1::int + {i % 5}", i)
            except asyncpg.PostgresError as exc:
                found.append(type(exc).__name__)

        await asyncio.gather(*(one(i) for i in range(200)))
        await pool.close()
        return found

    for mode, broken in (("session", False), ("transaction", True)):
        with pooled(settings, mode) as through:
            found = asyncio.run(errors_of(through.postgres_port))
        assert bool(found) is broken, (mode, found[:3])
        assert set(found) <= {"InvalidSQLStatementNameError", "DuplicatePreparedStatementError"}
