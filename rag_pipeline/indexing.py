"""What an indexing run does with its jobs, step by step, as plain functions.

1. `decode_pages` (asset raw_pages): claim the run's jobs, decode every payload.
2. `clean_pages` (asset clean_pages): HTML -> text, stored in the ledger with its hash.
3. `index_pages` (asset lightrag_documents): insert into the collection's LightRAG
   workspace in batches, holding the collection's advisory lock:
   - unchanged page (same content hash as the indexed document): completed, no LLM call;
   - changed page: the old document is deleted (`adelete_by_doc_id`), then inserted;
   - identical text under another url of the collection: completed as a duplicate of it
     (LightRAG refuses identical content; this is not a failure of the page);
   - LightRAG marks a page FAILED: failed with LightRAG's reason, or retried in a later run
     when the reason is transient (rate limits, timeouts), the other pages carry on.
   (What LightRAG makes of a batch, and each page's outcome: `insertion.py`.)

Each job ends completed or failed (or queued again, or dead) in the ledger, with its
per-page metrics and an outbox row for the Go backend, in the same transaction.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg

from rag_pipeline.cleaning import TextSource, page_text
from rag_pipeline.contract import IndexingJob
from rag_pipeline.decoding import DecodeError, decode_html
from rag_pipeline.identity import content_hash
from rag_pipeline.insertion import InsertResult, insert_pages, outcome_of, plan_pages
from rag_pipeline.ledger import JobLedger, JobOutcome, PageText, RunJob
from rag_pipeline.ledger.connection import process_name
from rag_pipeline.models import ModelUsage
from rag_pipeline.vocabulary import FAILED_STATES, JobState, Outcome, Reason
from rag_pipeline.workspaces import WorkspacePool

log = logging.getLogger(__name__)
T = TypeVar("T")

LOCK_POLL_SECONDS = 1.0
# The report field each outcome is counted in.
OUTCOME_COUNTERS = {Outcome.INSERTED: "inserted", Outcome.REPLACED: "replaced",
                    Outcome.UNCHANGED: "unchanged", Outcome.DUPLICATE_CONTENT: "duplicates"}


class CollectionBusy(Exception):
    """Another writer holds the collection's advisory lock."""


class RunStalled(Exception):
    """LightRAG made no progress for RUN_STALL_TIMEOUT_SECONDS: a run that beats but does
    nothing would block its collection for good, so it fails and its jobs go to a new run."""


# How often a waiting run looks at LightRAG's progress and at its own lease.
PROGRESS_POLL_SECONDS = 2.0


def model_activity(usage: ModelUsage) -> int:
    """Anything the model client did: answers, retries, errors (a model outage is not a
    stall of the run: its retries are activity)."""
    return usage.llm_calls + usage.llm_retries + usage.llm_failures + usage.embedding_calls


def await_progressing(future: Future[T], activity: Callable[[], int], stall_seconds: float,
                      check: Callable[[], None] | None = None) -> T:
    """Wait for a LightRAG insert while it makes progress and the run may still write.

    Raises RunStalled after `stall_seconds` without model activity, and whatever `check`
    raises (the run declared dead, its lock lost); either way the insert is cancelled.
    """
    last, changed = activity(), time.monotonic()
    while True:
        try:
            return future.result(timeout=PROGRESS_POLL_SECONDS)
        except FutureTimeout:
            pass
        now = activity()
        if now != last:
            last, changed = now, time.monotonic()
        try:
            if time.monotonic() - changed > stall_seconds:
                raise RunStalled(
                    f"LightRAG made no progress for {stall_seconds:.0f} s (no model answer, "
                    "retry or error; RUN_STALL_TIMEOUT_SECONDS): the run stops, its jobs go "
                    "to a new run")
            if check is not None:
                check()
        except BaseException:
            future.cancel()
            raise


def batches(items: Sequence[Any], size_of: Callable[[Any], int], max_bytes: int,
            max_count: int) -> Iterator[list[Any]]:
    """Consecutive groups of items bounded by total size and count (at least one item)."""
    batch: list[Any] = []
    total = 0
    for item in items:
        size = size_of(item)
        if batch and (total + size > max_bytes or len(batch) >= max_count):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += size
    if batch:
        yield batch


@dataclass
class StepReport:
    pages: int = 0
    bytes: int = 0
    failed: int = 0
    outcomes: list[JobOutcome] = field(default_factory=list)
    seconds: float = 0.0


def _failure(job: RunJob | PageText, code: str, message: str, collection_id: str) -> JobOutcome:
    return JobOutcome(job_id=job.job_id, request_id=job.request_id, state=JobState.FAILED,
                      error_code=code, error_msg=f"{code}: {message}",
                      collection_id=collection_id)


# --- raw_pages ---------------------------------------------------------------------------
def decode_pages(ledger: JobLedger, jobs: Sequence[RunJob], *, max_payload_bytes: int,
                 batch_bytes: int) -> StepReport:
    """Decode every claimed page (bounded batches); pages that cannot be decoded fail."""
    report = StepReport()
    started = time.monotonic()
    for batch in batches(jobs, lambda j: j.message_bytes, batch_bytes, 500):
        messages = ledger.messages([j.job_id for j in batch])
        for job in batch:
            report.pages += 1
            try:
                parsed = IndexingJob.model_validate_json(messages[job.job_id])
                if parsed.content.html:
                    report.bytes += decode_html(parsed.content.html, parsed.content.encoding,
                                                parsed.content.content_type,
                                                max_payload_bytes).byte_size
            except DecodeError as exc:
                report.failed += 1
                report.outcomes.append(_failure(job, exc.code, exc.message, job.collection_id))
            except ValueError as exc:  # the stored message no longer validates
                report.failed += 1
                report.outcomes.append(_failure(job, Reason.INVALID_MESSAGE, str(exc)[:300],
                                                job.collection_id))
        messages.clear()
    report.seconds = time.monotonic() - started
    return report


# --- clean_pages -------------------------------------------------------------------------
def clean_pages(ledger: JobLedger, jobs: Sequence[RunJob], *, max_payload_bytes: int,
                max_text_bytes: int, text_source: TextSource, batch_bytes: int) -> StepReport:
    """Decode and clean each page; store its text and content hash in the ledger."""
    report = StepReport()
    started = time.monotonic()
    for batch in batches(jobs, lambda j: j.message_bytes, batch_bytes, 500):
        messages = ledger.messages([j.job_id for j in batch])
        rows = []
        for job in batch:
            report.pages += 1
            try:
                parsed = IndexingJob.model_validate_json(messages.pop(job.job_id))
                content = parsed.content
                html = None
                html_bytes = 0
                if content.html and (text_source == "reextract" or not content.text.strip()):
                    decoded = decode_html(content.html, content.encoding, content.content_type,
                                          max_payload_bytes)
                    html, html_bytes = decoded.html, decoded.byte_size
                page = page_text(content.text, content.title, html, text_source)
            except DecodeError as exc:
                report.failed += 1
                report.outcomes.append(_failure(job, exc.code, exc.message, job.collection_id))
                continue
            if not page.text.strip():
                report.failed += 1
                report.outcomes.append(_failure(
                    job, Reason.EMPTY_CONTENT, "the page has no text once cleaned (content.text "
                    "is empty and content.html holds no readable content)", job.collection_id))
                continue
            text_bytes = len(page.text.encode("utf-8", "surrogatepass"))
            if text_bytes > max_text_bytes:
                report.failed += 1
                report.outcomes.append(_failure(
                    job, Reason.TOO_LARGE, f"the page's text is {text_bytes} bytes once cleaned, "
                    f"above the {max_text_bytes} byte limit (MAX_TEXT_BYTES)", job.collection_id))
                continue
            report.bytes += html_bytes
            rows.append((job.job_id, page.title, page.text, page.source, content_hash(page.text),
                         {"html_bytes": html_bytes, "text_length": len(page.text)}))
        ledger.store_page_texts(rows)
    report.seconds = time.monotonic() - started
    return report


# --- lightrag_documents -----------------------------------------------------------------
class LockLost(ConnectionError):
    """The collection lock's connection broke (PostgreSQL restarted, or the liveness check
    terminated it): stop writing; a transient error, so the step retries and locks again."""


@contextmanager
def collection_lock(conninfo: str, password: str, collection_id: str,
                    wait_seconds: float) -> Iterator[Callable[[], None]]:
    """PostgreSQL advisory lock of one collection, held on its own connection while writing.

    Two runs that escaped the run queue's one-per-collection limit still never write one
    LightRAG workspace at once. A killed writer's connection drops, and with it the lock; a
    writer declared dead has it terminated (its session carries this process's name).
    Yields `check()`, which raises LockLost once the lock's connection is gone: call it
    before each write.
    """
    with psycopg.connect(conninfo, password=password, autocommit=True,
                         application_name=process_name()) as conn:
        deadline = time.monotonic() + wait_seconds
        key = f"rag_pipeline:collection:{collection_id}"
        while not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise CollectionBusy(
                    f"collection {collection_id} is being written by another run "
                    f"(advisory lock held for more than {wait_seconds:.0f} s)"
                )
            time.sleep(LOCK_POLL_SECONDS)

        def check() -> None:
            try:
                conn.execute("SELECT 1")
            except psycopg.Error as exc:
                raise LockLost(f"the lock of collection {collection_id} was lost "
                               f"({type(exc).__name__}: {exc})") from exc

        try:
            yield check
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


@dataclass
class IndexReport:
    inserted: int = 0
    replaced: int = 0
    unchanged: int = 0
    duplicates: int = 0
    failed: int = 0
    retried: int = 0
    chunks: int = 0
    entities: int = 0
    relations: int = 0
    seconds: float = 0.0
    usage: ModelUsage = field(default_factory=ModelUsage)
    outcomes: list[JobOutcome] = field(default_factory=list)

    def add(self, outcome: JobOutcome) -> None:
        self.outcomes.append(outcome)
        if outcome.state == JobState.QUEUED:
            self.retried += 1
        elif outcome.state in FAILED_STATES:
            self.failed += 1
        else:
            key = OUTCOME_COUNTERS.get(outcome.outcome) if outcome.outcome else None
            if key:
                setattr(self, key, getattr(self, key) + 1)
            self.chunks += outcome.metrics.get("chunks", 0)
            self.entities += outcome.metrics.get("entities", 0)
            self.relations += outcome.metrics.get("relations", 0)


def apportion_times(outcomes: list[JobOutcome], usage: ModelUsage, wall_seconds: float) -> None:
    """Per-page embedding and storage time: the batch's totals shared out by chunk count.

    LightRAG processes a batch's pages in parallel, so per-page times are apportioned:
    embedding_time_ms is the page's share of the embedding requests' time; storage_time_ms
    its share of the batch's wall time when no model request was in flight (LightRAG's own
    work and its PostgreSQL writes).
    """
    chunks = {id(o): o.metrics.get("chunks", 0) for o in outcomes if o.document is not None}
    total = sum(chunks.values())
    if not total:
        return
    other = max(0.0, wall_seconds - usage.llm_busy_seconds - usage.embedding_busy_seconds)
    for outcome in outcomes:
        share = chunks.get(id(outcome), 0) / total
        if share:
            outcome.metrics["embedding_time_ms"] = round(usage.embedding_seconds * share * 1000, 1)
            outcome.metrics["storage_time_ms"] = round(other * share * 1000, 1)


def model_counters(usage: ModelUsage) -> dict[tuple[str, str], float]:
    """Model requests, tokens, retries and errors, as counters of the ledger."""
    return {
        ("model_requests", "kind=llm"): usage.llm_calls,
        ("model_requests", "kind=embedding"): usage.embedding_calls,
        ("model_retries", "kind=llm"): usage.llm_retries,
        ("model_errors", "kind=llm"): usage.llm_failures,
        ("model_tokens", "kind=prompt"): usage.prompt_tokens,
        ("model_tokens", "kind=completion"): usage.completion_tokens,
        ("model_tokens", "kind=embedding"): usage.embedding_tokens,
    }


def index_pages(ledger: JobLedger, pool: WorkspacePool, collection_id: str,
                jobs: Sequence[RunJob], *, batch_bytes: int, batch_count: int,
                max_retries: int, owner: str | None = None,
                check: Callable[[], None] | None = None, stall_seconds: float = 300.0,
                on_batch: Callable[[list[JobOutcome]], None] | None = None) -> IndexReport:
    """Index the run's cleaned pages into the collection's workspace, batch by batch.

    `owner` is the run: outcomes are recorded only while it still holds the jobs (fencing,
    `JobLedger.finish_jobs`). `check` is called before each batch is written and while it
    is, and raises when the run may no longer write (its lease or its collection lock is
    gone): the insert in flight is cancelled. A batch without model activity for
    `stall_seconds` raises RunStalled.
    `on_batch` receives each batch's outcomes after they are recorded (statuses are
    delivered by the outbox deliverer, never from here: indexing does not wait on the Go API).
    """
    report = IndexReport()
    started = time.monotonic()
    usage_before = ModelUsage(**vars(pool.models.usage))
    for batch in batches(jobs, lambda j: j.text_bytes, batch_bytes, batch_count):
        pages = ledger.page_texts([j.job_id for j in batch])
        known = ledger.indexed_documents(collection_id, [p.doc_id for p in pages])
        same = ledger.documents_with_content(collection_id, [p.content_hash for p in pages])
        to_index, outcomes = plan_pages(pages, known, same, collection_id)
        if to_index:
            if check is not None:
                check()
            batch_started = time.monotonic()
            usage_at_start = ModelUsage(**vars(pool.models.usage))
            results = await_progressing(
                pool.submit(_insert_in_workspace(pool, collection_id, to_index, set(known))),
                lambda: model_activity(pool.models.usage), stall_seconds, check)
            originals = ledger.document_urls(
                collection_id, [r.original_doc_id for r in results if r.original_doc_id])
            inserted = [outcome_of(r, r.page.doc_id in known, collection_id, originals)
                        for r in results]
            batch_usage = pool.models.usage.minus(usage_at_start)
            apportion_times(inserted, batch_usage, time.monotonic() - batch_started)
            ledger.count(model_counters(batch_usage))
            outcomes += inserted
        recorded = ledger.finish_jobs(collection_id, outcomes, max_retries=max_retries,
                                      owner=owner)
        for outcome in recorded:
            report.add(outcome)
        if on_batch is not None:
            on_batch(recorded)
    report.usage = pool.models.usage.minus(usage_before)
    report.seconds = time.monotonic() - started
    return report


async def _insert_in_workspace(pool: WorkspacePool, collection_id: str, pages: list[PageText],
                               known_ids: set[str]) -> list[InsertResult]:
    rag = await pool.workspace(collection_id)
    return await insert_pages(rag, pages, known_ids)
