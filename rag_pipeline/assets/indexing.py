"""The indexing assets, partitioned by collection: raw_pages -> clean_pages -> lightrag_documents.

Definitions only: the work is done by `rag_pipeline.indexing`. The three assets are one
step (a multi-asset), so that a page flows through them alone: decoded, cleaned and inserted
without waiting for the rest of the run's pages; the lineage stays as it was in the UI.
Intermediate results live in the ledger (claimed jobs, cleaned texts), so a retried step
carries on where it stopped and a re-executed run adopts its parent's jobs.
"""


import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Literal

import asyncpg
import dagster as dg
import psycopg
from confluent_kafka import KafkaException

from rag_pipeline.dagster_runs import (
    COLLECTION_TAG,
    collections_partitions,
    run_family,
    runs_matching,
)
from rag_pipeline.indexing.locks import CollectionBusy, collection_lock
from rag_pipeline.indexing.renewal import AliasRenewal
from rag_pipeline.indexing.report import IndexReport
from rag_pipeline.indexing.run import CollectionRun, RunHooks
from rag_pipeline.kafka_io import DeliveryFailed
from rag_pipeline.ledger import JobLedger, JobOutcome, is_permanent_connection_error
from rag_pipeline.liveness.leases import RunLease
from rag_pipeline.observability.events import event_line
from rag_pipeline.outbox import Outbox
from rag_pipeline.resources import (
    LightRAGResource,
    ProcessingResource,
)
from rag_pipeline.vocabulary import FAILED_STATES, JobState, RunOutcome, RunScope

# Transient errors (timeouts, connection resets, PostgreSQL restarts) retry the step;
# permanent ones are raised as Failure(allow_retries=False).
RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=1, backoff=dg.Backoff.EXPONENTIAL,
                              jitter=dg.Jitter.PLUS_MINUS)
# Errors worth retrying the step for: the database, Kafka or the network went away for a while.
TRANSIENT_ERRORS = (psycopg.OperationalError, asyncpg.PostgresConnectionError,
                    asyncpg.InterfaceError, asyncpg.exceptions.AdminShutdownError,
                    asyncpg.exceptions.CannotConnectNowError, ConnectionError, TimeoutError,
                    KafkaException, DeliveryFailed)
# How long the writer waits for another writer of the same collection to finish.
LOCK_WAIT_SECONDS = 600.0
# The working thread checks its lease every second or so; past the stall rule's own timeout
# and this margin (more than any one bounded ledger statement), it is stuck: no more beats.
PROGRESS_MARGIN_SECONDS = 150.0
# How often a run writes a progress line into its log.
PROGRESS_LOG_SECONDS = 10.0


class IndexingConfig(dg.Config):
    """How much of the collection a run takes from the ledger."""

    # The values of vocabulary.RunScope (Dagster's config shows an Enum by its member names;
    # run config keeps the values; tests/test_definitions.py holds the two together).
    scope: Literal["pending", "everything"] = "pending"
    max_jobs: int | None = None


@contextmanager
def retry_only_transient() -> Iterator[None]:
    """Let RetryPolicy retry transient errors; fail permanent ones at once, with a reason."""
    try:
        yield
    except dg.Failure:
        raise
    except TRANSIENT_ERRORS as exc:
        if is_permanent_connection_error(exc):
            raise dg.Failure(description=f"{type(exc).__name__}: {exc}",
                             allow_retries=False) from exc
        raise
    except Exception as exc:
        raise dg.Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from exc


def lease(context: dg.AssetExecutionContext, ledger: JobLedger,
          processing: ProcessingResource) -> RunLease:
    """The run's heartbeats while a step works (liveness/leases.py): a run declared dead
    stops; a run whose working thread stops progressing stops beating."""
    timeouts = processing.liveness
    return RunLease(ledger, context.run.run_id, context.partition_key,
                    timeouts.run_heartbeat_timeout_seconds,
                    progress_timeout_seconds=timeouts.run_stall_timeout_seconds
                    + PROGRESS_MARGIN_SECONDS)


def others_waiting(context: dg.AssetExecutionContext) -> bool:
    """Runs of other collections wait in the run queue (a long run then yields its slot)."""
    queued = runs_matching(context.instance,
                           dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]), limit=100)
    return any(r.tags.get(COLLECTION_TAG) not in (None, context.partition_key) for r in queued)


class Progress:
    """Recorded outcomes: dead letters at once, a failed page's reason in the run's log, and
    a progress line every PROGRESS_LOG_SECONDS (not one per page: the event log stays small)."""

    def __init__(self, context: dg.AssetExecutionContext, reporter: Outbox) -> None:
        self.context, self.reporter = context, reporter
        self.completed = self.failed = 0
        self.logged_at = time.monotonic()

    def recorded(self, outcomes: list[JobOutcome]) -> None:
        self.reporter.report(outcomes)
        collection_id, run_id = self.context.partition_key, self.context.run.run_id
        for o in outcomes:
            if o.state == JobState.COMPLETED:
                self.completed += 1
            elif o.state in FAILED_STATES:
                self.failed += 1
                self.context.log.warning(event_line(
                    "page_failed", job_id=o.job_id, request_id=o.request_id,
                    collection_id=collection_id, run_id=run_id, reason=o.reason,
                    error_msg=o.error_msg))
        if time.monotonic() - self.logged_at >= PROGRESS_LOG_SECONDS:
            self.log()

    def log(self) -> None:
        self.logged_at = time.monotonic()
        self.context.log.info(event_line("index_progress", collection_id=self.context.partition_key,
                                         run_id=self.context.run.run_id,
                                         completed=self.completed, failed=self.failed))


@dg.multi_asset(
    name="index_pages",
    specs=[
        dg.AssetSpec("raw_pages", group_name="indexing", kinds={"kafka", "postgres"},
                     partitions_def=collections_partitions,
                     description="The pages of a collection that a run takes from the ledger, "
                     "decoded (gzip+base64 -> HTML). Pages that cannot be decoded fail here."),
        dg.AssetSpec("clean_pages", deps=["raw_pages"], group_name="indexing",
                     kinds={"python", "postgres"}, partitions_def=collections_partitions,
                     description="Each page's text for RAG: the crawler's text or a "
                     "re-extraction from the HTML (TEXT_SOURCE), boilerplate removed, stored "
                     "in the ledger with its content hash."),
        dg.AssetSpec("lightrag_documents", deps=["clean_pages"], group_name="indexing",
                     kinds={"lightrag", "postgres"}, partitions_def=collections_partitions,
                     description="The collection's LightRAG workspace (workspace = "
                     "collection_id) on PostgreSQL: each page inserted as soon as it is "
                     "clean, changed pages replaced, unchanged ones skipped. A new "
                     "collection of an alias first carries the alias's current one over."),
        dg.AssetSpec("collection_release", deps=["lightrag_documents"], group_name="indexing",
                     kinds={"postgres"}, partitions_def=collections_partitions,
                     skippable=True,
                     description="The collection's crawl is complete and done: the pages it "
                     "carried over that the crawl no longer found are deleted, and its alias "
                     "answers from it from now on (materialized once, by the run that "
                     "finishes it)."),
    ],
    check_specs=[
        dg.AssetCheckSpec("completed_pages_in_lightrag", asset="lightrag_documents",
                          description="Every page the ledger counts as indexed for this "
                          "collection is a processed document of its LightRAG workspace."),
        dg.AssetCheckSpec("no_job_left_running", asset="lightrag_documents",
                          description="The run left none of its jobs in state running."),
    ],
    partitions_def=collections_partitions,
    retry_policy=RETRY_POLICY,
    can_subset=False,
    description="One step per run: pages flow raw -> clean -> lightrag one by one (a page is "
    "inserted as soon as it is clean; none waits for the others), and the run takes the "
    "collection's new pages while it runs.",
)
def index_pages(context: dg.AssetExecutionContext, config: IndexingConfig,
                ledger: dg.ResourceParam[JobLedger], lightrag: LightRAGResource,
                outbox: dg.ResourceParam[Outbox], processing: ProcessingResource
                ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    collection_id, run_id = context.partition_key, context.run.run_id
    pool = lightrag.pool()
    progress = Progress(context, outbox)
    postgres = pool.options.postgres
    scope = RunScope(config.scope)
    if scope == RunScope.EVERYTHING and (pruned := ledger.pruned_pages(collection_id)):
        context.log.warning(
            f"{pruned} pages of {collection_id} are not processed again: their payloads were "
            "pruned after RETENTION_DAYS (their documents stay in LightRAG as they are); "
            "crawl them again to refresh them")
    with retry_only_transient(), lease(context, ledger, processing) as held:
        def lock_of(collection: str) -> AbstractContextManager[Callable[[], None]]:
            return collection_lock(postgres.conninfo, postgres.postgres_password, collection,
                                   LOCK_WAIT_SECONDS, waiting=held.check)

        renewal = AliasRenewal(ledger, collection_id, run_id,
                               pool.options.lightrag_graph_storage, lock_of,
                               pool.options.models.index_models(), check=held.check)
        run = CollectionRun(
            ledger, pool, collection_id, run_id, processing.page_limits,
            processing.stream_limits(lightrag.options.max_workers, config.max_jobs),
            RunHooks(check=held.check, recorded=progress.recorded,
                     others_waiting=lambda: others_waiting(context),
                     locked=renewal.carry_over, drained=renewal.release))
        try:
            report = run.run(run_family(context.run), scope,
                             lock=lambda: lock_of(collection_id))
        except CollectionBusy as exc:
            raise dg.Failure(description=str(exc), allow_retries=True) from None
        progress.log()
        left_running = ledger.running_jobs_of(run_family(context.run))
        missing = ledger.documents_missing_from_lightrag(collection_id)
        ledger.finish_run(run_id, collection_id, RunOutcome.SUCCESS)
    yield from materializations(report, renewal)
    yield dg.AssetCheckResult(asset_key="lightrag_documents",
                              check_name="completed_pages_in_lightrag", passed=not missing,
                              metadata={"missing_documents": len(missing),
                                        "sample": ", ".join(missing[:5])})
    yield dg.AssetCheckResult(asset_key="lightrag_documents", check_name="no_job_left_running",
                              passed=left_running == 0, metadata={"jobs_running": left_running})


def materializations(report: IndexReport, renewal: AliasRenewal
                     ) -> Iterator[dg.MaterializeResult]:
    """The run's figures, per asset (the UI plots them over runs)."""
    seconds = round(report.seconds, 3)
    decoded = report.claimed - report.failed_decoding
    yield dg.MaterializeResult(asset_key="raw_pages", metadata={
        "pages": dg.MetadataValue.int(report.claimed),
        "html_bytes": dg.MetadataValue.int(report.html_bytes),
        "pages_failed": dg.MetadataValue.int(report.failed_decoding),
        "duration_s": dg.MetadataValue.float(seconds),
    })
    yield dg.MaterializeResult(asset_key="clean_pages", metadata={
        "pages": dg.MetadataValue.int(decoded - report.failed_cleaning),
        "pages_failed": dg.MetadataValue.int(report.failed_cleaning),
        "duration_s": dg.MetadataValue.float(seconds),
    })
    usage = report.usage
    pages = len(report.outcomes)
    yield dg.MaterializeResult(asset_key="lightrag_documents", metadata={
        "pages": dg.MetadataValue.int(pages),
        "pages_inserted": dg.MetadataValue.int(report.inserted),
        "pages_replaced": dg.MetadataValue.int(report.replaced),
        "pages_unchanged": dg.MetadataValue.int(report.unchanged),
        "pages_duplicate": dg.MetadataValue.int(report.duplicates),
        "pages_deleted": dg.MetadataValue.int(report.deleted),
        "pages_failed": dg.MetadataValue.int(report.failed),
        "pages_retried": dg.MetadataValue.int(report.retried),
        "chunks": dg.MetadataValue.int(report.chunks),
        "entities": dg.MetadataValue.int(report.entities),
        "relations": dg.MetadataValue.int(report.relations),
        "llm_calls": dg.MetadataValue.int(usage.llm_calls),
        "llm_retries": dg.MetadataValue.int(usage.llm_retries),
        "llm_prompt_tokens": dg.MetadataValue.int(usage.prompt_tokens),
        "llm_completion_tokens": dg.MetadataValue.int(usage.completion_tokens),
        "llm_peak_in_flight": dg.MetadataValue.int(usage.llm_peak_in_flight),
        "embedding_calls": dg.MetadataValue.int(usage.embedding_calls),
        "embedding_tokens": dg.MetadataValue.int(usage.embedding_tokens),
        "first_model_request_s": dg.MetadataValue.float(report.first_model_request_s or 0.0),
        "yielded": dg.MetadataValue.bool(report.yielded),
        "duration_s": dg.MetadataValue.float(seconds),
        "pages_per_second": dg.MetadataValue.float(
            round(pages / report.seconds, 3) if report.seconds else 0.0),
        "alias": dg.MetadataValue.text(renewal.alias or ""),
        "pages_carried_over": dg.MetadataValue.int(renewal.carried.documents),
        "carried_over_from": dg.MetadataValue.text(renewal.carried.source or ""),
    })
    released = renewal.released
    if released is not None:
        yield dg.MaterializeResult(asset_key="collection_release", metadata={
            "alias": dg.MetadataValue.text(released.alias or ""),
            "alias_moved": dg.MetadataValue.bool(released.cause is not None),
            "cause": dg.MetadataValue.text(released.cause or ""),
            "previous_collection": dg.MetadataValue.text(released.previous_collection_id or ""),
            "pages_removed": dg.MetadataValue.int(released.pages_removed),
        })


indexing_assets = [index_pages]
