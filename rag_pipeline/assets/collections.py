"""The `alias_rebuilds` asset, materialized by the `rebuild_alias` job (launched from the UI
or by `rag-pipeline rebuild --alias NAME`).

Definitions only: the rebuild is `rag_pipeline.indexing.renewal.plan_rebuild`; the new
collection is then indexed and released by the ordinary indexing runs (its partition
appears with them).
"""

import dagster as dg

from rag_pipeline.contract.fields import ALIAS_RULE, check_alias
from rag_pipeline.indexing.renewal import plan_rebuild
from rag_pipeline.ledger import JobLedger
from rag_pipeline.observability.events import event_line

PRUNED_SHOWN = 20


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
