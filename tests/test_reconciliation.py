"""What goes wrong on the way is repaired (`rag_pipeline/reconciliation.py`, the run-failure
sensors of `sensors/run_failures.py`): failed runs' jobs requeued then dead, the
reconcile_stuck_jobs schedule's summary, stale queued collections nudged."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from rag_pipeline.definitions import build_definitions, build_resources
from rag_pipeline.resources import LedgerResource, LightRAGResource
from tests.helpers import (
    accepted,
    calls_for,
    complete,
    dead_letters,
    deliver_statuses,
    execute,
    staged_jobs,
)


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
