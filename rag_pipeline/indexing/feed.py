"""Pages flowing into one LightRAG workspace: enqueued as they come, settled as they finish.

A run does not hand LightRAG a batch and wait for its slowest page. It enqueues pages
(`apipeline_enqueue_documents`) while LightRAG's pipeline is running: LightRAG 1.5's in-batch
feeder routes a document enqueued during processing straight to its workers, so a worker
takes the next page the moment one finishes. The run keeps enough pages enqueued that the
workers never run dry, and reads back the status of the pages in flight (`settle`).

What LightRAG cannot do while its pipeline is busy is delete a document (`adelete_by_doc_id`
is refused): a changed page, or a leftover of a killed run under the page's id, waits until
the workspace is idle (`replace`).

Every coroutine here runs on the workspace pool's loop (`WorkspacePool.submit`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from rag_pipeline.identity import file_path
from rag_pipeline.indexing.insertion import InsertResult, doc_field, doc_state
from rag_pipeline.ledger import PageText
from rag_pipeline.vocabulary import InsertStatus

log = logging.getLogger(__name__)

# How long a replacement waits for LightRAG's pipeline to release its workspace.
DELETE_WAIT_SECONDS = 300.0
DELETE_POLL_SECONDS = 0.2


class WorkspaceFeed:
    """The pages of one run in flight in one LightRAG workspace."""

    def __init__(self, rag: Any) -> None:
        self.rag = rag
        self.in_flight: dict[str, PageText] = {}
        self._processors: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._enqueued = 0

    # --- what goes in -----------------------------------------------------------------------
    async def triage(self, pages: Sequence[PageText], known_ids: set[str]
                     ) -> tuple[list[PageText], list[PageText], list[InsertResult]]:
        """(pages to enqueue, pages whose id LightRAG already holds, adopted results).

        A processed document with the page's content that the ledger does not know was
        inserted by a run that died before recording it: adopted, no model call. Any other
        document under the page's id (an older version, a killed run's leftover) is replaced.
        """
        from lightrag.utils_pipeline import compute_text_content_hash

        existing = await _doc_statuses(self.rag, [p.doc_id for p in pages])
        fresh, replace, adopted = [], [], []
        for page, doc in zip(pages, existing, strict=True):
            if doc is None:
                fresh.append(page)
            elif (doc_state(doc) == "processed" and page.doc_id not in known_ids
                  and doc_field(doc, "content_hash") == compute_text_content_hash(page.text)):
                chunks = int(doc_field(doc, "chunks_count", 0) or 0)
                adopted.append(InsertResult(page, InsertStatus.ADOPTED, chunks=chunks))
            else:
                replace.append(page)
        return fresh, replace, adopted

    async def enqueue(self, pages: Sequence[PageText]) -> list[InsertResult]:
        """Hand pages to LightRAG; returns those settled at once (duplicate content)."""
        if not pages:
            return []
        from lightrag.parser.routing import resolve_chunk_options

        self._enqueued += 1
        track_id = f"rag-pipeline-{int(time.time() * 1000)}-{pages[0].job_id}-{self._enqueued}"
        ids = [p.doc_id for p in pages]
        paths = [file_path(p.normalized_url) for p in pages]
        # As `LightRAG.ainsert` does, minus its wait for the whole batch.
        await self.rag.apipeline_enqueue_documents(
            [p.text for p in pages], ids, paths, track_id,
            chunk_options=resolve_chunk_options(self.rag.addon_params))
        statuses = await _doc_statuses(self.rag, ids)
        results: list[InsertResult] = []
        duplicates: dict[str, str | None] | None = None
        for page, path, status in zip(pages, paths, statuses, strict=True):
            if status is not None:
                self.in_flight[page.doc_id] = page
                continue
            if duplicates is None:
                duplicates = await _duplicates(self.rag, track_id)
            if path in duplicates:
                results.append(InsertResult(page, InsertStatus.DUPLICATE,
                                            original_doc_id=duplicates[path]))
            else:
                results.append(InsertResult(page, InsertStatus.FAILED,
                                            error="LightRAG did not accept the document"))
        self._process()
        return results

    async def replace(self, pages: Sequence[PageText]) -> list[InsertResult]:
        """Delete the documents under these pages' ids, then enqueue the pages.

        LightRAG refuses a deletion while its pipeline runs: the caller calls this when its
        own pages have settled; a pipeline still finishing (a retried step's) is waited for.
        """
        await self.delete([page.doc_id for page in pages])
        return await self.enqueue(pages)

    async def delete(self, doc_ids: Sequence[str], forget: bool = False) -> None:
        """Delete these documents, waiting out a pipeline still finishing (see replace).
        `forget`: their model answers leave LightRAG's LLM cache too (a page removed for
        good); a replaced page keeps them, so its unchanged chunks cost no model call."""
        for doc_id in doc_ids:
            deadline = time.monotonic() + DELETE_WAIT_SECONDS
            while True:
                result = await self.rag.adelete_by_doc_id(doc_id, delete_llm_cache=forget)
                status = getattr(result, "status", "success")
                if status != "not_allowed":
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"LightRAG kept workspace {self.rag.workspace} busy for "
                        f"{DELETE_WAIT_SECONDS:.0f} s; document {doc_id} could not be "
                        "deleted")
                await asyncio.sleep(DELETE_POLL_SECONDS)

    # --- what comes out ---------------------------------------------------------------------
    async def settle(self) -> list[InsertResult]:
        """The pages in flight whose document LightRAG has processed or failed."""
        self.raise_if_failed()
        if not self.in_flight:
            return []
        ids = list(self.in_flight)
        statuses = await _doc_statuses(self.rag, ids)
        done: dict[str, Any] = {}
        for doc_id, status in zip(ids, statuses, strict=True):
            state = doc_state(status) if status is not None else "missing"
            if state in ("processed", "failed", "missing"):
                done[doc_id] = (state, status)
        if not done:
            if not self.processing:
                self._process()  # pages left pending by a pipeline that stopped
            return []
        processed = [i for i, (state, _) in done.items() if state == "processed"]
        entities = await _counts(self.rag, "full_entities", processed)
        relations = await _counts(self.rag, "full_relations", processed)
        results = []
        for doc_id, (state, status) in done.items():
            page = self.in_flight.pop(doc_id)
            if state == "processed":
                results.append(InsertResult(
                    page, InsertStatus.PROCESSED,
                    chunks=int(doc_field(status, "chunks_count", 0) or 0),
                    entities=entities.get(doc_id, 0), relations=relations.get(doc_id, 0)))
            else:
                error = str(doc_field(status, "error_msg", "") or "") if status else ""
                results.append(InsertResult(
                    page, InsertStatus.FAILED,
                    error=error or f"LightRAG left the document in state {state!r}"))
        return results

    @property
    def processing(self) -> bool:
        return any(not task.done() for task in self._processors)

    async def quiesce(self) -> None:
        """Wait for this feed's pipeline calls to return (before a deletion)."""
        pending = [t for t in self._processors if not t.done()]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def cancel(self) -> None:
        for task in self._processors:
            task.cancel()

    def _process(self) -> None:
        """Make sure LightRAG's pipeline runs. A call while it runs returns at once (the
        running one takes the new documents); one is made after every enqueue because
        the running pipeline may have been about to stop."""
        task = asyncio.get_running_loop().create_task(
            self.rag.apipeline_process_enqueue_documents())
        self._processors = {t for t in self._processors if not t.done()} | {task}
        task.add_done_callback(self._processor_done)

    def _processor_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:
            self._failure = task.exception()


async def _doc_statuses(rag: Any, ids: list[str]) -> list[Any]:
    """Doc status per id, aligned with `ids` (None where LightRAG has none)."""
    if not ids:
        return []
    rows = await rag.doc_status.get_by_ids(ids)  # aligned, or [] when it has none
    return list(rows) if len(rows) == len(ids) else [None] * len(ids)


async def _counts(rag: Any, storage_name: str, ids: list[str]) -> dict[str, int]:
    if not ids:
        return {}
    rows = await getattr(rag, storage_name).get_by_ids(ids)
    return {i: int((r or {}).get("count", 0)) for i, r in zip(ids, rows, strict=True)}


async def _duplicates(rag: Any, track_id: str) -> dict[str, str | None]:
    """file_path -> original doc id of the documents LightRAG refused as duplicates."""
    found: dict[str, str | None] = {}
    for record in (await rag.aget_docs_by_track_id(track_id)).values():
        metadata = doc_field(record, "metadata", {}) or {}
        if metadata.get("is_duplicate"):
            found[doc_field(record, "file_path")] = metadata.get("original_doc_id")
    return found
