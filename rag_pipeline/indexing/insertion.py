"""What LightRAG makes of a page, and what its job becomes.

- `plan_pages` decides without LightRAG: a page superseded by a later job of its url, an
  unchanged page (same content hash as its indexed document), identical text under another
  url of the collection (a duplicate, completed: LightRAG refuses identical content);
- `feed.WorkspaceFeed` hands the rest to LightRAG and reads back each document's status,
  chunks, entities and relations (a leftover of a killed insert with the same content is
  adopted);
- `outcome_of` turns that into the job's outcome: completed (inserted or replaced), failed
  with LightRAG's reason, or queued again when the reason is transient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rag_pipeline.identity import file_path
from rag_pipeline.knowledge.models import TRANSIENT_PREFIX
from rag_pipeline.ledger import IndexedDocument, IndexModels, JobOutcome, PageText
from rag_pipeline.vocabulary import InsertStatus, JobState, Outcome, Reason

# LightRAG's words for failures worth another try (besides our transient model errors).
TRANSIENT_WORDS = ("timeout", "timed out", "connection", "temporarily", "too many", "rate limit",
                   "server closed", "terminat", "cannot connect", "reset by peer")


def is_transient_failure(error_msg: str) -> bool:
    """LightRAG's error for a page (it prefixes ours with the chunk: "C[2/2]: ...: ...")."""
    lowered = error_msg.lower()
    return TRANSIENT_PREFIX in error_msg or any(w in lowered for w in TRANSIENT_WORDS)


def doc_state(doc: Any) -> str:
    """A LightRAG doc status's state, lower case ("pending", "processed", "failed", ...)."""
    value = doc.get("status") if isinstance(doc, dict) else getattr(doc, "status", "")
    return str(getattr(value, "value", value) or "").lower()


def doc_field(doc: Any, name: str, default: Any = None) -> Any:
    return doc.get(name, default) if isinstance(doc, dict) else getattr(doc, name, default)


@dataclass(frozen=True)
class InsertResult:
    """What LightRAG made of one page."""

    page: PageText
    status: InsertStatus
    chunks: int = 0
    entities: int = 0
    relations: int = 0
    error: str = ""
    original_doc_id: str | None = None


def outcome_of(result: InsertResult, replaced: bool, collection_id: str,
               original_urls: dict[str, str]) -> JobOutcome:
    page = result.page
    if result.status in (InsertStatus.PROCESSED, InsertStatus.ADOPTED):
        return _completed(page, Outcome.REPLACED if replaced else Outcome.INSERTED, collection_id,
                          chunks=result.chunks, entities=result.entities,
                          relations=result.relations)
    if result.status == InsertStatus.DUPLICATE:
        original = result.original_doc_id or ""
        return JobOutcome(job_id=page.job_id, request_id=page.request_id,
                          state=JobState.COMPLETED, outcome=Outcome.DUPLICATE_CONTENT,
                          duplicate_of=original_urls.get(original, original),
                          metrics={"text_length": len(page.text)}, collection_id=collection_id)
    transient = is_transient_failure(result.error)
    code = Reason.TRANSIENT_FAILURE if transient else Reason.LIGHTRAG_FAILED
    return JobOutcome(job_id=page.job_id, request_id=page.request_id,
                      state=JobState.QUEUED if transient else JobState.FAILED,
                      reason=code, error_msg=f"{code}: {result.error[:1500]}",
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
               same_content: dict[str, IndexedDocument], collection_id: str,
               models: IndexModels | None = None) -> tuple[list[PageText], list[JobOutcome]]:
    """Split a batch into pages to insert and outcomes decided without LightRAG. A page is
    unchanged when its text is, and its document was indexed with `models` (or with models
    the ledger does not know)."""
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
        if indexed is not None and indexed.content_hash == page.content_hash and (
                indexed.models is None or models is None or indexed.models == models):
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
