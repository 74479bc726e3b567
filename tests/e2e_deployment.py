"""The end-to-end suites' deployment (`tests/test_e2e.py`): the production topology on the
test stack, started once per module, and the helpers that crawl through it and read back
what it did."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from rag_pipeline.ledger import JobLedger
from rag_pipeline.local.publishing import OutgoingMessage, build_message, message_for
from rag_pipeline.local.stack.deployment import DagsterDeployment, create_databases, drop_databases
from rag_pipeline.settings import Settings
from tests.go_side import status_receiver
from tests.helpers import (
    create_topic,
    delete_topic,
    open_ledger,
)

PAGES_PER_COLLECTION = 80
CANARY_API_KEY = "sk-canary-" + os.urandom(8).hex()
# The Go API here wants a bearer token (GO_API_TOKEN); the security test looks for it too.
CANARY_GO_TOKEN = "go-canary-" + os.urandom(8).hex()
GO_RECEIVER_PORT = 18090
TERMINAL = ("completed", "failed", "dead")


def _graphql(url: str, query: str) -> dict:
    response = httpx.post(url, json={"query": query}, timeout=30)
    assert response.status_code == 200 and "errors" not in response.json(), response.text[:2000]
    return response.json()["data"]


def _wait(what: str, check, timeout: float, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Deployment:
    settings: Settings
    dagster: DagsterDeployment
    graphql: str

    @property
    def env(self) -> dict[str, str]:
        return self.dagster.env


@pytest.fixture(scope="module")
def deployment(stack, settings: Settings, tmp_path_factory, go_bin: Path
               ) -> Iterator[Deployment]:
    unique = os.urandom(4).hex()
    # A database of its own: the ledger of the other tests holds queued jobs that this
    # deployment's sensor would otherwise take on.
    dagster_db, pipeline_db = f"dagster_e2e_{unique}", f"pipeline_e2e_{unique}"
    create_databases(settings, pipeline_db, dagster_db)
    topic, dlq = f"e2e_jobs_{unique}", f"e2e_dlq_{unique}"
    create_topic(settings, topic, partitions=12)
    create_topic(settings, dlq, partitions=1)
    # The Go backend's own status handler (go/cmd/statusreceiver) receives every status.
    receiver = contextlib.ExitStack()
    go_api = receiver.enter_context(status_receiver(
        go_bin, GO_RECEIVER_PORT, tmp_path_factory.mktemp("go") / "calls.jsonl",
        token=CANARY_GO_TOKEN))
    dagster = DagsterDeployment.prepare(settings, tmp_path_factory.mktemp("dagster_home"), {
        "GO_BACKEND_URL": go_api,
        "GO_API_TOKEN": CANARY_GO_TOKEN,
        "DAGSTER_POSTGRES_DB": dagster_db,
        "POSTGRES_DB": pipeline_db,
        "KAFKA_TOPIC": topic,
        "KAFKA_DLQ_TOPIC": dlq,
        "SENSOR_INTERVAL_SECONDS": "3",
        # Repairs within the test's patience: reconcile every minute (a silent run is dead
        # after RUN_HEARTBEAT_TIMEOUT_SECONDS, 60 s by default).
        "RECONCILE_CRON": "* * * * *",
        "QUEUED_JOB_GRACE_SECONDS": "30",
        # A recognisable API key (the stand-in accepts any): the security test looks for it.
        # Environment only, as in a deployment: it must reach resources as an EnvVar, never
        # as a value in resource config or job snapshots.
        "OPENAI_API_KEY": CANARY_API_KEY,
        "OPENAI_BASE_URL": settings.dev_llm_url,
    })
    e2e = settings.model_copy(update={"kafka_topic": topic, "kafka_dlq_topic": dlq,
                                      "postgres_db": pipeline_db, "go_backend_url": go_api})
    try:
        dagster.start(webserver_port=settings.dagster_port)
        ui = f"http://127.0.0.1:{settings.dagster_port}"
        deployed = Deployment(e2e, dagster, f"{ui}/graphql")
        _wait("healthy daemons", lambda: _daemons_healthy(deployed.graphql), 240)
        yield deployed
    finally:
        dagster.cleanup()
        receiver.close()
        delete_topic(settings, topic)
        delete_topic(settings, dlq)
        drop_databases(settings, dagster_db, pipeline_db)


def bytea_values(s: Settings, db: str) -> dict[str, bytes]:
    """Every bytea value of a database, and its zlib-decompressed form where it has one
    (Dagster stores job and execution plan snapshots zlib-compressed)."""
    found: dict[str, bytes] = {}
    with psycopg.connect(s.postgres_conninfo(db), **s.postgres_kwargs()) as conn:
        columns = conn.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE data_type = 'bytea' AND table_schema NOT IN ('pg_catalog', "
            "'information_schema')").fetchall()
        for schema, table, column in columns:
            query = sql.SQL("SELECT {} FROM {}.{} WHERE {} IS NOT NULL").format(
                sql.Identifier(column), sql.Identifier(schema), sql.Identifier(table),
                sql.Identifier(column))
            values = [bytes(v) for (v,) in conn.execute(query)]
            inflated = []
            for value in values:
                with contextlib.suppress(zlib.error):
                    inflated.append(zlib.decompress(value))
            found[f"{db}.{schema}.{table}.{column} (bytea, {len(inflated)} decompressed)"] = \
                b"\n".join(values + inflated)
    return found


def resource_config(graphql: str) -> str:
    """Every configured value of every resource, as the UI's resource pages show them."""
    [repo] = _graphql(graphql, "{ repositoriesOrError { ... on RepositoryConnection { nodes "
                      "{ name location { name } } } } }")["repositoriesOrError"]["nodes"]
    shown = []
    for name in ("kafka", "processing", "ledger", "lightrag", "outbox"):
        selector = json.dumps({"repositoryLocationName": repo["location"]["name"],
                               "repositoryName": repo["name"], "resourceName": name})
        selector = re.sub(r'"(\w+)":', r"\1:", selector)  # GraphQL input object syntax
        details = _graphql(graphql, "{ topLevelResourceDetailsOrError(resourceSelector: " + selector
                           + ") { __typename ... on ResourceDetails { configuredValues "
                           "{ key value type } } } }")["topLevelResourceDetailsOrError"]
        assert details["__typename"] == "ResourceDetails", details
        shown.append(json.dumps(details["configuredValues"]))
    key = [v for v in json.loads(shown[3]) if v["key"] == "openai_api_key"]
    assert key == [{"key": "openai_api_key", "value": "OPENAI_API_KEY", "type": "ENV_VAR"}]
    return "\n".join(shown)


def _daemons_healthy(graphql: str) -> bool:
    statuses = _graphql(graphql, "{ instance { daemonHealth { allDaemonStatuses { daemonType "
                        "required healthy } } } }")["instance"]["daemonHealth"]
    required = [d for d in statuses["allDaemonStatuses"] if d["required"]]
    return bool(required) and all(d["healthy"] for d in required)


@pytest.fixture(scope="module")
def ledger_e2e(deployment) -> Iterator[JobLedger]:
    with open_ledger(deployment.settings) as opened:
        yield opened


def crawl(collections: dict[str, list[Path]], first_job_id: int, request_id: int,
          edit: dict[str, bytes] | None = None) -> tuple[list[OutgoingMessage], dict[int, str]]:
    messages, owner = [], {}
    job_id = first_job_id
    for collection, paths in collections.items():
        for path in paths:
            html = (edit or {}).get(path.name) or path.read_bytes()
            message = build_message(job_id=job_id, collection_id=collection,
                                    url=f"https://{collection}.docs.test/{path.name}",
                                    html=html, request_id=request_id,
                                    discovered_at="2025-12-24T10:30:00Z")
            messages.append(message_for(message))
            owner[job_id] = collection
            job_id += 1
    return messages, owner


def wait_terminal(ledger: JobLedger, job_ids: list[int], timeout: float = 900) -> list[dict]:
    def done():
        rows = ledger.jobs(job_ids)
        return rows if len(rows) == len(job_ids) and all(
            r["state"] in TERMINAL for r in rows) else None

    return _wait(f"{len(job_ids)} jobs to finish", done, timeout, every=3)


def accepted_statuses(settings: Settings, job_ids: set[int], timeout: float = 300
                      ) -> dict[int, list[dict]]:
    """Every status the Go status receiver accepted for these jobs, once each job has one.

    A job's terminal state and its callback row commit together, but the PATCH follows
    (after the run's batch, or from the reconciliation schedule), so wait for it.
    """
    def delivered():
        calls: dict[int, list[dict]] = defaultdict(list)
        for call in httpx.get(f"{settings.go_backend_url}/calls", timeout=30).json():
            if call["job_id"] in job_ids and call["answered"] == 200:
                calls[call["job_id"]].append(call)
        return calls if set(calls) == job_ids else None

    return _wait(f"a delivered status for each of {len(job_ids)} jobs", delivered, timeout,
                 every=3)


def workspace_docs(ledger: JobLedger, workspaces: list[str]) -> dict[str, set[str]]:
    with ledger.pool.connection() as conn:
        rows = conn.execute("SELECT workspace, id FROM lightrag_doc_status WHERE status = "
                            "'processed' AND workspace = ANY(%s)", (workspaces,)).fetchall()
    docs: dict[str, set[str]] = defaultdict(set)
    for workspace, doc_id in rows:
        docs[workspace].add(doc_id)
    return docs


def run_intervals(env: dict[str, str]) -> dict[str, list[tuple[float, float]]]:
    """(start, end) of every indexing run per collection, from Dagster's run records."""
    script = (
        "import json, dagster as dg\n"
        "from rag_pipeline.dagster_runs import COLLECTION_TAG\n"
        "with dg.DagsterInstance.get() as instance:\n"
        "    records = instance.get_run_records(dg.RunsFilter(job_name='index_collection'))\n"
        "    print(json.dumps([(r.dagster_run.tags.get(COLLECTION_TAG), r.start_time,"
        " r.end_time, r.dagster_run.status.value) for r in records]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    intervals: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for collection, start, end, _status in json.loads(out.strip().splitlines()[-1]):
        if start is not None:
            intervals[collection].append((start, end or time.time()))
    return intervals
