"""`rag-pipeline` commands over the ledger and the collections: `inspect`, `query`, `outbox`
(re-send the statuses the Go API rejected, once it is fixed), `rebuild` and `drop`."""

from __future__ import annotations

import click

from rag_pipeline.operations.common import UserError, cli_settings, open_ledger, user_errors
from rag_pipeline.vocabulary import QueryMode


# --- inspection ------------------------------------------------------------------------------
@click.command("inspect")
@click.option("--collection", "collection_id", default=None, help="One collection only.")
@user_errors
def inspect_jobs(collection_id: str | None) -> None:
    """Jobs per state (one collection or all), statuses per state, open crawl requests."""
    from rag_pipeline.reconciliation import inspection_lines

    with open_ledger(cli_settings()) as ledger:
        for line in inspection_lines(ledger, collection_id):
            click.echo(line)


@click.command("query")
@click.option("--collection", "collection_id", default=None, help="The collection to ask.")
@click.option("--alias", default=None,
              help="Or the alias to ask: the collection it answers from now.")
@click.option("--mode", type=click.Choice([m.value for m in QueryMode]),
              default="mix", show_default=True)
@click.option("--top-k", type=int, default=10, show_default=True,
              help="Chunks (and entities) to retrieve.")
@click.option("--context-only", is_flag=True, help="The pages and passages, no answer.")
@click.argument("question")
@user_errors
def query(collection_id: str | None, alias: str | None, mode: str, top_k: int,
          context_only: bool, question: str) -> None:
    """Ask a collection (or an alias): the answer and the pages it drew on, by URL and title
    (the query service's own code path, in this process)."""
    import asyncio

    from rag_pipeline.ledger import LedgerUnavailable
    from rag_pipeline.serving.access import Grant, Refused
    from rag_pipeline.serving.queries import QueryService

    if (collection_id is None) == (alias is None):
        raise UserError("say which collection to ask: --collection ID or --alias NAME")
    settings = cli_settings()
    try:
        service = QueryService.from_settings(settings)
    except LedgerUnavailable as exc:
        raise UserError(str(exc)) from None
    try:
        result = asyncio.run(service.ask(str(collection_id or alias), question, grant=Grant(),
                                         mode=mode, top_k=top_k, context_only=context_only))
    except Refused as refused:
        raise UserError(refused.message) from None
    finally:
        service.close()
    click.echo(f"collection {result.collection_id}"
               + (f" (alias {result.alias})" if result.alias else ""))
    if result.answer is not None:
        if settings.uses_stand_in_model:
            click.echo("(stand-in model: the answer is not a real LLM answer; the references "
                       "are real)")
        click.echo(f"\nAnswer ({mode}):\n{result.answer}\n")
    click.echo(f"References ({len(result.references)} pages):")
    for n, ref in enumerate(result.references, 1):
        click.echo(f"[{n}] {ref.title or '(no title)'} <{ref.url}>")
        for passage in ref.passages[:2]:
            click.echo(f"    {' '.join(passage.split())[:200]}")


@click.group()
def outbox() -> None:
    """The statuses waiting for the Go API."""


@outbox.command("resend-rejected")
@click.option("--job", "job_ids", type=int, multiple=True,
              help="Only this job's statuses (repeatable); default: every rejected status.")
@user_errors
def resend_rejected(job_ids: tuple[int, ...]) -> None:
    """Send the statuses the Go API refused (4xx) again, once it accepts them: they are
    pending again and the status_deliverer sensor sends them within seconds."""
    with open_ledger(cli_settings()) as ledger:
        count = ledger.resend_rejected(list(job_ids) or None)
    click.echo(f"{count} rejected statuses are pending again; the status_deliverer sensor "
               "sends them" if count else "no rejected status to re-send")


@click.command("rebuild")
@click.option("--alias", required=True, help="The alias to rebuild with the current models.")
@user_errors
def rebuild(alias: str) -> None:
    """Index an alias's pages again with the current models (after a model change), into a
    new collection the alias answers from once it is done (the old one answers meanwhile)."""
    from rag_pipeline.contract.fields import ALIAS_RULE, check_alias
    from rag_pipeline.indexing.renewal import plan_rebuild

    try:
        check_alias(alias)
    except ValueError:
        raise UserError(f"--alias {alias!r}: an alias {ALIAS_RULE}") from None
    with open_ledger(cli_settings()) as ledger:
        try:
            plan = plan_rebuild(ledger, alias)
        except LookupError as exc:
            raise UserError(str(exc)) from None
    click.echo(f"alias {alias}: {plan.pages} pages of {plan.rebuild_of} queued again as "
               f"collection {plan.collection_id}; the indexing runs index them (the "
               "running `rag-pipeline dev` or daemon) and the alias moves to it when done")
    if plan.pruned_urls:
        click.echo(f"{len(plan.pruned_urls)} pages cannot be rebuilt (retention pruned their "
                   "message); crawl them again:")
        for url in plan.pruned_urls:
            click.echo(f"  {url}")


@click.command("drop")
@click.option("--collection", "collection_id", default=None, help="The collection to drop.")
@click.option("--alias", default=None, help="Or the alias whose collection to drop.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--wait", "wait_seconds", type=float, default=600.0, show_default=True,
              help="Seconds to wait for a running run of the collection to finish.")
@click.option("--batch-rows", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Rows removed per statement (smaller: shorter locks on LightRAG's tables).")
@user_errors
def drop(collection_id: str | None, alias: str | None, yes: bool, wait_seconds: float,
         batch_rows: int) -> None:
    """Drop a collection: every row of its LightRAG workspace, its ledger documents and
    payloads, its Dagster partition (at the sensor's next tick). Messages for it fail with
    collection_dropped from then on. Killed midway, run it again: it finishes."""
    from rag_pipeline.indexing.locks import CollectionBusy
    from rag_pipeline.removal import drop_collection
    from rag_pipeline.vocabulary import DropCause

    if (collection_id is None) == (alias is None):
        raise UserError("say which collection to drop: --collection ID or --alias NAME")
    settings = cli_settings()
    with open_ledger(settings) as ledger:
        try:
            target = ledger.collection_of(collection_id=collection_id, alias=alias)
        except LookupError as exc:
            raise UserError(str(exc)) from None
        if not yes:
            click.confirm(f"drop collection {target}{f' (alias {alias})' if alias else ''} "
                          "and everything indexed into it?", abort=True)
        removed: dict[str, int] = {}

        def progress(table: str, rows: int) -> None:
            removed[table] = removed.get(table, 0) + rows
            click.echo(f"  {table}: {removed[table]} rows removed", err=True)

        try:
            report = drop_collection(
                ledger, target, DropCause.DROPPED,
                lambda c: ledger.writer_lock(c, wait_seconds), max_retries=settings.max_retries,
                graph_storage=settings.lightrag_graph_storage, batch_rows=batch_rows,
                progress=progress)
        except CollectionBusy as exc:
            raise UserError(f"{exc}; run the drop again once its run ended") from None
    d = report.drop
    click.echo(f"collection {d.collection_id} dropped: {report.rows_removed} LightRAG rows "
               f"({report.bytes_removed} bytes), {d.documents} ledger documents, "
               f"{d.jobs_failed} queued jobs failed"
               + (f"; alias {d.alias} answers nothing until a new crawl of it is released"
                  if d.alias_dropped else ""))
    if report.graph_left:
        click.echo("its graph is in Apache AGE (LIGHTRAG_GRAPH_STORAGE=PGGraphStorage) and "
                   "was left: drop it with AGE's drop_graph")
