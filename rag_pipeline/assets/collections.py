"""The collections' life as assets: `alias_rebuilds`, materialized by the `rebuild_alias`
job (launched from the UI or by `rag-pipeline rebuild --alias NAME`), and
`collection_drops`, by the `drop_collection` job (per partition).

Definitions only: the rebuild is `rag_pipeline.indexing.renewal.plan_rebuild` (the new
collection is then indexed and released by the ordinary indexing runs; its partition
appears with them); the drop is `rag_pipeline.removal.drop_collection`.
"""

import dagster as dg

from rag_pipeline.contract.fields import ALIAS_RULE, check_alias
from rag_pipeline.dagster_runs import collections_partitions
from rag_pipeline.indexing.locks import CollectionBusy
from rag_pipeline.indexing.renewal import plan_rebuild
from rag_pipeline.ledger import JobLedger
from rag_pipeline.observability.events import event_line
from rag_pipeline.removal import DropReport, drop_collection
from rag_pipeline.resources.lightrag import LightRAGResource
from rag_pipeline.resources.processing import ProcessingResource
from rag_pipeline.vocabulary import DropCause

PRUNED_SHOWN = 20
# How long a drop waits for a running run of its collection (its queued jobs were failed,
# so the run ends once its pages in flight are done).
DROP_LOCK_WAIT_SECONDS = 600.0


class RebuildConfig(dg.Config):
    alias: str


@dg.asset(
    group_name="collections",
    kinds={"postgres"},
    description="Rebuilds of an alias with the current models (after a model change): a new "
    "collection holding the alias's pages again, indexed afresh by the indexing runs; the "
    "alias answers from the old collection until the new one is released. Pages whose "
    "message retention pruned are listed: they need a re-crawl.",
)
def alias_rebuilds(context: dg.AssetExecutionContext, config: RebuildConfig,
                   ledger: dg.ResourceParam[JobLedger]) -> dg.MaterializeResult:
    try:
        check_alias(config.alias)
    except ValueError:
        raise dg.Failure(description=f"alias {config.alias!r}: an alias {ALIAS_RULE}",
                         allow_retries=False) from None
    try:
        plan = plan_rebuild(ledger, config.alias)
    except LookupError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    context.log.info(event_line("alias_rebuild_planned", alias=plan.alias,
                                collection_id=plan.collection_id, rebuild_of=plan.rebuild_of,
                                pages=plan.pages, pages_pruned=len(plan.pruned_urls)))
    return dg.MaterializeResult(metadata={
        "alias": dg.MetadataValue.text(plan.alias),
        "collection_id": dg.MetadataValue.text(plan.collection_id),
        "rebuild_of": dg.MetadataValue.text(plan.rebuild_of),
        "pages": dg.MetadataValue.int(plan.pages),
        "pages_pruned": dg.MetadataValue.int(len(plan.pruned_urls)),
        "pruned_urls": dg.MetadataValue.md("\n".join(
            f"- {u}" for u in plan.pruned_urls[:PRUNED_SHOWN]) or "none"),
    })


@dg.asset(
    group_name="collections",
    kinds={"postgres"},
    partitions_def=collections_partitions,
    description="A dropped collection: every row of its LightRAG workspace removed (rows per "
    "table in the metadata), its ledger documents and payloads; its partition goes at the "
    "staging sensor's next tick (runs and events stay in the UI); messages for "
    "it fail with collection_dropped from then on. Materialized by the drop_collection job "
    "(or the retention schedule retiring a superseded collection, in `retention`).",
)
def collection_drops(context: dg.AssetExecutionContext, ledger: dg.ResourceParam[JobLedger],
                     lightrag: LightRAGResource, processing: ProcessingResource
                     ) -> dg.MaterializeResult:
    collection_id = context.partition_key
    try:
        ledger.collection_of(collection_id=collection_id)
    except LookupError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    try:
        report = drop_collection(
            ledger, collection_id, DropCause.DROPPED,
            lambda c: ledger.writer_lock(c, DROP_LOCK_WAIT_SECONDS),
            max_retries=processing.max_retries, graph_storage=lightrag.lightrag_graph_storage,
            progress=lambda table, rows: context.log.debug(
                event_line("drop_progress", collection_id=collection_id, table=table,
                           rows=rows)))
    except CollectionBusy as exc:
        raise dg.Failure(description=f"{exc}; run the drop again once its run ended",
                         allow_retries=False) from None
    # Its partition is deleted by the staging sensor's next tick: deleted here, it would
    # refuse this very materialization.
    context.log.info(event_line("collection_dropped", collection_id=collection_id,
                                cause=report.drop.cause, rows=report.rows_removed,
                                bytes=report.bytes_removed))
    return dg.MaterializeResult(metadata=drop_metadata(report))


def remove_partition(instance: dg.DagsterInstance, ledger: JobLedger, collection_id: str
                     ) -> None:
    """A dropped collection's partition deleted (its runs and events stay in the UI)."""
    if instance.has_dynamic_partition(collections_partitions.name, collection_id):
        instance.delete_dynamic_partition(collections_partitions.name, collection_id)
    ledger.partitions_removed([collection_id])


def drop_metadata(report: DropReport) -> dict[str, dg.MetadataValue]:
    drop = report.drop
    return {
        "collection_id": dg.MetadataValue.text(drop.collection_id),
        "alias": dg.MetadataValue.text(drop.alias or ""),
        "cause": dg.MetadataValue.text(drop.cause.value),
        "alias_answers_nothing": dg.MetadataValue.bool(drop.alias_dropped),
        "rows_removed": dg.MetadataValue.int(report.rows_removed),
        "rows_removed_per_table": dg.MetadataValue.json(dict(sorted(drop.rows.items()))),
        "bytes_removed": dg.MetadataValue.int(report.bytes_removed),
        "queued_jobs_failed": dg.MetadataValue.int(drop.jobs_failed),
        "ledger_documents_removed": dg.MetadataValue.int(drop.documents),
        "graph_left_in_age": dg.MetadataValue.bool(report.graph_left),
    }
