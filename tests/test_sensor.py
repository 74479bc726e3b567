"""indexing_jobs_sensor evaluated through Dagster's own machinery, with a real instance."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from rag_pipeline.dagster_runs import COLLECTION_TAG
from rag_pipeline.definitions import build_definitions
from rag_pipeline.ledger import PendingCollection
from rag_pipeline.sensors import staging as staging_sensor
from rag_pipeline.sensors.staging import run_requests, taken_collections, waiting_collections
from tests.helpers import collections_of, produce_pages


def evaluate(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.SensorResult:
    """One evaluation with a real instance and the code location's own resources."""
    sensor = defs.resolve_sensor_def("indexing_jobs_sensor")
    with dg.build_sensor_context(instance=instance, definitions=defs,
                                 resources=defs.resources) as context:
        return sensor(context)


def ours(result: dg.SensorResult, unique: str) -> dict[str, dg.RunRequest]:
    return {r.partition_key: r for r in result.run_requests
            if r.partition_key and unique in r.partition_key}


def test_sensor_stages_adds_partitions_and_requests_one_run_per_collection(
        topics, ledger, unique):
    produce_pages(topics, unique, per_collection=4)
    defs = build_definitions(topics)
    with dg.instance_for_test() as instance:
        result = evaluate(defs, instance)
        requests = ours(result, unique)
        assert set(requests) == set(collections_of(unique))
        for collection, request in requests.items():
            assert request.tags[COLLECTION_TAG] == collection
            assert request.run_key.startswith(f"{collection}:")
        [added] = result.dynamic_partitions_requests
        assert set(collections_of(unique)) <= set(added.partition_keys)
        assert '"event": "sensor_tick"' in result.cursor and '"staged": 12' in result.cursor
        # Evaluated again with nothing new: the same run keys, so Dagster requests nothing.
        instance.add_dynamic_partitions("collections", list(added.partition_keys))
        again = evaluate(defs, instance)
        assert {k: r.run_key for k, r in ours(again, unique).items()} == {
            k: r.run_key for k, r in requests.items()}
        assert not any(set(r.partition_keys) & set(collections_of(unique))
                       for r in again.dynamic_partitions_requests)


def test_a_crash_after_the_ledger_commit_requests_the_runs_on_the_next_tick(
        topics, ledger, unique, monkeypatch):
    produce_pages(topics, unique, per_collection=3)
    defs = build_definitions(topics)

    def crash(*_args, **_kwargs):
        raise ConnectionError("daemon died after the ledger commit")

    with dg.instance_for_test() as instance:
        with monkeypatch.context() as patch:
            patch.setattr(staging_sensor, "waiting_collections", crash)
            with pytest.raises(Exception, match="daemon died"):
                evaluate(defs, instance)
        result = evaluate(defs, instance)
        assert set(ours(result, unique)) == set(collections_of(unique))
        assert '"staged": 0' in result.cursor  # staged once, by the tick that crashed
        assert '"read": 0' in result.cursor


def test_no_second_request_while_a_run_for_the_collection_waits_in_the_queue():
    pending = [PendingCollection("a", 1, 5, 5, 0), PendingCollection("b", 6, 9, 4, 0)]
    with dg.instance_for_test() as instance:
        create_run_for_test(instance, job_name="index_collection",
                            tags={COLLECTION_TAG: "a"}, status=dg.DagsterRunStatus.NOT_STARTED)
        create_run_for_test(instance, job_name="index_collection",
                            tags={COLLECTION_TAG: "b"}, status=dg.DagsterRunStatus.STARTED)
        waiting = waiting_collections(instance, "index_collection")
    assert waiting == {"a"}
    assert [r.partition_key for r in run_requests(pending, [], waiting)] == ["b"]


def test_run_key_changes_only_when_the_waiting_jobs_change():
    key = PendingCollection("c", 10, 20, 11, 0).run_key
    assert PendingCollection("c", 10, 20, 11, 0).run_key == key
    assert PendingCollection("c", 10, 25, 12, 0).run_key != key  # new jobs
    assert PendingCollection("c", 10, 20, 11, 3).run_key != key  # jobs requeued after a failure


def test_a_running_run_takes_its_collection_until_it_stops_accepting(ledger, unique):
    """A started run that has not beaten yet, or beats and accepts, takes its collection's
    new jobs (no second request); once it clears the flag, finishes or is declared dead, a
    new run may be requested."""
    with dg.instance_for_test() as instance:
        runs = {c: create_run_for_test(instance, job_name="index_collection",
                                       tags={COLLECTION_TAG: f"{c}-{unique}"},
                                       status=dg.DagsterRunStatus.STARTED)
                for c in ("fresh", "beating", "ending", "done")}
        for c in ("beating", "ending", "done"):
            assert ledger.heartbeat(runs[c].run_id, f"{c}-{unique}", "rag-pipeline:t:1:x")
        ledger.set_accepting(runs["ending"].run_id, False)
        ledger.finish_run(runs["done"].run_id, f"done-{unique}", "success")
        taken = {c for c in taken_collections(instance, "index_collection", ledger)
                 if c.endswith(unique)}
    assert taken == {f"fresh-{unique}", f"beating-{unique}"}
