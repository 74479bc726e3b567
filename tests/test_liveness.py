"""Liveness from the ledger (invariant 9): silent runs are declared dead, failed in Dagster,
their jobs requeued and their collection freed; a run declared dead writes nothing more.

Real Kafka, PostgreSQL, LightRAG and Dagster storage; the run killed or paused here is a
real run worker process."""

from __future__ import annotations

import os
import signal
import time

import dagster as dg
import httpx
import pytest
from dagster._core.test_utils import create_run_for_test

from rag_pipeline.dagster_runs import COLLECTION_TAG
from rag_pipeline.definitions import build_definitions
from rag_pipeline.ledger import JobOutcome
from rag_pipeline.liveness.check import check_liveness
from rag_pipeline.liveness.leases import LEASE_LOST_EXIT_STATUS, RunLease
from rag_pipeline.local.corpus import pages as corpus_pages
from rag_pipeline.local.corpus import postgres_docs
from rag_pipeline.sensors.liveness import InstanceRuns
from rag_pipeline.vocabulary import DeathCause
from tests.helpers import (
    index,
    job_id_base,
    page_message,
    produce,
    run_worker_inserting,
    tick,
)

DEAD_PROCESS = "rag-pipeline:gone-host:1:00000000"  # the sessions of a host that is gone


def staged(s, ledger, collection: str, count: int, offset: int = 500) -> list[int]:
    base = job_id_base()
    docs = corpus_pages(postgres_docs(), limit=count, offset=offset)
    produce(s, s.kafka_topic, [page_message(base + i, collection, "l.test", p)
                               for i, p in enumerate(docs)])
    tick(s, ledger)
    return [base + i for i in range(count)]


def age_heartbeat(ledger, run_id: str, seconds: int) -> None:
    with ledger.transaction() as conn:
        conn.execute("UPDATE rag_pipeline.runs SET beat_at = now() - make_interval(secs => %s) "
                     "WHERE run_id = %s", (seconds, run_id))


def queued_run(instance, collection: str) -> dg.DagsterRun:
    """A run waiting in the queue (enqueued as the run coordinator does it)."""
    from dagster._core.events import DagsterEvent, DagsterEventType
    from dagster._core.remote_origin import (
        RegisteredCodeLocationOrigin,
        RemoteRepositoryOrigin,
    )

    origin = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("rag_pipeline"),
                                    "__repository__").get_job_origin("index_collection")
    run = create_run_for_test(instance, job_name="index_collection",
                              tags={COLLECTION_TAG: collection},
                              status=dg.DagsterRunStatus.NOT_STARTED, remote_job_origin=origin)
    instance.report_dagster_event(DagsterEvent(
        event_type_value=DagsterEventType.PIPELINE_ENQUEUED.value, job_name=run.job_name),
        run_id=run.run_id)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.QUEUED
    return run


def evaluate_liveness(defs: dg.Definitions, instance) -> str:
    sensor = defs.resolve_sensor_def("run_liveness")
    with dg.build_sensor_context(instance=instance, definitions=defs,
                                 resources=defs.resources) as context:
        return sensor(context).skip_reason.skip_message


def test_a_silent_started_run_is_failed_in_dagster_and_its_collection_freed(
        topics, ledger, unique):
    collection = f"live-{unique}"
    job_ids = staged(topics, ledger, collection, 3)
    defs = build_definitions(topics)
    with dg.instance_for_test() as instance:
        run = create_run_for_test(instance, job_name="index_collection",
                                  tags={COLLECTION_TAG: collection},
                                  status=dg.DagsterRunStatus.STARTED)
        ledger.claim_jobs(collection, run.run_id, [run.run_id], limit=10)
        assert ledger.heartbeat(run.run_id, collection, DEAD_PROCESS)
        key_before = {p.collection_id: p.run_key for p in ledger.pending_collections()}
        assert collection not in key_before  # every job is claimed

        # Still beating: nothing happens.
        assert "liveness_checked" in evaluate_liveness(defs, instance)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
        assert ledger.declared_dead(run.run_id) is None

        age_heartbeat(ledger, run.run_id, topics.run_heartbeat_timeout_seconds + 5)
        evaluate_liveness(defs, instance)

        failed = instance.get_run_by_id(run.run_id)
        assert failed.status == dg.DagsterRunStatus.FAILURE  # frees the per-collection slot
        [event] = [e for e in instance.all_logs(run.run_id)
                   if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_FAILURE"]
        assert "declared this run dead" in event.dagster_event.message
        assert "no heartbeat for" in event.dagster_event.message
    assert {(r["state"], r["attempts"]) for r in ledger.jobs(job_ids)} == {("queued", 1)}
    # A new run is requested for the collection (the sensor sees its queued jobs again).
    assert collection in {p.collection_id for p in ledger.pending_collections()}
    # What was declared dead can no longer beat or finish jobs.
    assert not ledger.heartbeat(run.run_id, collection, DEAD_PROCESS)
    recorded = ledger.finish_jobs(collection, [
        JobOutcome(job_id=j, request_id=1, state="completed", outcome="inserted",
                   collection_id=collection) for j in job_ids], max_retries=3,
        owner=run.run_id)
    assert recorded == []
    assert {r["state"] for r in ledger.jobs(job_ids)} == {"queued"}


def test_runs_that_never_beat_are_declared_dead_started_and_queued_alike(
        topics, ledger, unique):
    started_collection, queued_collection = f"ns-{unique}", f"nq-{unique}"
    staged(topics, ledger, started_collection, 1, offset=520)
    with dg.instance_for_test(overrides={"concurrency": {"runs": {
            "max_concurrent_runs": 4}}}) as instance:
        started = create_run_for_test(instance, job_name="index_collection",
                                      tags={COLLECTION_TAG: started_collection},
                                      status=dg.DagsterRunStatus.STARTED)
        queued = queued_run(instance, queued_collection)
        runs = InstanceRuns(instance)
        kwargs = {"heartbeat_timeout_seconds": 60, "start_timeout_seconds": 0,
                  "max_retries": 3, "emit": print}
        first = check_liveness(ledger, runs, **kwargs)
        # The started run is past its (zero) start bound; the queued one is timed from the
        # moment it was first seen with a free slot and nothing of its collection running.
        assert started.run_id in first.declared_dead
        assert queued.run_id not in first.declared_dead
        assert queued.run_id in runs.unblocked_since
        time.sleep(0.1)
        second = check_liveness(ledger, runs, **kwargs)
        assert queued.run_id in second.declared_dead
        for run in (started, queued):
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert "never started working" in ledger.declared_dead(started.run_id)


def test_a_queued_run_behind_a_live_run_of_its_collection_is_left_waiting(
        topics, ledger, unique):
    collection = f"nw-{unique}"
    with dg.instance_for_test(overrides={"concurrency": {"runs": {
            "max_concurrent_runs": 4}}}) as instance:
        live = create_run_for_test(instance, job_name="index_collection",
                                   tags={COLLECTION_TAG: collection},
                                   status=dg.DagsterRunStatus.STARTED)
        ledger.heartbeat(live.run_id, collection, DEAD_PROCESS)
        queued = queued_run(instance, collection)
        runs = InstanceRuns(instance)
        for _ in range(2):
            report = check_liveness(ledger, runs, heartbeat_timeout_seconds=60,
                                    start_timeout_seconds=0, max_retries=3, emit=print)
            assert not {live.run_id, queued.run_id} & set(report.declared_dead)
            time.sleep(0.1)
        assert instance.get_run_by_id(queued.run_id).status == dg.DagsterRunStatus.QUEUED
        ledger.finish_run(live.run_id, collection, "success")


def test_a_lease_is_lost_within_a_beat_once_its_run_is_declared_dead(topics, ledger, unique):
    collection = f"ll-{unique}"
    lost: list[str] = []
    with RunLease(ledger, f"run-{unique}", collection, 60, on_lost=lost.append,
                  beat_seconds=0.2, process=DEAD_PROCESS) as lease:
        lease.check()
        ledger.declare_run_dead(f"run-{unique}", collection, "a test declared it dead",
                                DeathCause.SILENT, max_retries=3)
        deadline = time.monotonic() + 5
        while not lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lost and "a test declared it dead" in lost[0]
        with pytest.raises(Exception, match="declared dead"):
            lease.check()


def beat_age(ledger, run_id: str) -> float:
    with ledger.pool.connection() as conn:
        return conn.execute("SELECT extract(epoch FROM now() - beat_at)::float8 FROM "
                            "rag_pipeline.runs WHERE run_id = %s", (run_id,)).fetchone()[0]


def test_a_run_whose_working_thread_stops_progressing_stops_beating_then_stops(
        topics, ledger, unique):
    """A run that beats must be a run that works: its lease thread beats only while the
    working thread calls check(); past the progress timeout the beats stop (liveness
    declares the run silent), and past that plus the heartbeat timeout the run is lost."""
    run_id, lost = f"run-{unique}", []
    with RunLease(ledger, run_id, f"lp-{unique}", timeout_seconds=3.0, on_lost=lost.append,
                  beat_seconds=0.1, process=DEAD_PROCESS,
                  progress_timeout_seconds=0.6) as lease:
        for _ in range(10):  # working: beats go on
            time.sleep(0.1)
            lease.check()
        assert beat_age(ledger, run_id) < 0.8
        deadline = time.monotonic() + 1.6
        while time.monotonic() < deadline:
            time.sleep(0.05)
        assert beat_age(ledger, run_id) > 0.8, "a run that made no progress kept beating"
        assert not lost
        deadline = time.monotonic() + 5
        while not lost and time.monotonic() < deadline:
            time.sleep(0.05)
    assert lost and "made no progress" in lost[0]


def test_a_paused_run_declared_dead_writes_nothing_after_it_resumes(
        topics, ledger, unique, model):
    """A run worker frozen mid-insert (SIGSTOP: alive, silent) is declared dead; resumed,
    it stops without recording anything, its lock is free, and a new run completes the
    collection with exactly one document per page."""
    collection = f"lp-{unique}"
    job_ids = staged(topics, ledger, collection, 12, offset=540)
    httpx.post(f"{model}/control", json={"latency_ms": 300})
    try:
        with run_worker_inserting(topics, ledger, collection,
                                  extra_env={"RUN_HEARTBEAT_TIMEOUT_SECONDS": "20"}) as worker:
            os.killpg(worker.pid, signal.SIGSTOP)
            [run_id] = {r["run_id"] for r in ledger.jobs(job_ids) if r["run_id"]}
            time.sleep(21)
            with dg.instance_for_test() as instance:
                report = check_liveness(ledger, InstanceRuns(instance),
                                        heartbeat_timeout_seconds=20, start_timeout_seconds=120,
                                        max_retries=3, emit=print)
            assert run_id in report.declared_dead
            with ledger.pool.connection() as conn:
                # Its collection lock went with its sessions.
                key = f"rag_pipeline:collection:{collection}"
                assert conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))",
                                    (key,)).fetchone()[0]
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
            os.killpg(worker.pid, signal.SIGCONT)
            assert worker.wait(60) in (LEASE_LOST_EXIT_STATUS, 1)
    finally:
        httpx.post(f"{model}/control", json={"latency_ms": 0})
    with ledger.pool.connection() as conn:
        after = conn.execute(
            "SELECT count(*) FROM rag_pipeline.jobs j, rag_pipeline.runs r WHERE r.run_id = %s "
            "AND j.job_id = ANY(%s) AND j.finished_at > r.declared_dead_at",
            (run_id, job_ids)).fetchone()[0]
    assert after == 0, "the run declared dead finished jobs afterwards"
    with dg.instance_for_test() as instance:
        assert index(topics, instance, collection).success
    assert ledger.job_states(collection) == {"completed": 12}
    with ledger.pool.connection() as conn:
        per_url = conn.execute(
            "SELECT max(n) FROM (SELECT count(*) n FROM lightrag_doc_status WHERE workspace = %s "
            "AND status = 'processed' GROUP BY file_path) d", (collection,)).fetchone()[0]
        orphans = conn.execute(
            "SELECT count(*) FROM lightrag_doc_chunks c WHERE c.workspace = %s AND NOT EXISTS "
            "(SELECT 1 FROM lightrag_doc_status s WHERE s.workspace = c.workspace "
            "AND s.id = c.full_doc_id AND s.status = 'processed')", (collection,)).fetchone()[0]
    assert (per_url, orphans) == (1, 0)


def test_a_materialization_from_the_ui_is_tagged_watched_and_recorded(topics, ledger, unique):
    """The assets materialized outside the indexing jobs (the UI's Materialize button runs
    the implicit asset job): the run carries the collection tag that the run queue limits
    and the liveness check watches, and records its outcome without job hooks."""
    from rag_pipeline.assets.indexing import indexing_assets

    collection = f"lm-{unique}"
    staged(topics, ledger, collection, 2, offset=560)
    defs = build_definitions(topics)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("collections", [collection])
        result = dg.materialize(indexing_assets, partition_key=collection, instance=instance,
                                resources=defs.resources)
        assert result.success
        run = instance.get_run_by_id(result.run_id)
    assert run.job_name == "__ephemeral_asset_job__"
    assert run.tags[COLLECTION_TAG] == collection
    assert ledger.run_outcome(result.run_id) == "success"
    assert ledger.job_states(collection) == {"completed": 2}
