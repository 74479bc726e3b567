"""A claimed job's message -> the page's text for RAG, in one pass (decoded once per run).

The message is validated again (the stored bytes must still be a contract message), its
payload decoded (gzip+base64 -> HTML; a page that cannot be decoded fails here, whichever
text is indexed) and the text chosen and cleaned (TEXT_SOURCE). What the page becomes:
a `PageText` to index, or the job's failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from rag_pipeline.contract import IndexingJob
from rag_pipeline.decoding import DecodeError, decode_html
from rag_pipeline.identity import content_hash
from rag_pipeline.indexing.page_text import page_text
from rag_pipeline.ledger import JobOutcome, PageText, RunJob
from rag_pipeline.settings.views import PageView
from rag_pipeline.vocabulary import JobState, Reason, TextSource


@dataclass(frozen=True)
class PageLimits:
    max_payload_bytes: int
    max_text_bytes: int
    text_source: TextSource

    @classmethod
    def from_settings(cls, s: PageView) -> PageLimits:
        return cls(s.max_payload_bytes, s.max_text_bytes, TextSource(s.text_source))


@dataclass(frozen=True)
class PreparedPage:
    """A page ready to index, and what the ledger keeps of it."""

    page: PageText
    source: str
    html_bytes: int

    def ledger_row(self) -> tuple[int, str, str, str, str, dict[str, int]]:
        p = self.page
        return (p.job_id, p.title, p.text, self.source, p.content_hash,
                {"html_bytes": self.html_bytes, "text_length": len(p.text)})


def failure(job: RunJob | PageText, code: str, message: str, collection_id: str) -> JobOutcome:
    return JobOutcome(job_id=job.job_id, request_id=job.request_id, state=JobState.FAILED,
                      reason=code, error_msg=f"{code}: {message}",
                      collection_id=collection_id)


def prepare_page(job: RunJob, message: bytes, limits: PageLimits) -> PreparedPage | JobOutcome:
    """Decode and clean one claimed page; a JobOutcome (failed) when it cannot be indexed."""
    collection_id = job.collection_id
    try:
        content = IndexingJob.model_validate_json(message).content
        html, html_bytes = None, 0
        if content.html:
            decoded = decode_html(content.html, content.encoding, content.content_type,
                                  limits.max_payload_bytes)
            html, html_bytes = decoded.html, decoded.byte_size
        page = page_text(content.text, content.title, html, limits.text_source)
    except DecodeError as exc:
        return failure(job, exc.reason, exc.detail, collection_id)
    except ValueError as exc:  # the stored message no longer validates
        return failure(job, Reason.INVALID_MESSAGE, str(exc)[:300], collection_id)
    if not page.text.strip():
        return failure(job, Reason.EMPTY_CONTENT, "the page has no text once cleaned "
                       "(content.text is empty and content.html holds no readable content)",
                       collection_id)
    text_bytes = len(page.text.encode("utf-8", "surrogatepass"))
    if text_bytes > limits.max_text_bytes:
        return failure(job, Reason.TOO_LARGE, f"the page's text is {text_bytes} bytes once "
                       f"cleaned, above the {limits.max_text_bytes} byte limit (MAX_TEXT_BYTES)",
                       collection_id)
    text = PageText(job.job_id, job.request_id, job.doc_id, job.normalized_url,
                    page.title, page.text, content_hash(page.text), job.attempts)
    return PreparedPage(text, page.source, html_bytes)
