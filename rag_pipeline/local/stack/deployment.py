"""Dagster run the way a deployment runs it (docs/deployment.md, "Production topology"):
the code location served by a gRPC code server of its own (`dagster api grpc`), and
`dagster-daemon` (and optionally `dagster-webserver`) reaching it through a `workspace.yaml`
with a `grpc_server` entry; each process in a working directory of its own, configured by
environment variables only (no .env), on a PostgreSQL-backed DAGSTER_HOME with a database of
its own for the pipeline. Runs are subprocesses of the code server (DefaultRunLauncher), as
they are in the code server's container under Compose. The end-to-end tests, the fault
scenarios, the benchmarks and `rag-pipeline serve` use it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
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
from rag_pipeline.local.stack.postgres import migrate_ledger
from rag_pipeline.settings import Settings

DEFINITIONS_MODULE = "rag_pipeline.definitions"
LOCATION_NAME = "rag_pipeline"  # as in workspace.yaml, deploy/docker and the Helm values
CODE_SERVER_HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 180.0


def create_databases(settings: Settings, pipeline_db: str, dagster_db: str | None = None,
                     statement_timeout_ms: int | None = None) -> None:
    """The pipeline's database (with pgvector) and, if named, one for Dagster's storage.
    `statement_timeout_ms`: a deadline the pipeline's database carries itself (behind a
    connection pooler, which drops the one sent at connection), set before any session
    opens there (a pooler's idle sessions would keep the old default)."""
    with psycopg.connect(settings.postgres_conninfo("postgres"), **settings.postgres_kwargs(),
                         autocommit=True) as conn:
        for db in (pipeline_db, dagster_db):
            if db:
                conn.execute(f"CREATE DATABASE {db}")  # names are ours, never from messages
        if statement_timeout_ms is not None:
            conn.execute(f"ALTER DATABASE {pipeline_db} SET statement_timeout = "
                         f"{int(statement_timeout_ms)}")
    with psycopg.connect(settings.postgres_conninfo(pipeline_db), **settings.postgres_kwargs(),
                         autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    migrate_ledger(settings, pipeline_db)



def drop_databases(settings: Settings, *names: str) -> None:
    with psycopg.connect(settings.postgres_conninfo("postgres"), **settings.postgres_kwargs(),
                         autocommit=True) as conn:
        for db in names:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


@dataclass
class DagsterDeployment:
    """A DAGSTER_HOME with dagster.yaml and workspace.yaml, and the code server, daemon
    (+ webserver, exporter) running on it, each a process (and session) of its own."""

    settings: Settings
    home: Path
    env: dict[str, str]
    code_server_port: int
    max_concurrent_runs: int | None = None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @classmethod
    def prepare(cls, settings: Settings, home: Path, extra_env: dict[str, str],
                max_concurrent_runs: int | None = None,
                code_server_port: int | None = None) -> DagsterDeployment:
        home.mkdir(parents=True, exist_ok=True)
        config = (PROJECT_ROOT / "dagster.yaml").read_text()
        if max_concurrent_runs is not None:
            config = re.sub(r"max_concurrent_runs: \d+", f"max_concurrent_runs: "
                            f"{max_concurrent_runs}", config)
        (home / "dagster.yaml").write_text(config)
        port = code_server_port or free_port()
        (home / "workspace.yaml").write_text(grpc_workspace(CODE_SERVER_HOST, port))
        env = {**os.environ, "DAGSTER_HOME": str(home), "RAG_PIPELINE_ENV_FILE": "",
               "POSTGRES_HOST": settings.postgres_host,
               "POSTGRES_PORT": str(settings.postgres_port),
               "POSTGRES_USER": settings.postgres_user,
               "POSTGRES_PASSWORD": settings.postgres_password.get_secret_value(),
               **extra_env}
        return cls(settings, home, env, port, max_concurrent_runs)

    @property
    def workspace(self) -> Path:
        return self.home / "workspace.yaml"

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        if argv[0].startswith("dagster") and self.env.get("LOG_FORMAT", "json") == "json":
            # As the deployments start them: Dagster's lines and the root logger's in JSON.
            command = [sys.executable, "-m", "rag_pipeline.observability.dagster_process",
                       *argv, "--log-format", "json"]
        else:
            command = [str(Path(sys.executable).parent / argv[0]), *argv[1:]]
        workdir = self.home / name  # its own, as each container has
        workdir.mkdir(exist_ok=True)
        with (self.home / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(command, env=self.env, cwd=workdir,
                                       stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.processes[name] = process
        return process

    def start(self, webserver_port: int | None = None) -> None:
        """The code server first (the daemon's sensors need it), then the daemon."""
        self.start_code_server()
        if webserver_port is not None:
            self.start_webserver(webserver_port)
        self.start_daemon()

    def start_code_server(self) -> None:
        """`dagster api grpc`, serving until it answers the health check its image uses."""
        process = self._spawn("code_server", [
            "dagster", "api", "grpc", "-m", DEFINITIONS_MODULE, "--location-name",
            LOCATION_NAME, "-h", CODE_SERVER_HOST, "-p", str(self.code_server_port)])
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if self.code_server_serving():
                return
            time.sleep(1)
        raise RuntimeError(f"the code server did not start; see {self.home}/code_server.log")

    def code_server_serving(self) -> bool:
        check = subprocess.run(
            [str(Path(sys.executable).parent / "dagster"), "api", "grpc-health-check",
             "-h", CODE_SERVER_HOST, "-p", str(self.code_server_port)],
            env=self.env, capture_output=True, timeout=60)
        return check.returncode == 0

    def relocate_code_server(self) -> None:
        """A replacement host: the next code server listens on a port of its own (the frozen
        one still holds the old), and the workspace the daemon reads points at it."""
        self.code_server_port = free_port()
        self.workspace.write_text(grpc_workspace(CODE_SERVER_HOST, self.code_server_port))

    def start_daemon(self) -> None:
        self._spawn("daemon", ["dagster-daemon", "run", "-w", str(self.workspace)])

    def start_webserver(self, port: int) -> str:
        process = self._spawn("webserver", ["dagster-webserver", "-w", str(self.workspace),
                                            "-h", "127.0.0.1", "-p", str(port)])
        return self._answering("webserver", process, f"http://127.0.0.1:{port}", "/server_info")

    def start_exporter(self, port: int) -> str:
        """The metrics exporter (METRICS_PORT from the environment is `port`), once it answers."""
        process = self._spawn("exporter", ["rag-pipeline-exporter"])
        return self._answering("exporter", process, f"http://127.0.0.1:{port}", "/healthz")

    def _answering(self, name: str, process: subprocess.Popen, url: str, path: str) -> str:
        """`url` once `path` answers 200; an error naming the log if the process exits or
        does not answer in time."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the {name} did not start; see {self.home}/{name}.log")

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal one process alone (not its children), as a crash of that process would."""
        process = self.processes[name]
        os.kill(process.pid, sig)
        process.wait(60)

    def crash(self, name: str) -> int:
        """SIGKILL a process with every process under it, as the loss of its container does
        (the code server takes its run workers with it). Returns how many died."""
        victims = [psutil.Process(self.processes[name].pid)]
        with contextlib.suppress(psutil.Error):
            victims += victims[0].children(recursive=True)
        for victim in victims:
            with contextlib.suppress(psutil.Error):
                victim.kill()
        psutil.wait_procs(victims, timeout=30)
        self.processes[name].wait(60)
        return len(victims)

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
        # Run workers may start sessions of their own: find them by the DAGSTER_HOME they
        # inherited. None may outlive the deployment.
        for straggler in processes_with_dagster_home(self.home):
            with contextlib.suppress(psutil.Error):
                straggler.kill()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


def grpc_workspace(host: str, port: int) -> str:
    return ("# The code location as a deployment reaches it: a gRPC code server of its own.\n"
            "load_from:\n  - grpc_server:\n"
            f"      host: {host}\n      port: {port}\n      location_name: {LOCATION_NAME}\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((CODE_SERVER_HOST, 0))
        return probe.getsockname()[1]
