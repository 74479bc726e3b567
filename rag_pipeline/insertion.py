"""What LightRAG makes of a batch of pages, and what each page's job becomes.

- `plan_pages` decides without LightRAG: a page superseded by a later job of its url, an
  unchanged page (same content hash as its indexed document), identical text under another
  url of the collection (a duplicate, completed: LightRAG refuses identical content);
- `insert_pages` inserts the rest with one `ainsert` call and reads back each document's
  status, chunks, entities and relations (a leftover of a killed insert with the same
  content is adopted);
- `outcome_of` turns that into the job's outcome: completed (inserted or replaced), failed
  with LightRAG's reason, or queued again when the reason is transient.

Called by `indexing.index_pages` on the workspace pool's loop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rag_pipeline.identity import file_path
from rag_pipeline.ledger import IndexedDocument, JobOutcome, PageText
from rag_pipeline.models import TRANSIENT_PREFIX
from rag_pipeline.vocabulary import JobState, Outcome, Reason

# LightRAG's words for failures worth another try (besides our transient model errors).
TRANSIENT_WORDS = ("timeout", "timed out", "connection", "temporarily", "too many", "rate limit",
                   "server closed", "terminat", "cannot connect", "reset by peer")


def is_transient_failure(error_msg: str) -> bool:
    """LightRAG's error for a page (it prefixes ours with the chunk: "C[2/2]: ...: ...")."""
    lowered = error_msg.lower()
    return TRANSIENT_PREFIX in error_msg or any(w in lowered for w in TRANSIENT_WORDS)


def _status(doc: Any) -> str:
    value = doc.get("status") if isinstance(doc, dict) else getattr(doc, "status", "")
    return str(getattr(value, "value", value) or "").lower()


def _field(doc: Any, name: str, default: Any = None) -> Any:
    return doc.get(name, default) if isinstance(doc, dict) else getattr(doc, name, default)


async def _doc_statuses(rag: Any, ids: list[str]) -> list[Any]:
    """Doc status per id, aligned with `ids` (LightRAG answers [] when none exists)."""
    rows = await rag.doc_status.get_by_ids(ids)
    return rows if len(rows) == len(ids) else [None] * len(ids)


async def _counts(rag: Any, storage_name: str, ids: list[str]) -> dict[str, int]:
    storage = getattr(rag, storage_name)
    rows = await storage.get_by_ids(ids)
    return {i: int((r or {}).get("count", 0)) for i, r in zip(ids, rows, strict=True)}


@dataclass(frozen=True)
class InsertResult:
    """What LightRAG made of one page."""

    page: PageText
    status: str  # processed | duplicate | failed | adopted
    chunks: int = 0
    entities: int = 0
    relations: int = 0
    error: str = ""
    original_doc_id: str | None = None


async def insert_pages(rag: Any, pages: list[PageText], known_ids: set[str]
                       ) -> list[InsertResult]:
    """Insert a batch of new or changed pages with one `ainsert` call (on the pool's loop)."""
    from lightrag.utils_pipeline import compute_text_content_hash

    existing = await _doc_statuses(rag, [p.doc_id for p in pages])
    results: list[InsertResult] = []
    to_insert: list[PageText] = []
    for page, doc in zip(pages, existing, strict=True):
        if doc is not None:
            if (_status(doc) == "processed" and page.doc_id not in known_ids
                    and _field(doc, "content_hash") == compute_text_content_hash(page.text)):
                # Inserted by a run that died before recording it: adopt, no LLM calls.
                chunks = int(_field(doc, "chunks_count", 0) or 0)
                results.append(InsertResult(page, "adopted", chunks=chunks))
                continue
            # An older version (changed page) or a leftover of a killed run: replace it.
            await rag.adelete_by_doc_id(page.doc_id)
        to_insert.append(page)
    if not to_insert:
        return results
    ids = [p.doc_id for p in to_insert]
    paths = [file_path(p.normalized_url) for p in to_insert]
    track_id = f"rag-pipeline-{int(time.time() * 1000)}-{to_insert[0].job_id}"
    await rag.ainsert([p.text for p in to_insert], ids=ids, file_paths=paths, track_id=track_id)
    statuses = await _doc_statuses(rag, ids)
    duplicates: dict[str, str | None] = {}
    for record in (await rag.aget_docs_by_track_id(track_id)).values():
        metadata = _field(record, "metadata", {}) or {}
        if metadata.get("is_duplicate"):
            duplicates[_field(record, "file_path")] = metadata.get("original_doc_id")
    entities = await _counts(rag, "full_entities", ids)
    relations = await _counts(rag, "full_relations", ids)
    for page, path, status in zip(to_insert, paths, statuses, strict=True):
        state = _status(status) if status is not None else ""
        if state == "processed":
            results.append(InsertResult(page, "processed",
                                        chunks=int(_field(status, "chunks_count", 0) or 0),
                                        entities=entities.get(page.doc_id, 0),
                                        relations=relations.get(page.doc_id, 0)))
        elif status is None and path in duplicates:
            results.append(InsertResult(page, "duplicate", original_doc_id=duplicates[path]))
        else:
            error = str(_field(status, "error_msg", "") or "") if status is not None else ""
            results.append(InsertResult(
                page, "failed",
                error=error or f"LightRAG left the document in state {state or 'unknown'!r}"))
    return results


def outcome_of(result: InsertResult, replaced: bool, collection_id: str,
               original_urls: dict[str, str]) -> JobOutcome:
    page = result.page
    if result.status in ("processed", "adopted"):
        return _completed(page, Outcome.REPLACED if replaced else Outcome.INSERTED, collection_id,
                          chunks=result.chunks, entities=result.entities,
                          relations=result.relations)
    if result.status == "duplicate":
        original = result.original_doc_id or ""
        return JobOutcome(job_id=page.job_id, request_id=page.request_id,
                          state=JobState.COMPLETED, outcome=Outcome.DUPLICATE_CONTENT,
                          duplicate_of=original_urls.get(original, original),
                          metrics={"text_length": len(page.text)}, collection_id=collection_id)
    transient = is_transient_failure(result.error)
    code = Reason.TRANSIENT_FAILURE if transient else Reason.LIGHTRAG_FAILED
    return JobOutcome(job_id=page.job_id, request_id=page.request_id,
                      state=JobState.QUEUED if transient else JobState.FAILED,
                      error_code=code, error_msg=f"{code}: {result.error[:1500]}",
                      collection_id=collection_id)


def _completed(page: PageText, outcome: Outcome, collection_id: str, chunks: int = 0,
               entities: int = 0, relations: int = 0) -> JobOutcome:
    return JobOutcome(
        job_id=page.job_id, request_id=page.request_id, state=JobState.COMPLETED,
        outcome=outcome,
        metrics={"text_length": len(page.text), "chunks": chunks, "entities": entities,
                 "relations": relations},
        document=IndexedDocument(page.doc_id, page.normalized_url, file_path(page.normalized_url),
                                 page.content_hash),
        collection_id=collection_id,
    )


def plan_pages(pages: Sequence[PageText], known: dict[str, IndexedDocument],
               same_content: dict[str, IndexedDocument], collection_id: str
               ) -> tuple[list[PageText], list[JobOutcome]]:
    """Split a batch into pages to insert and outcomes decided without LightRAG."""
    latest: dict[str, PageText] = {}
    for page in pages:  # pages come in staging order: the last job of a url wins
        latest[page.doc_id] = page
    to_index: list[PageText] = []
    decided: list[JobOutcome] = []
    seen_content: dict[str, str] = {}
    for page in pages:
        if latest[page.doc_id] is not page:
            decided.append(JobOutcome(
                job_id=page.job_id, request_id=page.request_id, state=JobState.COMPLETED,
                outcome=Outcome.SUPERSEDED, duplicate_of=page.normalized_url,
                metrics={"superseded_by": latest[page.doc_id].job_id},
                collection_id=collection_id))
            continue
        indexed = known.get(page.doc_id)
        if indexed is not None and indexed.content_hash == page.content_hash:
            decided.append(JobOutcome(
                job_id=page.job_id, request_id=page.request_id, state=JobState.COMPLETED,
                outcome=Outcome.UNCHANGED, metrics={"text_length": len(page.text)},
                document=indexed, collection_id=collection_id))
            continue
        twin = same_content.get(page.content_hash)
        twin_url = twin.url if twin is not None and twin.doc_id != page.doc_id else None
        twin_url = twin_url or seen_content.get(page.content_hash)
        if twin_url is not None and twin_url != page.normalized_url:
            decided.append(JobOutcome(
                job_id=page.job_id, request_id=page.request_id, state=JobState.COMPLETED,
                outcome=Outcome.DUPLICATE_CONTENT, duplicate_of=twin_url,
                metrics={"text_length": len(page.text)}, collection_id=collection_id))
            continue
        seen_content.setdefault(page.content_hash, page.normalized_url)
        to_index.append(page)
    return to_index, decided
