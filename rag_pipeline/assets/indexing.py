"""The indexing assets, partitioned by collection: raw_pages -> clean_pages -> lightrag_documents.

Definitions only: the work is done by `rag_pipeline.indexing`. Intermediate results live
in the ledger (claimed jobs, cleaned texts), so every step can run on another machine, a
retried step carries on where it stopped, and a re-executed run adopts its parent's jobs.
"""


import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import asyncpg
import dagster as dg
import psycopg
from confluent_kafka import KafkaException

from rag_pipeline.callbacks import deliver_callbacks
from rag_pipeline.events import event_line
from rag_pipeline.indexing import (
    CollectionBusy,
    StepReport,
    collection_lock,
    decode_pages,
    index_pages,
)
from rag_pipeline.indexing import (
    clean_pages as clean_run_pages,
)
from rag_pipeline.kafka_io import DeliveryFailed
from rag_pipeline.ledger import JobLedger, JobOutcome, is_permanent_connection_error
from rag_pipeline.partitions import collections_partitions
from rag_pipeline.resources import (
    KafkaResource,
    LedgerResource,
    LightRAGResource,
    ProcessingResource,
    StatusApiResource,
    report_outcomes,
)

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
# A working run beats this often; reconcile_stuck_jobs declares a silent one dead.
HEARTBEAT_SECONDS = 15.0
# Statuses a finishing run delivers at most, and for how long (the outbox keeps the rest).
FINAL_DELIVERY_LIMIT = 1000
FINAL_DELIVERY_SECONDS = 60.0


class IndexingConfig(dg.Config):
    """How much of the collection a run takes from the ledger."""

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


def run_family(context: dg.AssetExecutionContext) -> list[str]:
    run = context.run
    return [r for r in (run.run_id, run.parent_run_id, run.root_run_id) if r]


@contextmanager
def heartbeat(ledger: JobLedger, run_id: str, collection_id: str) -> Iterator[None]:
    """Beat while the step works, so that reconciliation can tell a silent (dead) run."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat is fine
                ledger.heartbeat(run_id, collection_id)
            if stop.wait(HEARTBEAT_SECONDS):
                return

    thread = threading.Thread(target=beat, name="rag-pipeline-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def record_failures(context: dg.AssetExecutionContext, ledger: LedgerResource,
                    kafka: KafkaResource, status_api: StatusApiResource, report: StepReport,
                    max_retries: int) -> None:
    """Pages that failed in this step: recorded, dead-lettered, reported to the Go API."""
    if not report.outcomes:
        return
    collection_id = context.partition_key
    recorded = ledger.ledger.finish_jobs(collection_id, report.outcomes,
                                         max_retries=max_retries)
    report_outcomes(ledger, kafka, status_api, recorded, context.log.warning)
    for o in recorded:
        context.log.warning(event_line("page_failed", job_id=o.job_id, request_id=o.request_id,
                                       collection_id=collection_id, run_id=context.run.run_id,
                                       reason=o.error_code, error=o.error_msg))


@dg.asset(
    partitions_def=collections_partitions,
    retry_policy=RETRY_POLICY,
    group_name="indexing",
    kinds={"kafka", "postgres"},
    description="The pages of a collection that a run takes from the ledger, decoded "
    "(gzip+base64 -> HTML). Pages that cannot be decoded fail here.",
)
def raw_pages(context: dg.AssetExecutionContext, config: IndexingConfig,
              ledger: LedgerResource, kafka: KafkaResource, status_api: StatusApiResource,
              processing: ProcessingResource) -> dg.MaterializeResult:
    collection_id = context.partition_key
    with retry_only_transient(), heartbeat(ledger.ledger, context.run.run_id, collection_id):
        jobs = ledger.ledger.claim_jobs(collection_id, context.run.run_id, run_family(context),
                                        config.max_jobs or processing.jobs_per_run, config.scope)
        report = decode_pages(ledger.ledger, jobs,
                              max_payload_bytes=processing.max_payload_bytes,
                              batch_bytes=processing.run_batch_bytes)
        record_failures(context, ledger, kafka, status_api, report, processing.max_retries)
    context.log.info(event_line("raw_pages", collection_id=collection_id, run_id=context.run.run_id,
                                pages=report.pages, bytes=report.bytes, failed=report.failed))
    return dg.MaterializeResult(metadata={
        "pages": dg.MetadataValue.int(report.pages),
        "html_bytes": dg.MetadataValue.int(report.bytes),
        "pages_failed": dg.MetadataValue.int(report.failed),
        "duration_s": dg.MetadataValue.float(round(report.seconds, 3)),
    })


@dg.asset(
    deps=[raw_pages],
    partitions_def=collections_partitions,
    retry_policy=RETRY_POLICY,
    group_name="indexing",
    kinds={"python", "postgres"},
    description="Each page's text for RAG: the crawler's text or a re-extraction from the "
    "HTML (TEXT_SOURCE), boilerplate removed, stored in the ledger with its content hash.",
)
def clean_pages(context: dg.AssetExecutionContext, ledger: LedgerResource,
                kafka: KafkaResource, status_api: StatusApiResource,
                processing: ProcessingResource) -> dg.MaterializeResult:
    collection_id = context.partition_key
    with retry_only_transient(), heartbeat(ledger.ledger, context.run.run_id, collection_id):
        jobs = ledger.ledger.adopt_jobs(collection_id, context.run.run_id, run_family(context))
        report = clean_run_pages(ledger.ledger, jobs,
                                 max_payload_bytes=processing.max_payload_bytes,
                                 max_text_bytes=processing.max_text_bytes,
                                 text_source=processing.text_source,  # type: ignore[arg-type]
                                 batch_bytes=processing.run_batch_bytes)
        record_failures(context, ledger, kafka, status_api, report, processing.max_retries)
    return dg.MaterializeResult(metadata={
        "pages": dg.MetadataValue.int(report.pages - report.failed),
        "html_bytes": dg.MetadataValue.int(report.bytes),
        "pages_failed": dg.MetadataValue.int(report.failed),
        "duration_s": dg.MetadataValue.float(round(report.seconds, 3)),
    })


@dg.asset(
    deps=[clean_pages],
    partitions_def=collections_partitions,
    retry_policy=RETRY_POLICY,
    group_name="indexing",
    kinds={"lightrag", "postgres"},
    check_specs=[
        dg.AssetCheckSpec("completed_pages_in_lightrag", asset="lightrag_documents",
                          description="Every page the ledger counts as indexed for this "
                          "collection is a processed document of its LightRAG workspace."),
        dg.AssetCheckSpec("no_job_left_running", asset="lightrag_documents",
                          description="The run left none of its jobs in state running."),
    ],
    description="The collection's LightRAG workspace (workspace = collection_id) on "
    "PostgreSQL: pages inserted in batches, changed pages replaced, unchanged ones skipped.",
)
def lightrag_documents(context: dg.AssetExecutionContext, ledger: LedgerResource,
                       lightrag: LightRAGResource, kafka: KafkaResource,
                       status_api: StatusApiResource,
                       processing: ProcessingResource) -> dg.MaterializeResult:
    collection_id = context.partition_key
    jobs = ledger.ledger.adopt_jobs(collection_id, context.run.run_id, run_family(context))
    pool = lightrag.pool()
    batch_count = max(16, 4 * lightrag.max_parallel_insert)

    def on_batch(outcomes: list[JobOutcome]) -> None:
        # The Go backend sees progress batch by batch during a long run.
        delivery = report_outcomes(ledger, kafka, status_api, outcomes, context.log.warning)
        done = sum(1 for o in outcomes if o.state == "completed")
        context.log.info(event_line("index_batch", collection_id=collection_id,
                                    run_id=context.run.run_id, pages=len(outcomes),
                                    completed=done, statuses_delivered=delivery.delivered,
                                    statuses_retrying=delivery.retried))

    with retry_only_transient(), heartbeat(ledger.ledger, context.run.run_id, collection_id):
        try:
            with collection_lock(lightrag.conninfo, lightrag.pg_password, collection_id,
                                 LOCK_WAIT_SECONDS):
                report = index_pages(ledger.ledger, pool, collection_id, jobs,
                                     batch_bytes=processing.run_batch_bytes,
                                     batch_count=batch_count,
                                     max_retries=processing.max_retries, on_batch=on_batch)
        except CollectionBusy as exc:
            raise dg.Failure(description=str(exc), allow_retries=True) from None
        left_running = ledger.ledger.running_jobs_of(run_family(context))
        missing = ledger.ledger.documents_missing_from_lightrag(collection_id)
    usage = report.usage
    pages = len(report.outcomes)
    return dg.MaterializeResult(
        metadata={
            "pages": dg.MetadataValue.int(pages),
            "pages_inserted": dg.MetadataValue.int(report.inserted),
            "pages_replaced": dg.MetadataValue.int(report.replaced),
            "pages_unchanged": dg.MetadataValue.int(report.unchanged),
            "pages_duplicate": dg.MetadataValue.int(report.duplicates),
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
            "duration_s": dg.MetadataValue.float(round(report.seconds, 3)),
            "pages_per_second": dg.MetadataValue.float(
                round(pages / report.seconds, 3) if report.seconds else 0.0),
        },
        check_results=[
            dg.AssetCheckResult(check_name="completed_pages_in_lightrag", passed=not missing,
                                metadata={"missing_documents": len(missing),
                                          "sample": ", ".join(missing[:5])}),
            dg.AssetCheckResult(check_name="no_job_left_running", passed=left_running == 0,
                                metadata={"jobs_running": left_running}),
        ],
    )


indexing_assets = [raw_pages, clean_pages, lightrag_documents]


def _finish_run(context: dg.HookContext, outcome: str) -> None:
    run = context.instance.get_run_by_id(context.run_id)
    collection_id = run.tags.get("dagster/partition", "") if run else ""
    ledger: JobLedger = context.resources.ledger.ledger
    ledger.finish_run(context.run_id, collection_id, outcome)
    status_api: StatusApiResource = context.resources.status_api
    with status_api.client() as client:
        delivery = deliver_callbacks(ledger, client, status_api.policy,
                                     limit=FINAL_DELIVERY_LIMIT,
                                     deadline_seconds=FINAL_DELIVERY_SECONDS,
                                     log_event=context.log.warning)
    context.log.info(event_line("run_outcome", run_id=context.run_id,
                                collection_id=collection_id, outcome=outcome,
                                statuses_delivered=delivery.delivered,
                                statuses_retrying=delivery.retried))


@dg.success_hook(required_resource_keys={"ledger", "status_api"})
def record_run_success(context: dg.HookContext) -> None:
    """The run indexed its pages: record it, deliver the statuses still waiting."""
    if context.op.name == "lightrag_documents":
        _finish_run(context, "success")


@dg.failure_hook(required_resource_keys={"ledger", "status_api"})
def record_run_failure(context: dg.HookContext) -> None:
    """A step failed for good: record it; the pages done so far get their statuses now.
    Its unfinished jobs are requeued by run_failure_sensor (or reconcile_stuck_jobs)."""
    _finish_run(context, f"failure in {context.op.name}")


RUN_HOOKS = {record_run_success, record_run_failure}

index_collection_job = dg.define_asset_job(
    "index_collection",
    selection=dg.AssetSelection.assets(*indexing_assets),
    description="Index a collection's queued pages (requested by indexing_jobs_sensor).",
    hooks=RUN_HOOKS,
)

reindex_collection_job = dg.define_asset_job(
    "reindex_collection",
    selection=dg.AssetSelection.assets(*indexing_assets),
    config={"ops": {"raw_pages": {"config": {"scope": "everything"}}}},
    description="Process a collection again from the ledger (the latest job of every url): "
    "changed pages are replaced, unchanged ones skipped. Backfill it from the UI.",
    hooks=RUN_HOOKS,
)
