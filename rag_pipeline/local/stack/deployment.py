"""Dagster run the way a deployment runs it: `dagster-daemon` (and optionally
`dagster-webserver`) as processes of their own, on a PostgreSQL-backed DAGSTER_HOME, with
a database of their own for the pipeline. The end-to-end tests and the benchmarks use it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import psycopg

from rag_pipeline.local import PROJECT_ROOT
from rag_pipeline.local.stack.dagster_dev import processes_with_dagster_home
from rag_pipeline.settings import Settings

CODE_LOCATION = ["-m", "rag_pipeline.definitions"]


def create_databases(settings: Settings, pipeline_db: str, dagster_db: str) -> None:
    with psycopg.connect(settings.postgres_conninfo("postgres"), **settings.postgres_kwargs(),
                         autocommit=True) as conn:
        for db in (pipeline_db, dagster_db):
            conn.execute(f"CREATE DATABASE {db}")  # names are ours, never from messages
    with psycopg.connect(settings.postgres_conninfo(pipeline_db), **settings.postgres_kwargs(),
                         autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def drop_databases(settings: Settings, *names: str) -> None:
    with psycopg.connect(settings.postgres_conninfo("postgres"), **settings.postgres_kwargs(),
                         autocommit=True) as conn:
        for db in names:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


@dataclass
class DagsterDeployment:
    """A DAGSTER_HOME with dagster.yaml, and the daemon (+ webserver) running on it."""

    settings: Settings
    home: Path
    env: dict[str, str]
    max_concurrent_runs: int | None = None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @classmethod
    def prepare(cls, settings: Settings, home: Path, extra_env: dict[str, str],
                max_concurrent_runs: int | None = None) -> DagsterDeployment:
        home.mkdir(parents=True, exist_ok=True)
        config = (PROJECT_ROOT / "dagster.yaml").read_text()
        if max_concurrent_runs is not None:
            config = re.sub(r"max_concurrent_runs: \d+", f"max_concurrent_runs: "
                            f"{max_concurrent_runs}", config)
        (home / "dagster.yaml").write_text(config)
        env = {**os.environ, "DAGSTER_HOME": str(home), "RAG_PIPELINE_ENV_FILE": "",
               "POSTGRES_HOST": settings.postgres_host,
               "POSTGRES_PORT": str(settings.postgres_port),
               "POSTGRES_USER": settings.postgres_user,
               "POSTGRES_PASSWORD": settings.postgres_password.get_secret_value(),
               **extra_env}
        return cls(settings, home, env, max_concurrent_runs)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        binary = str(Path(sys.executable).parent / argv[0])
        with (self.home / f"{name}.log").open("ab") as log:
            process = subprocess.Popen([binary, *argv[1:]], env=self.env, cwd=self.home,
                                       stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.processes[name] = process
        return process

    def start_daemon(self) -> None:
        self._spawn("daemon", ["dagster-daemon", "run", *CODE_LOCATION])

    def start_webserver(self, port: int) -> str:
        self._spawn("webserver", ["dagster-webserver", *CODE_LOCATION, "-h", "127.0.0.1",
                                  "-p", str(port)])
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"dagster-webserver did not start; see {self.home}/webserver.log")

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal one process alone (not its children), as a crash would."""
        process = self.processes[name]
        os.kill(process.pid, sig)
        process.wait(60)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(60)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        # Code servers and run workers may start sessions of their own: find them by the
        # DAGSTER_HOME they inherited. None may outlive the deployment.
        for straggler in processes_with_dagster_home(self.home):
            with contextlib.suppress(psutil.Error):
                straggler.kill()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)
