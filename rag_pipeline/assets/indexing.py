"""The indexing assets, partitioned by collection: raw_pages -> clean_pages -> lightrag_documents.

Definitions only: the work is done by `rag_pipeline.indexing`. Intermediate results live
in the ledger (claimed jobs, cleaned texts), so every step can run on another machine, a
retried step carries on where it stopped, and a re-executed run adopts its parent's jobs.
"""


from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import asyncpg
import dagster as dg
import psycopg
from confluent_kafka import KafkaException

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
from rag_pipeline.liveness import RunLease
from rag_pipeline.outbox import Outbox
from rag_pipeline.partitions import collections_partitions
from rag_pipeline.resources import (
    KafkaResource,
    LightRAGResource,
    OutboxResource,
    ProcessingResource,
)
from rag_pipeline.vocabulary import JobState

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


def lease(context: dg.AssetExecutionContext, ledger: JobLedger,
          processing: ProcessingResource) -> RunLease:
    """The run's heartbeats while a step works (liveness.py): a run declared dead stops."""
    return RunLease(ledger, context.run.run_id, context.partition_key,
                    processing.run_heartbeat_timeout_seconds)


def record_failures(context: dg.AssetExecutionContext, ledger: JobLedger, outbox: Outbox,
                    report: StepReport, max_retries: int) -> None:
    """Pages that failed in this step: recorded (their statuses wait in the outbox for the
    deliverer) and dead-lettered."""
    if not report.outcomes:
        return
    collection_id = context.partition_key
    recorded = ledger.finish_jobs(collection_id, report.outcomes, max_retries=max_retries,
                                  owner=context.run.run_id)
    outbox.report(recorded)
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
              ledger: dg.ResourceParam[JobLedger], kafka: KafkaResource,
              outbox: OutboxResource, processing: ProcessingResource) -> dg.MaterializeResult:
    collection_id = context.partition_key
    with retry_only_transient(), lease(context, ledger, processing):
        jobs = ledger.claim_jobs(collection_id, context.run.run_id, run_family(context),
                                 config.max_jobs or processing.jobs_per_run, config.scope)
        report = decode_pages(ledger, jobs, max_payload_bytes=processing.max_payload_bytes,
                              batch_bytes=processing.run_batch_bytes)
        record_failures(context, ledger, outbox.bind(ledger, kafka), report,
                        processing.max_retries)
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
def clean_pages(context: dg.AssetExecutionContext, ledger: dg.ResourceParam[JobLedger],
                kafka: KafkaResource, outbox: OutboxResource,
                processing: ProcessingResource) -> dg.MaterializeResult:
    collection_id = context.partition_key
    with retry_only_transient(), lease(context, ledger, processing):
        jobs = ledger.adopt_jobs(collection_id, context.run.run_id, run_family(context))
        report = clean_run_pages(ledger, jobs,
                                 max_payload_bytes=processing.max_payload_bytes,
                                 max_text_bytes=processing.max_text_bytes,
                                 text_source=processing.text_source,  # type: ignore[arg-type]
                                 batch_bytes=processing.run_batch_bytes)
        record_failures(context, ledger, outbox.bind(ledger, kafka), report,
                        processing.max_retries)
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
def lightrag_documents(context: dg.AssetExecutionContext,
                       ledger: dg.ResourceParam[JobLedger], lightrag: LightRAGResource,
                       kafka: KafkaResource, outbox: OutboxResource,
                       processing: ProcessingResource) -> dg.MaterializeResult:
    collection_id = context.partition_key
    jobs = ledger.adopt_jobs(collection_id, context.run.run_id, run_family(context))
    pool = lightrag.pool()
    reporter = outbox.bind(ledger, kafka)
    batch_count = max(16, 4 * lightrag.max_workers)

    def on_batch(outcomes: list[JobOutcome]) -> None:
        # Dead letters now; statuses wait in the outbox for the deliverer (never on this path).
        reporter.report(outcomes)
        done = sum(1 for o in outcomes if o.state == JobState.COMPLETED)
        context.log.info(event_line("index_batch", collection_id=collection_id,
                                    run_id=context.run.run_id, pages=len(outcomes),
                                    completed=done))

    postgres = pool.options.postgres
    with retry_only_transient(), lease(context, ledger, processing) as held:
        try:
            with collection_lock(postgres.conninfo, postgres.postgres_password, collection_id,
                                 LOCK_WAIT_SECONDS) as lock_held:
                def check() -> None:
                    held.check()
                    lock_held()

                report = index_pages(ledger, pool, collection_id, jobs,
                                     batch_bytes=processing.run_batch_bytes,
                                     batch_count=batch_count,
                                     max_retries=processing.max_retries,
                                     owner=context.run.run_id, check=check,
                                     stall_seconds=processing.run_stall_timeout_seconds,
                                     on_batch=on_batch)
        except CollectionBusy as exc:
            raise dg.Failure(description=str(exc), allow_retries=True) from None
        left_running = ledger.running_jobs_of(run_family(context))
        missing = ledger.documents_missing_from_lightrag(collection_id)
        ledger.finish_run(context.run.run_id, collection_id, "success")
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
