"""The code location as Dagster loads it, with the tests' placeholder settings: no service is
contacted to build it (resources read their settings through EnvVar at run time)."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg

from rag_pipeline.definitions import build_definitions, build_resources
from rag_pipeline.resources import RESOURCE_TYPES
from rag_pipeline.settings import Settings, load_settings


def test_code_location_holds_the_pipeline():
    defs = build_definitions(load_settings())
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    raw, clean, documents = (dg.AssetKey(k) for k in ("raw_pages", "clean_pages",
                                                      "lightrag_documents"))
    assert graph.get(clean).parent_keys == {raw}
    assert graph.get(documents).parent_keys == {clean}
    assert graph.get(dg.AssetKey("collection_release")).parent_keys == {documents}
    for key in (raw, clean, documents):
        assert graph.get(key).partitions_def == dg.DynamicPartitionsDefinition(
            name="collections")
    # A drop runs on the collection's partition: it queues behind the collection's run.
    drops = graph.get(dg.AssetKey("collection_drops"))
    assert drops.partitions_def == dg.DynamicPartitionsDefinition(name="collections")
    assert {"index_collection", "reindex_collection", "reconcile_stuck_jobs",
            "apply_retention", "drop_collection"} <= {job.name for job in repo.get_all_jobs()}
    assert {s.name for s in repo.sensor_defs} == {
        "indexing_jobs_sensor", "indexing_run_failed", "indexing_run_canceled",
        "run_liveness", "status_deliverer"}
    assert {s.job_name: s.default_status for s in repo.schedule_defs} == {
        "reconcile_stuck_jobs": dg.DefaultScheduleStatus.RUNNING,
        "apply_retention": dg.DefaultScheduleStatus.RUNNING}


def test_every_job_runs_in_one_process():
    # A run is already a process spawned by the code server that imports everything; a
    # subprocess per step would pay that again (several CPU seconds per step on 2 cores).
    repo = build_definitions(load_settings()).get_repository_def()
    for job in repo.get_all_jobs():
        assert job.executor_def.name == dg.in_process_executor.name, job.name


def test_the_code_location_imports_nothing_of_the_local_workshop():
    # Production runs the code location only; the CLI, the local stack, the stand-ins and the
    # demo's pages stay out of its processes.
    probe = ("import sys, rag_pipeline.definitions; "
             "print('\\n'.join(m for m in sys.modules if m.startswith('rag_pipeline')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, env=os.environ.copy()).stdout.split()
    assert "rag_pipeline.definitions" in loaded
    assert [m for m in loaded if m.startswith("rag_pipeline.local")] == []


def test_every_resource_field_is_a_setting_and_no_resource_repeats_a_default():
    for key, kind in RESOURCE_TYPES.items():
        for name, field in kind.model_fields.items():
            if name in RESOURCE_TYPES:  # a resource it depends on (the outbox's ledger)
                continue
            assert name in Settings.model_fields, f"{key}.{name} is not a Settings name"
            assert field.is_required(), f"{key}.{name} repeats a default of Settings"


def test_no_secret_value_reaches_resource_config(monkeypatch):
    # A key read from .env only (not exported) still reaches resources as an EnvVar.
    # (setenv first, so that the variable build_resources exports is removed afterwards.)
    monkeypatch.setenv("OPENAI_API_KEY", "placeholder")
    monkeypatch.delenv("OPENAI_API_KEY")
    s = load_settings(openai_api_key="sk-canary-resource-config")
    resources = build_resources(s)
    for resource in resources.values():
        assert "sk-canary-resource-config" not in repr(resource.model_dump())
    assert resources["lightrag"].openai_api_key == dg.EnvVar("OPENAI_API_KEY")
    assert os.environ["OPENAI_API_KEY"] == "sk-canary-resource-config"


def test_every_run_of_a_collection_counts_against_the_one_per_collection_limit():
    import yaml  # dagster's own dependency

    from rag_pipeline.dagster_runs import COLLECTION_TAG
    from rag_pipeline.local import PROJECT_ROOT

    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    [limit] = config["concurrency"]["runs"]["tag_concurrency_limits"]
    # The tag Dagster puts on every partitioned run, whoever launches it.
    assert limit == {"key": COLLECTION_TAG, "value": {"applyLimitPerUniqueValue": True},
                     "limit": 1}
    assert COLLECTION_TAG == "dagster/partition"
    assert config["sensors"]["use_threads"] is True  # a slow tick never delays another


def test_the_run_scope_of_the_indexing_config_is_the_vocabulary_s():
    from typing import get_args

    from rag_pipeline.assets.indexing import IndexingConfig
    from rag_pipeline.vocabulary import RunScope

    literal = IndexingConfig.model_fields["scope"].annotation
    assert set(get_args(literal)) == {s.value for s in RunScope}
