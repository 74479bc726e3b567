"""Job outcomes reach the Go backend: outbox delivery (the status_deliverer sensor),
run-failure sensors, reconciliation. Real Kafka, PostgreSQL and LightRAG; the Go API
stand-in over HTTP."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx

from rag_pipeline.definitions import build_definitions, build_resources
from rag_pipeline.ledger import JobOutcome
from rag_pipeline.local.corpus import pages as corpus_pages
from rag_pipeline.local.corpus import postgres_docs
from rag_pipeline.outbox import DeliveryPolicy, GoApiClient, deliver_outbox
from rag_pipeline.resources import LedgerResource, LightRAGResource
from tests.helpers import dead_letters, job_id_base, page_message, produce, raw, tick

FAST = DeliveryPolicy(timeout_seconds=5, base_backoff_seconds=1, max_backoff_seconds=8)


def calls_for(go_api: str, job_ids: list[int]) -> dict[int, list[dict]]:
    by_job: dict[int, list[dict]] = defaultdict(list)
    for call in httpx.get(f"{go_api}/calls").json():
        if call["job_id"] in job_ids:
            by_job[call["job_id"]].append(call)
    return by_job


def accepted(calls: list[dict]) -> list[dict]:
    return [c for c in calls if c["answered"] == 200]


def staged_jobs(s, ledger, unique, count: int) -> list[int]:
    base = job_id_base()
    docs = corpus_pages(postgres_docs(), limit=count, offset=900)
    produce(s, s.kafka_topic, [page_message(base + i, f"c-{unique}", "o.test", p)
                               for i, p in enumerate(docs)])
    tick(s, ledger)
    return [base + i for i in range(count)]


def complete(ledger, collection: str, job_ids: list[int], state="completed") -> None:
    ledger.finish_jobs(collection, [
        JobOutcome(job_id=j, request_id=42, state=state, outcome="inserted",
                   error_code=None if state == "completed" else "lightrag_failed",
                   error_msg=None if state == "completed" else "lightrag_failed: boom",
                   collection_id=collection) for j in job_ids], max_retries=3)


def test_outbox_delivers_with_idempotency_keys_and_classifies_answers(
        topics, ledger, unique, go_api):
    job_ids = staged_jobs(topics, ledger, unique, 3)
    complete(ledger, f"c-{unique}", job_ids[:2])
    complete(ledger, f"c-{unique}", job_ids[2:], state="failed")
    client = GoApiClient(go_api, 5)
    report = deliver_outbox(ledger, client, FAST, job_ids=job_ids)
    assert (report.delivered, report.retried, report.rejected) == (3, 0, 0)
    calls = calls_for(go_api, job_ids)
    assert [c["status"] for c in calls[job_ids[0]]] == ["completed"]
    assert calls[job_ids[2]][0]["status"] == "failed"
    assert calls[job_ids[2]][0]["error_msg"] == "lightrag_failed: boom"
    assert calls[job_ids[0]][0]["idempotency_key"] == f"job-{job_ids[0]}-completed"
    # Delivered rows are not sent again.
    assert deliver_outbox(ledger, client, FAST, job_ids=job_ids).delivered == 0

    # A 4xx other than 408/409/429 is rejected and kept with the body, not retried.
    more = staged_jobs(topics, ledger, unique + "b", 2)
    complete(ledger, f"c-{unique}b", more)
    httpx.post(f"{go_api}/control", json={"fail_status": 404, "fail_seconds": 60})
    report = deliver_outbox(ledger, client, FAST, job_ids=more)
    assert report.rejected == 2
    rows = {c["job_id"]: c for c in ledger.outbox_rows() if c["job_id"] in more}
    assert {r["state"] for r in rows.values()} == {"rejected"}
    assert {r["response_code"] for r in rows.values()} == {404}
    # 429 and 5xx are retried later, with backoff.
    extra = staged_jobs(topics, ledger, unique + "c", 1)
    complete(ledger, f"c-{unique}c", extra)
    httpx.post(f"{go_api}/control", json={"fail_status": 429, "fail_seconds": 60})
    assert deliver_outbox(ledger, client, FAST, job_ids=extra).retried == 1
    [row] = ledger.outbox_rows(extra[0])
    assert row["state"] == "pending" and row["next_attempt_at"] > datetime.now(UTC)
    client.close()


def test_go_api_down_then_recovering_loses_nothing_and_backs_off(
        topics, ledger, unique, go_api):
    job_ids = staged_jobs(topics, ledger, unique, 4)
    complete(ledger, f"c-{unique}", job_ids)
    httpx.post(f"{go_api}/control", json={"fail_status": 500, "fail_seconds": 4})
    client = GoApiClient(go_api, 5)
    start = datetime.now(UTC)
    attempts = 0
    while datetime.now(UTC) - start < timedelta(seconds=20):
        report = deliver_outbox(ledger, client, FAST, job_ids=job_ids)
        attempts += report.delivered + report.retried
        if all(r["state"] == "delivered" for r in ledger.outbox_rows() if r["job_id"] in job_ids):
            break
    client.close()
    rows = [r for r in ledger.outbox_rows() if r["job_id"] in job_ids]
    assert {r["state"] for r in rows} == {"delivered"}
    calls = calls_for(go_api, job_ids)
    assert all(len(accepted(calls[j])) == 1 for j in job_ids), "exactly one accepted status"
    # Backoff: a tight loop for 4 s of outage made only a few attempts per job, not hundreds.
    assert all(len(calls[j]) <= 5 for j in job_ids), {j: len(calls[j]) for j in job_ids}
    assert all(r["attempts"] >= 2 for r in rows)


def deliver_statuses(defs: dg.Definitions, instance) -> str:
    """One tick of the status_deliverer sensor; returns its skip message."""
    sensor = defs.resolve_sensor_def("status_deliverer")
    with dg.build_sensor_context(instance=instance, definitions=defs,
                                 resources=defs.resources) as context:
        return sensor(context).skip_message


def execute(defs: dg.Definitions, job: str, instance, partition: str | None = None,
            **kwargs) -> dg.ExecuteInProcessResult:
    if partition:
        instance.add_dynamic_partitions("collections", [partition])
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance, partition_key=partition, raise_on_error=False, **kwargs)


def test_every_job_of_a_mixed_batch_gets_exactly_one_terminal_status(
        topics, ledger, unique, go_api, model):
    collection = f"c-{unique}"
    docs = corpus_pages(postgres_docs(), limit=4, offset=950)
    base = job_id_base()
    poison = f"REFUSED-{unique}"
    httpx.post(f"{model}/control", json={"refuse_text": poison})
    good = [page_message(base + i, collection, "m.test", p) for i, p in enumerate(docs)]
    refused = page_message(base + 10, collection, "m.test", docs[0], name="refused.html",
                           html=f"<html><body><p>{poison} is in this page.</p></body>"
                                "</html>".encode())
    broken = json.loads(json.dumps(good[0]))
    broken.update(job_id=base + 11)
    broken["content"]["encoding"] = "brotli"
    produce(topics, topics.kafka_topic, [*good, refused, broken,
                                         raw(b"x", b'{"job_id": ' + str(base + 12).encode())])
    defs = build_definitions(topics)
    with dg.instance_for_test() as instance:
        sensor = defs.resolve_sensor_def("indexing_jobs_sensor")
        with dg.build_sensor_context(instance=instance, definitions=defs,
                                     resources=defs.resources) as context:
            result = sensor(context)
        assert [r.partition_key for r in result.run_requests if r.partition_key == collection]
        run = execute(defs, "index_collection", instance, collection)
        assert run.success
        job_ids = [base + i for i in range(4)] + [base + 10, base + 11, base + 12]
        # The run sent nothing: statuses wait in the outbox for the deliverer.
        assert not calls_for(go_api, job_ids)
        deliver_statuses(defs, instance)
    calls = calls_for(go_api, job_ids)
    statuses = {j: [(c["status"], (c["error_msg"] or "").split(":")[0]) for c in accepted(calls[j])]
                for j in job_ids}
    assert statuses == {
        **{base + i: [("completed", "")] for i in range(4)},
        base + 10: [("failed", "lightrag_failed")],
        base + 11: [("failed", "unsupported_encoding")],
        base + 12: [("failed", "invalid_json")],
    }
    letters = {d["job_id"]: d["error_class"] for d in dead_letters(topics, topics.kafka_dlq_topic)}
    assert letters == {base + 10: "lightrag_failed", base + 11: "unsupported_encoding",
                       base + 12: "invalid_json"}
    assert ledger.run_outcome(run.run_id) == "success"


def failing_definitions(s) -> dg.Definitions:
    """The code location with a LightRAG whose database does not exist: runs fail."""
    resources = build_resources(s)
    password = s.postgres_password.get_secret_value()
    broken = LightRAGResource(**{**resources["lightrag"].model_dump(),
                                 "postgres_db": "no_such_database"})
    # Plain values: run status sensor contexts do not resolve EnvVar resources.
    plain = LedgerResource(**{**resources["ledger"].model_dump(), "postgres_password": password})
    return build_definitions(s, resources={"lightrag": broken, "ledger": plain})


def test_failed_runs_requeue_their_jobs_then_declare_them_dead(
        topics, ledger, unique, go_api):
    s = topics.model_copy(update={"max_retries": 1})
    collection = f"c-{unique}"
    job_ids = staged_jobs(s, ledger, unique, 2)
    defs = failing_definitions(s)
    sensor = defs.resolve_sensor_def("indexing_run_failed")
    with dg.instance_for_test() as instance:
        for attempt in (1, 2):
            run = execute(defs, "index_collection", instance, collection)
            assert not run.success
            failure = next(e for e in run.all_events if e.event_type_value == "PIPELINE_FAILURE")
            with dg.build_run_status_sensor_context(
                    sensor_name="indexing_run_failed", dagster_instance=instance,
                    dagster_run=run.dagster_run, dagster_event=failure,
                    resources=defs.resources).for_run_failure() as context:
                sensor(context)
            deliver_statuses(defs, instance)
            states = {r["job_id"]: (r["state"], r["attempts"]) for r in ledger.jobs(job_ids)}
            if attempt == 1:
                assert states == {j: ("queued", 1) for j in job_ids}
            else:
                assert states == {j: ("dead", 2) for j in job_ids}
    calls = calls_for(go_api, job_ids)
    for j in job_ids:
        [call] = accepted(calls[j])
        assert call["status"] == "failed" and call["error_msg"].startswith("dead after 2 attempts")
    letters = {d["job_id"]: d for d in dead_letters(s, s.kafka_dlq_topic)}
    assert {letters[j]["error_class"] for j in job_ids} == {"run_failed"}
    assert {letters[j]["retry_count"] for j in job_ids} == {2}


def test_reconcile_schedule_summarises_requests(topics, ledger, unique, go_api):
    job_ids = staged_jobs(topics, ledger, unique, 3)
    complete(ledger, f"c-{unique}", job_ids[:1])
    defs = build_definitions(topics)
    schedule = defs.resolve_schedule_def("reconcile_stuck_jobs_schedule")
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance,
                                            scheduled_execution_time=datetime.now(UTC))
        [request] = schedule.evaluate_tick(context).run_requests
        result = execute(defs, "reconcile_stuck_jobs", instance, run_config=request.run_config)
        assert result.success
        [event] = result.get_asset_materialization_events()
        meta = {k: v.value for k, v in event.materialization.metadata.items()}
    assert "| request_id |" in meta["open_requests"]
    assert meta["jobs_completed"] >= 1 and meta["jobs_pending"] >= 2


def test_stale_queued_collection_is_nudged_into_a_new_run_key(ledger, topics, unique):
    staged_jobs(topics, ledger, unique, 1)
    collection = f"c-{unique}"
    with ledger.transaction() as conn:
        conn.execute("UPDATE rag_pipeline.jobs SET updated_at = now() - interval '1 hour' "
                     "WHERE collection_id = %s", (collection,))
    before = {p.collection_id: p.run_key for p in ledger.pending_collections()}[collection]
    from rag_pipeline.reconciliation import nudge_stale_collections

    nudged = nudge_stale_collections(ledger, lambda c: False, grace_seconds=60, log=print)
    assert collection in nudged
    after = {p.collection_id: p.run_key for p in ledger.pending_collections()}[collection]
    assert after != before

