"""Retention (RETENTION_DAYS): finished jobs lose their payloads, never their outcome, their
duplicate detection or anything LightRAG holds; old Dagster runs go, each partition's latest
success stays."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import dagster as dg
import httpx
from dagster._core.test_utils import create_run_for_test

from rag_pipeline.dagster_runs import COLLECTION_TAG
from rag_pipeline.definitions import build_definitions
from rag_pipeline.ledger import JobLedger
from rag_pipeline.local.corpus import pages as corpus_pages
from rag_pipeline.local.corpus import postgres_docs
from rag_pipeline.retention import RetentionReport, prune_dagster_runs, prune_ledger
from tests.helpers import index, job_id_base, lightrag_statuses, page_message, produce, tick

FAR = 3600.0  # a pass's time budget that never runs out here


def payloads(ledger: JobLedger, job_ids: list[int]) -> dict[int, tuple]:
    """Per job: (anything of the message kept: value, Kafka key or headers; the cleaned text
    kept; pruned)."""
    with ledger.pool.connection() as conn:
        rows = conn.execute(
            "SELECT job_id, message IS NOT NULL OR kafka_key IS NOT NULL "
            "  OR kafka_headers IS NOT NULL, clean_text IS NOT NULL, pruned_at IS NOT NULL "
            "FROM rag_pipeline.jobs WHERE job_id = ANY(%s)", (job_ids,)).fetchall()
    return {r[0]: r[1:] for r in rows}


def lightrag_rows(ledger: JobLedger, workspace: str) -> dict[str, int]:
    with ledger.pool.connection() as conn:
        return {table: conn.execute(f"SELECT count(*) FROM {table} WHERE workspace = %s",
                                    (workspace,)).fetchone()[0]
                for table in ("lightrag_doc_full", "lightrag_doc_chunks", "lightrag_doc_status")}


def age(ledger: JobLedger, collection: str, days: int) -> None:
    """The collection's jobs finished `days` ago (other tests' jobs stay recent)."""
    with ledger.transaction() as conn:
        conn.execute("UPDATE rag_pipeline.jobs SET finished_at = now() - make_interval("
                     "days => %s) WHERE collection_id = %s", (days, collection))


def prune(ledger: JobLedger, days: float = 30) -> RetentionReport:
    report = RetentionReport()
    prune_ledger(ledger, days, time.monotonic() + FAR, report, lambda line: None)
    return report


def test_a_pruned_job_keeps_its_outcome_its_duplicates_and_its_lightrag_document(
        topics, ledger, unique, model, go_api):
    collection = f"c-{unique}"
    paths = corpus_pages(postgres_docs(), limit=3, offset=520)
    base = job_id_base()
    messages = [page_message(base + i, collection, "keep.test", p) for i, p in enumerate(paths)]
    job_ids = [m["job_id"] for m in messages]
    defs = build_definitions(topics)
    with dg.instance_for_test() as instance:
        produce(topics, topics.kafka_topic, messages)
        assert tick(topics, ledger).staged == 3
        assert index(topics, instance, collection).success
        age(ledger, collection, 40)

        before = {j: ledger.job(j) for j in job_ids}
        in_lightrag = lightrag_rows(ledger, collection)
        reporter = defs.resources["outbox"].build(ledger)
        assert prune(ledger).jobs_pruned == 0, "statuses not delivered yet keep payloads"
        reporter.deliver(job_ids=job_ids)
        # A status still on its way to the Go API keeps its job's payload (its dead letter
        # may need the original message).
        with ledger.transaction() as conn:
            conn.execute("UPDATE rag_pipeline.outbox SET state = 'pending', "
                         "next_attempt_at = now() WHERE job_id = %s", (job_ids[0],))
        report = prune(ledger)
        assert report.jobs_pruned >= 2 and report.bytes_pruned > 0
        assert payloads(ledger, job_ids) == {job_ids[0]: (True, True, False),
                                             job_ids[1]: (False, False, True),
                                             job_ids[2]: (False, False, True)}
        reporter.deliver(job_ids=job_ids)
        assert {r["state"] for r in ledger.outbox_rows(job_ids[0])} == {"delivered"}
        assert prune(ledger).jobs_pruned >= 1
        assert payloads(ledger, job_ids) == {j: (False, False, True) for j in job_ids}
        # Its outcome, metrics and Kafka coordinates are what they were.
        assert {j: ledger.job(j) for j in job_ids} == before
        assert ledger.job_states(collection) == {"completed": 3}
        # LightRAG keeps the documents, chunks and statuses; nothing there is pruned.
        assert lightrag_rows(ledger, collection) == in_lightrag
        assert lightrag_statuses(ledger, collection) == {"processed"}
        assert prune(ledger).jobs_pruned == 0, "a pruned job is not pruned again"

        # The same messages replayed from offset 0: duplicates, nothing staged again.
        with ledger.transaction() as conn:
            conn.execute("UPDATE rag_pipeline.kafka_offsets SET next_offset = 0 "
                         "WHERE topic = %s", (topics.kafka_topic,))
        replay = tick(topics, ledger)
        assert (replay.staged, replay.duplicates, replay.conflicts) == (0, 3, 0)
        # Published again (same job_ids, new offsets): a redelivery, not a conflict.
        produce(topics, topics.kafka_topic, messages)
        again = tick(topics, ledger)
        assert (again.staged, again.conflicts) == (0, 0)
        assert {j: ledger.job(j)["state"] for j in job_ids} == dict.fromkeys(job_ids,
                                                                             "completed")

        # The pages crawled again (new job_ids, same content): unchanged, no model call.
        calls = httpx.get(f"{model}/stats").json()["chat_calls"]
        recrawl = [page_message(base + 10 + i, collection, "keep.test", p)
                   for i, p in enumerate(paths)]
        produce(topics, topics.kafka_topic, recrawl)
        assert tick(topics, ledger).staged == 3
        assert index(topics, instance, collection).success
        assert {ledger.job(m["job_id"])["outcome"] for m in recrawl} == {"unchanged"}
        assert httpx.get(f"{model}/stats").json()["chat_calls"] == calls

        # Reprocessing the collection from the ledger skips what has no payload left and
        # leaves LightRAG as it is.
        age(ledger, collection, 40)
        reporter.deliver(job_ids=[m["job_id"] for m in recrawl])
        prune(ledger)
        result = index(topics, instance, collection, scope="everything")
        assert result.success
        assert lightrag_statuses(ledger, collection) == {"processed"}
        assert lightrag_rows(ledger, collection) == in_lightrag
        assert ledger.job_states(collection) == {"completed": 6}


def test_recent_and_unfinished_jobs_keep_their_payloads(topics, ledger, unique):
    collection = f"c-{unique}"
    paths = corpus_pages(postgres_docs(), limit=2, offset=530)
    base = job_id_base()
    messages = [page_message(base + i, collection, "recent.test", p)
                for i, p in enumerate(paths)]
    produce(topics, topics.kafka_topic, messages)
    assert tick(topics, ledger).staged == 2
    age(ledger, collection, 40)  # finished_at stays NULL for queued jobs
    prune(ledger)
    assert payloads(ledger, [m["job_id"] for m in messages]) == {
        m["job_id"]: (True, False, False) for m in messages}


def test_old_runs_go_but_each_partitions_latest_success_stays():
    ok, failed = dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE
    with dg.instance_for_test() as instance:
        def run(job: str, status: dg.DagsterRunStatus, partition: str | None = None) -> str:
            tags = {COLLECTION_TAG: partition} if partition else {}
            return create_run_for_test(instance, job_name=job, status=status,
                                       tags=tags).run_id

        a_old, a_failed, a_latest = (run("index_collection", s, "a") for s in (ok, failed, ok))
        b_latest = run("index_collection", ok, "b")
        reindex_a = run("reindex_collection", ok, "a")
        reconcile_old, reconcile_latest = (run("reconcile_stuck_jobs", ok) for _ in range(2))
        started = run("index_collection", dg.DagsterRunStatus.STARTED, "a")

        report = RetentionReport()
        # days=0: every run that has ended is old enough; two runs a page, so that a page
        # ends on a deleted run and the next page must still be found.
        prune_dagster_runs(instance, 0, time.monotonic() + FAR, report, lambda line: None,
                           batch=2)
        left = {r.run_id for r in instance.get_runs()}
        assert left == {a_latest, b_latest, reindex_a, reconcile_latest, started}
        assert (report.runs_deleted, report.runs_kept) == (3, 4)
        assert {a_old, a_failed, reconcile_old}.isdisjoint(left)


def test_the_retention_schedule_passes_retention_days(topics):
    s = topics.model_copy(update={"retention_days": 12.5})
    with dg.instance_for_test() as instance:
        # Resolved inside the instance's context: Dagster looks for the current instance.
        schedule = build_definitions(s).resolve_schedule_def("apply_retention_schedule")
        context = dg.build_schedule_context(instance=instance,
                                            scheduled_execution_time=datetime.now(UTC))
        [request] = schedule.evaluate_tick(context).run_requests
    assert request.run_config["ops"]["retention"]["config"]["retention_days"] == 12.5
