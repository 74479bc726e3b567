"""PgBouncer between the pipeline and PostgreSQL, for the pooler tests and the `pgbouncer`
fault scenario.

Debian's `pgbouncer` (scripts/install-test-services), run by the project on 127.0.0.1 as
the stack's unprivileged service user (PgBouncer, like PostgreSQL, refuses to run as root).
Its configuration is the one docs/deployment.md ("Connection poolers") asks of operators:
`ignore_startup_parameters` lets the pipeline's deadline parameters through the door, and
the deadline itself is set on the database (`ALTER DATABASE ... SET statement_timeout`,
before PgBouncer opens sessions there), because PgBouncer 1.18 forwards no startup parameter
but a few it tracks.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import psycopg

from rag_pipeline.ledger.connection import STATEMENT_TIMEOUT_MS
from rag_pipeline.local.stack.postgres import SERVICE_USER
from rag_pipeline.settings import Settings

PoolMode = Literal["session", "transaction", "statement"]
PGBOUNCER_PORT = 16543


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if found is None:
        raise SystemExit("PgBouncer is not installed: run scripts/install-test-services "
                         "(Debian's pgbouncer package, its service not started)")
    return found


def database_deadline(settings: Settings, databases: list[str]) -> None:
    """The statement deadline on the databases themselves: what a pooler cannot drop."""
    with psycopg.connect(settings.postgres_conninfo("postgres"), autocommit=True,
                         **settings.postgres_kwargs()) as conn:
        for name in databases:
            conn.execute(psycopg.sql.SQL("ALTER DATABASE {} SET statement_timeout = {}").format(
                psycopg.sql.Identifier(name), psycopg.sql.Literal(STATEMENT_TIMEOUT_MS)))


@contextlib.contextmanager
def pooled(settings: Settings, pool_mode: PoolMode = "session", port: int = PGBOUNCER_PORT,
           ignore_startup_parameters: str = "extra_float_digits, options, statement_timeout"
           ) -> Iterator[Settings]:
    """PgBouncer in `pool_mode` in front of the settings' PostgreSQL: the settings that go
    through it."""
    workdir = Path(tempfile.mkdtemp(prefix="rag-pgbouncer-"))
    password = settings.postgres_password.get_secret_value()
    (workdir / "userlist.txt").write_text(f'"{settings.postgres_user}" "{password}"\n')
    (workdir / "pgbouncer.ini").write_text("\n".join([
        "[databases]",
        f"* = host={settings.postgres_host} port={settings.postgres_port}",
        "[pgbouncer]",
        f"listen_addr = 127.0.0.1\nlisten_port = {port}",
        f"unix_socket_dir = {workdir}",
        f"auth_type = scram-sha-256\nauth_file = {workdir / 'userlist.txt'}",
        f"pool_mode = {pool_mode}",
        "max_client_conn = 1000\ndefault_pool_size = 200",
        # psycopg sends the deadline as `options`, asyncpg as `statement_timeout`: PgBouncer
        # refuses both unless told to ignore them (the database carries the deadline).
        f"ignore_startup_parameters = {ignore_startup_parameters}",
        f"logfile = {workdir / 'pgbouncer.log'}",
        "",
    ]))
    user = None
    if os.geteuid() == 0:
        user = pwd.getpwnam(SERVICE_USER)
        for path in workdir.iterdir():
            os.chown(path, user.pw_uid, user.pw_gid)
        os.chown(workdir, user.pw_uid, user.pw_gid)
    # Its log goes to its logfile; a pipe nobody reads would block it once full.
    process = subprocess.Popen([pgbouncer_binary(), str(workdir / "pgbouncer.ini")],
                               user=SERVICE_USER if user else None, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    through = settings.model_copy(update={"postgres_port": port})
    try:
        _wait_until_accepting(through, process, workdir / "pgbouncer.log")
        yield through
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_until_accepting(settings: Settings, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            said = log.read_text()[-2000:] if log.exists() else "(no log)"
            raise RuntimeError(f"PgBouncer exited at start: {said.strip()}")
        try:
            psycopg.connect(settings.postgres_conninfo(settings.postgres_db), connect_timeout=3,
                            **settings.postgres_kwargs()).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
