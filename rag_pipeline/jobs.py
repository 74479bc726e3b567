"""The jobs of the code location.

- `index_collection`: a collection's queued pages (requested by indexing_jobs_sensor);
- `reindex_collection`: a collection again from the ledger (backfill it from the UI);
- `reconcile_stuck_jobs`: the repairs, materializing `crawl_requests` (on a schedule);
- `apply_retention`: pruning finished work, materializing `retention` (daily);
- `rebuild_alias`: an alias's pages indexed again with the current models, materializing
  `alias_rebuilds` (by hand, or `rag-pipeline rebuild`);
- `drop_collection`: a collection removed from everywhere, materializing `collection_drops`
  for its partition (by hand; `rag-pipeline drop` does the same outside Dagster).
"""

from __future__ import annotations

import dagster as dg

from rag_pipeline.assets.collections import alias_rebuilds, collection_drops
from rag_pipeline.assets.indexing import indexing_assets
from rag_pipeline.assets.reconciliation import crawl_requests
from rag_pipeline.assets.retention import retention

index_collection_job = dg.define_asset_job(
    "index_collection",
    selection=dg.AssetSelection.assets(*indexing_assets),
    description="Index a collection's queued pages (requested by indexing_jobs_sensor).",
)

reindex_collection_job = dg.define_asset_job(
    "reindex_collection",
    selection=dg.AssetSelection.assets(*indexing_assets),
    config={"ops": {"index_pages": {"config": {"scope": "everything"}}}},
    description="Process a collection again from the ledger (the latest job of every url): "
    "changed pages are replaced, unchanged ones skipped. Backfill it from the UI.",
)

# The jobs that write a collection's workspace. Any run of the indexing assets is watched
# the same way (tag, run-failure sensors, liveness), whichever job it belongs to.
INDEXING_JOBS = [index_collection_job, reindex_collection_job]

reconcile_stuck_jobs_job = dg.define_asset_job(
    "reconcile_stuck_jobs",
    selection=dg.AssetSelection.assets(crawl_requests),
    description="Requeue the jobs of dead runs (or declare them dead), nudge collections "
    "whose queued jobs have no run, redeliver statuses, summarise every crawl request.",
)

apply_retention_job = dg.define_asset_job(
    "apply_retention",
    selection=dg.AssetSelection.assets(retention),
    description="Prune the payloads of jobs finished more than RETENTION_DAYS ago and the "
    "Dagster runs that ended before then (each job and partition keeps its latest success).",
)

rebuild_alias_job = dg.define_asset_job(
    "rebuild_alias",
    selection=dg.AssetSelection.assets(alias_rebuilds),
    description="Rebuild an alias with the current models (run config: the alias): its pages "
    "are indexed again into a new collection, which the alias answers from once done.",
)

drop_collection_job = dg.define_asset_job(
    "drop_collection",
    selection=dg.AssetSelection.assets(collection_drops),
    description="Drop a collection (its partition): every row of its LightRAG workspace, its "
    "ledger documents and payloads, and its partition; its alias answers nothing until a new "
    "crawl of it is released. Waits for a run of the collection to finish first.",
)
