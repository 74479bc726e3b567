"""Job outcomes reach the Go backend through the outbox (`rag_pipeline/outbox.py`, the
status_deliverer sensor): idempotency keys, a Go API that is down or refuses, and exactly one
terminal status per job of a mixed batch. Real Kafka, PostgreSQL and LightRAG; the Go API
stand-in over HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx

from rag_pipeline.definitions import build_definitions
from rag_pipeline.local.corpus import pages as corpus_pages
from rag_pipeline.local.corpus import postgres_docs
from rag_pipeline.outbox import DeliveryPolicy, GoApiClient, deliver_outbox
from tests.helpers import (
    accepted,
    calls_for,
    complete,
    dead_letters,
    deliver_statuses,
    execute,
    job_id_base,
    page_message,
    produce,
    raw,
    staged_jobs,
)

FAST = DeliveryPolicy(timeout_seconds=5, base_backoff_seconds=1, max_backoff_seconds=8)


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


def reopen(ledger, job_id: int, run_id: str) -> None:
    """The job is processed again (a reindex): running under `run_id`."""
    with ledger.transaction() as conn:
        conn.execute("UPDATE rag_pipeline.jobs SET state = 'running', run_id = %s "
                     "WHERE job_id = %s", (run_id, job_id))


def test_a_job_reported_again_after_a_reindex_ends_at_its_final_state_in_order(
        topics, ledger, unique, go_api):
    """completed -> failed -> completed (reindexes) reach the Go API in that order, each
    under its own key; an unchanged report is not sent twice."""
    collection = f"c-{unique}"
    [job_id] = staged_jobs(topics, ledger, unique, 1)
    complete(ledger, collection, [job_id])
    for state in ("failed", "completed", "completed"):
        reopen(ledger, job_id, f"reindex-{unique}")
        complete(ledger, collection, [job_id], state=state)
    rows = ledger.outbox_rows(job_id)
    assert [r["status"] for r in rows] == ["completed", "failed", "completed"]
    assert [r["idempotency_key"] for r in rows] == [
        f"job-{job_id}-completed", f"job-{job_id}-failed-2", f"job-{job_id}-completed-3"]

    client = GoApiClient(go_api, 5)
    # Each delivery sends at most the oldest pending report of the job: never out of order.
    sent = [deliver_outbox(ledger, client, FAST, job_ids=[job_id]).delivered for _ in range(4)]
    client.close()
    assert sent == [1, 1, 1, 0]
    assert [c["status"] for c in accepted(calls_for(go_api, [job_id])[job_id])] == [
        "completed", "failed", "completed"]


def test_a_late_answer_changes_no_report_that_moved_on_and_rejected_ones_can_be_resent(
        topics, ledger, unique, go_api):
    job_ids = staged_jobs(topics, ledger, unique, 2)
    complete(ledger, f"c-{unique}", job_ids)
    client = GoApiClient(go_api, 5)
    assert deliver_outbox(ledger, client, FAST, job_ids=job_ids[:1]).delivered == 1
    [delivered] = ledger.outbox_rows(job_ids[0])
    # A deliverer whose answer comes late (its lease ran out, another sent the row).
    assert not ledger.mark_rejected(delivered["id"], 404, "late")
    assert not ledger.mark_retry(delivered["id"], "late timeout", None, 5)
    assert ledger.outbox_rows(job_ids[0])[0]["state"] == "delivered"

    httpx.post(f"{go_api}/control", json={"fail_status": 422, "fail_seconds": 60})
    assert deliver_outbox(ledger, client, FAST, job_ids=job_ids[1:]).rejected == 1
    httpx.post(f"{go_api}/control", json={"fail_status": None})
    from click.testing import CliRunner

    from rag_pipeline.local.cli import main

    resent = CliRunner().invoke(main, ["outbox", "resend-rejected", "--job", str(job_ids[1])])
    assert resent.exit_code == 0 and "1 rejected statuses are pending again" in resent.output
    assert ledger.resend_rejected([job_ids[1]]) == 0
    assert deliver_outbox(ledger, client, FAST, job_ids=job_ids[1:]).delivered == 1
    client.close()
    assert ledger.outbox_rows(job_ids[1])[0]["state"] == "delivered"
