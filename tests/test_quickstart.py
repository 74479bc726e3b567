"""The quick start as a user lives it: `rag-pipeline dev` (what `make up` runs) and
`rag-pipeline stack down` (what `make down` runs), with real Dagster processes on the test
stack's PostgreSQL.

- closing the terminal (a hang-up) ends Dagster like Ctrl-C does;
- a second `dev` while one runs is refused with a clear message, and starts nothing;
- `stack down` stops a Dagster whose `dev` died without cleaning up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rag_pipeline.local.stack.dagster_dev import DagsterDev, processes_with_dagster_home
from rag_pipeline.local.stack.deployment import create_databases, drop_databases, free_port
from rag_pipeline.settings import Settings, load_settings

pytestmark = pytest.mark.e2e
PORT = 13100


@pytest.fixture
def quickstart(stack, settings: Settings, unique: str, tmp_path: Path) -> Iterator[dict]:
    """The environment of `rag-pipeline dev --no-stack` on a stack folder of its own."""
    pipeline_db, dagster_db = f"qs_{unique}", f"qs_dagster_{unique}"
    create_databases(settings, pipeline_db, dagster_db)
    env = {**os.environ, "STACK_DIR": str(tmp_path / "stack"), "DAGSTER_PORT": str(PORT),
           "POSTGRES_DB": pipeline_db, "DAGSTER_POSTGRES_DB": dagster_db,
           "KAFKA_TOPIC": f"quickstart_{unique}", "API_PORT": str(free_port())}
    yield env
    # (A fresh Settings: a model_copy would keep the cached stack_path of the test stack.)
    DagsterDev(load_settings(stack_dir=tmp_path / "stack")).stop()
    drop_databases(settings, pipeline_db, dagster_db)


def start_dev(env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rag_pipeline.local.cli", "dev",
                             "--no-stack", "--no-demo"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for_ui(dev: subprocess.Popen) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and dev.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{PORT}/server_info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"the Dagster UI did not come up: {dev.communicate()[0][-3000:]}")


def wait_until_gone(home: Path, timeout: float = 120) -> list:
    deadline = time.monotonic() + timeout
    while (left := processes_with_dagster_home(home)) and time.monotonic() < deadline:
        time.sleep(1)
    return left


def test_a_hang_up_ends_dagster_and_a_second_start_is_refused(quickstart):
    home = Path(quickstart["STACK_DIR"]) / "dagster_home"
    dev = start_dev(quickstart)
    wait_for_ui(dev)
    assert len(processes_with_dagster_home(home)) >= 3  # dagster dev, webserver, daemon, ...
    # The query service beside them, on loopback without tokens (API_ALLOW_ANONYMOUS).
    api = f"http://127.0.0.1:{quickstart['API_PORT']}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api}/readyz", timeout=2).status_code == 200:
                break
        time.sleep(0.5)
    collections = httpx.get(f"{api}/v1/collections", timeout=10)
    assert collections.status_code == 200 and collections.json() == {"collections": []}

    second = subprocess.run([sys.executable, "-m", "rag_pipeline.local.cli", "dev",
                             "--no-stack", "--no-demo"], env=quickstart, capture_output=True,
                            text=True, timeout=120)
    assert second.returncode == 2
    assert "Dagster is already running for this checkout" in second.stderr
    assert "make down" in second.stderr

    os.killpg(dev.pid, signal.SIGHUP)  # what closing the terminal sends
    dev.wait(120)
    assert wait_until_gone(home) == []


def test_stack_down_stops_a_dagster_whose_dev_died(quickstart):
    home = Path(quickstart["STACK_DIR"]) / "dagster_home"
    dev = start_dev(quickstart)
    wait_for_ui(dev)
    os.kill(dev.pid, signal.SIGKILL)  # `rag-pipeline dev` alone: Dagster lives on
    dev.wait(30)
    assert processes_with_dagster_home(home)
    down = subprocess.run([sys.executable, "-m", "rag_pipeline.local.cli", "stack", "down"],
                          env=quickstart, capture_output=True, text=True, timeout=180)
    assert down.returncode == 0, down.stderr
    assert "dagster" in down.stdout
    assert wait_until_gone(home, timeout=30) == []


def test_serve_runs_the_production_topology_on_environment_only(quickstart, tmp_path):
    """`rag-pipeline serve`: code server, webserver, daemon and exporter as processes of
    their own, in their own working directories, reaching the code location over gRPC; the
    settings files are read once and handed on as variables; Ctrl-C stops all four."""
    home = Path(quickstart["STACK_DIR"]) / "dagster_home"
    dotenv = tmp_path / "settings.env"
    dotenv.write_text("GO_API_TIMEOUT_SECONDS=7.5\n")
    env = {**quickstart, "RAG_PIPELINE_ENV_FILE": str(dotenv), "METRICS_PORT": "13108"}
    serve = subprocess.Popen([sys.executable, "-m", "rag_pipeline.local.cli", "serve",
                              "--no-stack"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for_ui(serve)
        # The exporter is the last to start (serve says so once it answers).
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get("http://127.0.0.1:13108/healthz", timeout=5).status_code == 200:
                    break
            time.sleep(1)
        else:
            raise AssertionError("the exporter of `rag-pipeline serve` never answered")
        located = httpx.post(f"http://127.0.0.1:{PORT}/graphql", timeout=30, json={
            "query": "{ workspaceOrError { ... on Workspace { locationEntries { name "
                     "displayMetadata { key value } locationOrLoadError { __typename } } } } }"})
        [entry] = located.json()["data"]["workspaceOrError"]["locationEntries"]
        assert entry["name"] == "rag_pipeline"
        assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"
        assert {m["key"] for m in entry["displayMetadata"]} >= {"host", "port"}  # grpc_server
        roles = {}
        for process in processes_with_dagster_home(home):
            command = " ".join(process.cmdline())
            for role, mark in (("code_server", "api grpc"), ("daemon", "dagster-daemon"),
                               ("webserver", "dagster-webserver"),
                               ("exporter", "rag-pipeline-exporter")):
                if mark in command and "execute_run" not in command:
                    roles[role] = process
        assert set(roles) == {"code_server", "daemon", "webserver", "exporter"}
        assert len({p.cwd() for p in roles.values()}) == 4  # a working directory each
        for process in roles.values():
            environment = process.environ()
            assert environment["RAG_PIPELINE_ENV_FILE"] == ""  # no service reads a file
            assert environment["GO_API_TIMEOUT_SECONDS"] == "7.5"  # handed on from it
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        serve.wait(120)
    assert wait_until_gone(home) == []
