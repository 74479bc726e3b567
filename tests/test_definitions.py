"""The code location as Dagster loads it, with the tests' placeholder settings: no service is
contacted to build it (resources read their settings through EnvVar at run time)."""

from __future__ import annotations

import dagster as dg

from rag_pipeline.definitions import build_definitions
from rag_pipeline.settings import load_settings


def test_code_location_holds_the_pipeline():
    defs = build_definitions(load_settings())
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    raw, clean, documents = (dg.AssetKey(k) for k in ("raw_pages", "clean_pages",
                                                      "lightrag_documents"))
    assert graph.get(clean).parent_keys == {raw}
    assert graph.get(documents).parent_keys == {clean}
    for key in (raw, clean, documents):
        assert graph.get(key).partitions_def == dg.DynamicPartitionsDefinition(
            name="collections")
    assert {"index_collection", "reindex_collection", "reconcile_stuck_jobs"} <= {
        job.name for job in repo.get_all_jobs()}
    assert {s.name for s in repo.sensor_defs} == {
        "indexing_jobs_sensor", "indexing_run_failed", "indexing_run_canceled"}
    [schedule] = repo.schedule_defs
    assert schedule.job_name == "reconcile_stuck_jobs"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_every_job_runs_in_one_process():
    # A run is already a process spawned by the code server that imports everything; a
    # subprocess per step would pay that again (several CPU seconds per step on 2 cores).
    repo = build_definitions(load_settings()).get_repository_def()
    for job in repo.get_all_jobs():
        assert job.executor_def.name == dg.in_process_executor.name, job.name
