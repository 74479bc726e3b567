"""A run whose process is gone is declared dead in seconds, not after the heartbeat timeout:
a killed process (SIGKILL, OOM, a stopped container) has its PostgreSQL sessions closed by
its kernel, while a live one keeps a pooled session (`DeathCause.GONE`, invariant 9).

The heartbeat timeout is set far out of reach here, so only the gone path can fire."""

from __future__ import annotations

import os
import signal
import time

import dagster as dg
import httpx
import psycopg
from dagster._core.test_utils import create_run_for_test

from rag_pipeline.dagster_runs import COLLECTION_TAG
from rag_pipeline.liveness.check import GONE_AFTER_SECONDS, check_liveness
from rag_pipeline.sensors.liveness import InstanceRuns
from tests.helpers import run_worker_inserting
from tests.test_liveness import DEAD_PROCESS, age_heartbeat, staged

OUT_OF_REACH = {"heartbeat_timeout_seconds": 3600, "start_timeout_seconds": 3600,
                "max_retries": 3, "emit": print}


def sessions_named(ledger, process: str) -> int:
    with ledger.pool.connection() as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                            (process,)).fetchone()[0]


def wait_for_server_uptime(ledger, seconds: float) -> None:
    """Sessions are not trusted right after a PostgreSQL start (nobody has reconnected
    yet); the test session may just have started the server."""
    with ledger.pool.connection() as conn:
        up = conn.execute("SELECT extract(epoch FROM now() - pg_postmaster_start_time())"
                          "::float8").fetchone()[0]
    time.sleep(max(0.0, seconds - up))


def test_a_run_is_declared_gone_only_once_its_process_has_no_session_left(
        topics, ledger, unique, settings):
    wait_for_server_uptime(ledger, GONE_AFTER_SECONDS + 1)
    collection, quiet_collection = f"lg-{unique}", f"lq-{unique}"
    job_ids = staged(topics, ledger, collection, 2, offset=580)
    process = f"rag-pipeline:test-host:{os.getpid()}:{unique[-8:]}"
    session = psycopg.connect(settings.postgres_conninfo(), **settings.postgres_kwargs(),
                              application_name=process)
    with dg.instance_for_test() as instance:
        run, quiet = (create_run_for_test(instance, job_name="index_collection",
                                          tags={COLLECTION_TAG: c},
                                          status=dg.DagsterRunStatus.STARTED)
                      for c in (collection, quiet_collection))
        ledger.claim_jobs(collection, run.run_id, [run.run_id], limit=10)
        assert ledger.heartbeat(run.run_id, collection, process)
        age_heartbeat(ledger, run.run_id, 30)
        # No session under its name, but it beat a moment ago: not gone (yet).
        assert ledger.heartbeat(quiet.run_id, quiet_collection, DEAD_PROCESS)
        runs = InstanceRuns(instance)

        # Several beats missed, but its process still holds a session: alive.
        assert check_liveness(ledger, runs, **OUT_OF_REACH).declared_dead == []

        session.close()
        deadline = time.monotonic() + 10
        while sessions_named(ledger, process) and time.monotonic() < deadline:
            time.sleep(0.1)
        report = check_liveness(ledger, runs, **OUT_OF_REACH)

        assert report.declared_dead == [run.run_id]
        assert "no PostgreSQL session left" in ledger.declared_dead(run.run_id)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(quiet.run_id).status == dg.DagsterRunStatus.STARTED
    assert {(r["state"], r["attempts"]) for r in ledger.jobs(job_ids)} == {("queued", 1)}
    assert ledger.counters().get(("runs_declared_dead", "cause=gone"), 0) >= 1
    ledger.finish_run(quiet.run_id, quiet_collection, "success")


def test_a_killed_run_worker_is_taken_over_without_waiting_for_the_heartbeat_timeout(
        topics, ledger, unique, model):
    """A real run worker SIGKILLed with its process group mid-insert."""
    collection = f"lk-{unique}"
    job_ids = staged(topics, ledger, collection, 12, offset=600)
    httpx.post(f"{model}/control", json={"latency_ms": 300})
    declared: list[str] = []
    try:
        with run_worker_inserting(topics, ledger, collection) as worker:
            [run_id] = {r["run_id"] for r in ledger.jobs(job_ids) if r["run_id"]}
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(30)
        with dg.instance_for_test() as instance:
            deadline = time.monotonic() + 120
            while not declared and time.monotonic() < deadline:
                declared = check_liveness(ledger, InstanceRuns(instance),
                                          **OUT_OF_REACH).declared_dead
                time.sleep(1)
    finally:
        httpx.post(f"{model}/control", json={"latency_ms": 0})
    assert declared == [run_id]
    assert "no PostgreSQL session left" in ledger.declared_dead(run_id)
    states = {r["state"] for r in ledger.jobs(job_ids)}
    assert "running" not in states and "queued" in states
    with ledger.pool.connection() as conn:  # its collection lock went with its process
        key = f"rag_pipeline:collection:{collection}"
        assert conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


def test_lightrag_sessions_carry_the_name_of_the_process_that_opens_them(monkeypatch):
    """A run worker inherits its code server's environment: the name it inherits is
    replaced by its own (a run declared dead must lose its LightRAG sessions too), while an
    installation's own POSTGRES_SERVER_SETTINGS is kept."""
    from rag_pipeline.knowledge.workspaces import PostgresOptions, _export_postgres_env
    from rag_pipeline.ledger.connection import STATEMENT_TIMEOUT_MS, process_name

    pg = PostgresOptions(postgres_host="h", postgres_port=5432, postgres_user="u",
                         postgres_password="p", postgres_db="d", postgres_sslmode="prefer",
                         postgres_sslrootcert="", lightrag_pool_size=8)
    monkeypatch.setattr(os, "environ", {  # what a code server passes to its run workers
        "POSTGRES_SERVER_SETTINGS": "application_name=rag-pipeline:code:1:ab"})
    _export_postgres_env(pg)
    assert os.environ["POSTGRES_SERVER_SETTINGS"] == (
        f"application_name={process_name()}&statement_timeout={STATEMENT_TIMEOUT_MS}")
    os.environ["POSTGRES_SERVER_SETTINGS"] = "statement_timeout=600000"
    _export_postgres_env(pg)
    assert os.environ["POSTGRES_SERVER_SETTINGS"] == "statement_timeout=600000"
