"""What an indexing run does with its collection: a stream of pages, not a batch.

A run drains its collection (design invariant 10):
- it claims the collection's queued jobs a few at a time, and keeps claiming the jobs
  staged while it runs, so that `window` pages are always in flight in LightRAG;
- each page is decoded and cleaned once (`pages.prepare_page`), its text stored in the
  ledger, and handed to LightRAG at once (`feed.WorkspaceFeed`): unchanged pages and
  duplicates are completed without LightRAG (`insertion.plan_pages`), changed ones replace
  their document when the workspace is idle;
- a page's outcome is recorded the moment LightRAG settles it (completed, failed, or queued
  again for a transient reason), with its outbox row, while the other pages carry on:
  bookkeeping runs in this thread, LightRAG on the pool's loop, and LightRAG always holds
  more pages than it works on, so the model never waits for the ledger;
- when nothing is left it lingers RUN_IDLE_SECONDS for new pages (a trickle of pages does
  not pay a run start per page) and ends; after RUN_MAX_SECONDS it yields when other
  collections wait for a run slot: it stops claiming, finishes its pages and ends, and the
  sensor requests a new run for what is left.
While the run takes new jobs (`runs.accepting`), the sensor requests no other run for its
collection; the flag is cleared before the run's last look for jobs, so a job staged
meanwhile is either taken by the run or gets a run from the sensor.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from rag_pipeline.indexing.deletions import deleted, leading_deletions, split_at_deletion
from rag_pipeline.indexing.feed import WorkspaceFeed
from rag_pipeline.indexing.insertion import InsertResult, outcome_of, plan_pages
from rag_pipeline.indexing.pages import PageLimits, PreparedPage, prepare_page
from rag_pipeline.indexing.report import IndexReport, apportion_times, model_counters
from rag_pipeline.indexing.stalls import StallWatch, by_bytes, model_activity
from rag_pipeline.knowledge.models import ModelUsage
from rag_pipeline.knowledge.workspaces import WorkspacePool
from rag_pipeline.ledger import JobLedger, JobOutcome, PageText, RunJob
from rag_pipeline.vocabulary import Outcome, Reason, RunScope

log = logging.getLogger(__name__)

# Failures of the page's text rather than of its payload (counted under clean_pages).
CLEANING_REASONS = {Reason.EMPTY_CONTENT, Reason.TOO_LARGE}
# How often an idle run looks for new pages and at LightRAG's progress.
POLL_SECONDS = 0.25
# Pages decoded, cleaned and handed to LightRAG together (the first reach it at once).
ADMIT_PAGES = 8
# How often a run past RUN_MAX_SECONDS asks whether other collections wait for a slot.
YIELD_CHECK_SECONDS = 5.0
# A call into LightRAG's loop is waited for in slices this long, with the lease, the lock and
# the stall rule checked between them (invariant 11: nothing hangs for ever).
CALL_SLICE_SECONDS = 1.0
T = TypeVar("T")


@dataclass(frozen=True)
class StreamLimits:
    """How a run streams: RUN_IDLE_SECONDS, RUN_MAX_SECONDS, RUN_STALL_TIMEOUT_SECONDS,
    MAX_RETRIES, and `window`, the pages it keeps in flight in LightRAG (twice the pages
    LightRAG works on at once, so that a worker never waits for the next page)."""

    window: int
    idle_seconds: float
    max_seconds: float
    stall_seconds: float
    max_retries: int
    batch_bytes: int = 32 * 1024 * 1024  # RUN_BATCH_BYTES: payload held in memory at once
    max_jobs: int | None = None


@dataclass
class RunHooks:
    """What the run asks of its surroundings (Dagster, the lease, the lock)."""

    # Raises when the run may no longer write (declared dead, its lock lost).
    check: Callable[[], None] = lambda: None
    # Receives outcomes once recorded (dead letters, log lines).
    recorded: Callable[[list[JobOutcome]], None] = lambda outcomes: None
    # Whether other collections wait for a run slot (the run yields after max_seconds).
    others_waiting: Callable[[], bool] = lambda: False
    # Called under the writer lock before the first page is written, and after the last
    # (with the run, to delete documents): an alias's renewal (indexing/renewal.py).
    locked: Callable[[], None] = lambda: None
    drained: Callable[[CollectionRun], None] = lambda run: None


class CollectionRun:
    """One run draining one collection (see the module's docstring)."""

    def __init__(self, ledger: JobLedger, pool: WorkspacePool, collection_id: str,
                 run_id: str, page_limits: PageLimits, limits: StreamLimits,
                 hooks: RunHooks | None = None) -> None:
        self.ledger, self.pool, self.collection_id = ledger, pool, collection_id
        self.run_id, self.page_limits, self.limits = run_id, page_limits, limits
        self.hooks = hooks or RunHooks()
        self.report = IndexReport()
        self._held: list[PageText] = []  # replacements, waiting for an idle workspace
        self._behind: list[RunJob] = []  # a deletion and the jobs after it (deletions.py)
        self._indexed_ids: set[str] = set()  # documents the ledger knew when pages arrived
        self._usage_mark = ModelUsage()
        self._settled_at = time.monotonic()
        self._asked_at = 0.0
        self._watch = StallWatch(limits.stall_seconds, lambda: model_activity(self._usage_now()))
        self.models = pool.options.models.index_models()

    # --- the loop ----------------------------------------------------------------------------
    def run(self, family: Sequence[str], scope: RunScope = RunScope.PENDING,
            lock: Callable[[], AbstractContextManager[Callable[[], None]]] | None = None
            ) -> IndexReport:
        """Drain the collection. `lock` takes the collection's writer lock (yielding its
        check); it is taken after the first claim, so that a run that cannot write fails
        with its jobs claimed, and they are requeued (attempts + 1) like any failed run's."""
        started = time.monotonic()
        jobs = self.ledger.claim_jobs(self.collection_id, self.run_id, family,
                                      self._claim_size(0), scope)
        with lock() if lock is not None else nullcontext(lambda: None) as lock_check:
            lease_check = self.hooks.check

            def check() -> None:
                lease_check()
                lock_check()

            self.hooks.check = check
            self.hooks.locked()
            self._stream(jobs, started)
            self.hooks.drained(self)
        return self.report

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Delete documents of the collection (and the entities and relations only they
        supported), the lease and the lock checked before each."""
        if not doc_ids:
            return
        feed: WorkspaceFeed = self._call(self._open_feed())
        for doc_id in doc_ids:
            self.hooks.check()
            self._call(feed.delete([doc_id], forget=True))

    def _stream(self, jobs: list[RunJob], started: float) -> None:
        usage_before = self._usage_now()
        self._usage_mark = usage_before
        self.hooks.check()
        watch = self._watch = StallWatch(self.limits.stall_seconds,
                                         lambda: model_activity(self._usage_now()))  # afresh
        feed: WorkspaceFeed = self._call(self._open_feed())
        # Set from the run's first beat; again here for a retried step (the failed attempt
        # cleared it on its way out).
        self.ledger.set_accepting(self.run_id, True)
        accepting, idle_since = True, None
        try:
            while True:
                self.hooks.check()
                if jobs:
                    self._admit(feed, jobs)
                settled = self._call(feed.settle())
                if settled:
                    self._record_results(settled)
                    watch.progressed()
                if self._held and not feed.in_flight:
                    self._replace(feed)
                if self._behind and not self._held and not feed.in_flight:
                    self._delete_pages(feed)
                watch.observe(busy=bool(feed.in_flight))
                if self.report.first_model_request_s is None and self._usage_now().llm_calls:
                    self.report.first_model_request_s = round(time.monotonic() - started, 2)
                now = time.monotonic()
                if accepting and now - started >= self.limits.max_seconds \
                        and self._others_waiting(now):
                    accepting = False
                    self.report.yielded = True
                    self.ledger.set_accepting(self.run_id, False)
                owned = len(feed.in_flight) + len(self._held) + len(self._behind)
                jobs = (self.ledger.claim_more(self.collection_id, self.run_id,
                                               self._claim_size(owned))
                        if accepting and not self._behind else [])
                if jobs or owned:
                    idle_since = None
                    if not settled and not jobs:
                        time.sleep(POLL_SECONDS)
                    continue
                idle_since = idle_since or now
                if not accepting:
                    break
                if now - idle_since >= self.limits.idle_seconds or self._others_waiting(now):
                    # The last look comes after the flag is cleared: a job staged meanwhile
                    # is taken here or gets a run from the sensor.
                    self.ledger.set_accepting(self.run_id, False)
                    jobs = self.ledger.claim_more(self.collection_id, self.run_id,
                                                  self._claim_size(0))
                    if not jobs:
                        break
                    self.ledger.set_accepting(self.run_id, True)
                    continue
                time.sleep(POLL_SECONDS)
        except BaseException:
            self.pool.submit(self._cancel(feed))
            raise
        finally:
            self.ledger.set_accepting(self.run_id, False)
        self._count_usage()
        self.report.usage = self._usage_now().minus(usage_before)
        self.report.seconds = time.monotonic() - started

    def _others_waiting(self, now: float) -> bool:
        """Asked of Dagster's run queue at most every YIELD_CHECK_SECONDS."""
        if now - self._asked_at < YIELD_CHECK_SECONDS:
            return False
        self._asked_at = now
        return self.hooks.others_waiting()

    def _claim_size(self, owned: int) -> int:
        room = self.limits.window - owned
        if self.limits.max_jobs is not None:
            room = min(room, self.limits.max_jobs - self.report.claimed)
        return max(0, room)

    # --- pages in --------------------------------------------------------------------------
    def _admit(self, feed: WorkspaceFeed, jobs: list[RunJob]) -> None:
        """Decode and clean the claimed pages, record what needs no LightRAG, enqueue the
        rest: a few pages at a time, so that the first reach LightRAG at once. Pages behind
        a deletion wait for it."""
        self.report.claimed += len(jobs)
        self._admit_pages(feed, jobs)

    def _admit_pages(self, feed: WorkspaceFeed, jobs: list[RunJob]) -> None:
        jobs, behind = split_at_deletion(jobs)
        self._behind += behind
        for group in by_bytes(jobs, self.limits.batch_bytes, ADMIT_PAGES):
            self.hooks.check()
            self._admit_group(feed, group)

    def _admit_group(self, feed: WorkspaceFeed, jobs: list[RunJob]) -> None:
        prepared: list[PreparedPage] = []
        failures: list[JobOutcome] = []
        messages = self.ledger.messages([j.job_id for j in jobs])
        for job in jobs:
            result = prepare_page(job, messages.pop(job.job_id), self.page_limits)
            if isinstance(result, PreparedPage):
                prepared.append(result)
                self.report.html_bytes += result.html_bytes
            else:
                failures.append(result)
                if result.reason in CLEANING_REASONS:
                    self.report.failed_cleaning += 1
                else:
                    self.report.failed_decoding += 1
        self.ledger.store_page_texts(self.run_id, [p.ledger_row() for p in prepared])
        pages = [p.page for p in prepared]
        known = self.ledger.indexed_documents(self.collection_id, [p.doc_id for p in pages])
        same = self.ledger.documents_with_content(self.collection_id,
                                                  [p.content_hash for p in pages])
        self._indexed_ids |= set(known)
        to_index, decided = plan_pages(pages, known, same, self.collection_id, self.models)
        self._record(failures + decided)
        if not to_index:
            return
        fresh, replace, adopted = self._call(feed.triage(to_index, set(known)))
        self._held += replace
        immediate = self._call(feed.enqueue(fresh))
        self._record_results(adopted + immediate)

    def _replace(self, feed: WorkspaceFeed) -> None:
        """Changed pages (and leftovers of killed runs): their old document is deleted,
        which LightRAG allows only while its pipeline is idle."""
        held, self._held = self._held, []
        self.hooks.check()
        self._call(feed.quiesce())
        self._record_results(self._call(feed.replace(held)))

    def _delete_pages(self, feed: WorkspaceFeed) -> None:
        """The deletions at the head of the line, once nothing is in flight; then the pages
        behind them are admitted."""
        deletions, self._behind = leading_deletions(self._behind)
        self.hooks.check()
        self._call(feed.quiesce())
        for job in deletions:
            self.hooks.check()
            self._call(feed.delete([job.doc_id], forget=True))
            self._indexed_ids.discard(job.doc_id)
        self._record([deleted(job) for job in deletions])
        behind, self._behind = self._behind, []
        self._admit_pages(feed, behind)

    # --- outcomes out ----------------------------------------------------------------------
    def _record_results(self, results: list[InsertResult]) -> None:
        if not results:
            return
        originals = self.ledger.document_urls(
            self.collection_id, [r.original_doc_id for r in results if r.original_doc_id])
        outcomes = [outcome_of(r, r.page.doc_id in self._indexed_ids, self.collection_id,
                               originals) for r in results]
        now = time.monotonic()
        apportion_times(outcomes, self._usage_now().minus(self._usage_mark),
                        now - self._settled_at)
        self._settled_at = now
        self._record(outcomes)

    def _record(self, outcomes: list[JobOutcome]) -> None:
        if not outcomes:
            self._count_usage()
            return
        for o in outcomes:  # what LightRAG indexed now, it indexed with the current models
            if o.document is not None and o.outcome in (Outcome.INSERTED, Outcome.REPLACED):
                o.document = replace(o.document, models=self.models)
        # What the model cost since the last record, counted in the same transaction.
        usage, mark = self._usage_since_mark()
        recorded = self.ledger.finish_jobs(self.collection_id, outcomes,
                                           max_retries=self.limits.max_retries,
                                           owner=self.run_id, counters=usage)
        self._usage_mark = mark
        for outcome in recorded:
            self.report.add(outcome)
        self.hooks.recorded(recorded)

    def _count_usage(self) -> None:
        usage, mark = self._usage_since_mark()
        self.ledger.count(usage)
        self._usage_mark = mark

    def _usage_since_mark(self) -> tuple[dict[tuple[str, str], float], ModelUsage]:
        now = self._usage_now()
        return model_counters(now.minus(self._usage_mark)), now

    def _usage_now(self) -> ModelUsage:
        return ModelUsage(**vars(self.pool.models.usage))

    # --- on the pool's loop ----------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on LightRAG's loop and wait for it, but never for ever: between
        slices of CALL_SLICE_SECONDS the lease and the lock are checked and the stall rule
        applied, so a call that does not return (a PostgreSQL backend that stopped answering,
        a LightRAG task that never completes) ends the run within RUN_STALL_TIMEOUT_SECONDS
        of the last model activity instead of holding its collection."""
        future = self.pool.submit(coro)
        try:
            while True:
                try:
                    return future.result(CALL_SLICE_SECONDS)
                except concurrent.futures.TimeoutError:
                    self.hooks.check()
                    self._watch.observe(busy=True)
        except BaseException:
            future.cancel()  # the task on LightRAG's loop is cancelled with it
            raise

    async def _open_feed(self) -> WorkspaceFeed:
        return WorkspaceFeed(await self.pool.workspace(self.collection_id))

    @staticmethod
    async def _cancel(feed: WorkspaceFeed) -> None:
        feed.cancel()
