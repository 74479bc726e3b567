"""The messages of topic `indexing_jobs`: a page (`IndexingJob`, the default kind), the
crawler's word that a crawl request is complete (`CrawlCompleted`, kind `crawl_completed`,
published after the request's pages with the same key, so in the same partition and after
them) and the removal of one page from a collection (`PageDeleted`, kind `page_deleted`: a
job like a page, with a status for the Go API; same key, so ordered with the collection's
pages). A Kafka tombstone (no value) names no job and no page: it is dead-lettered as
`empty_message`, never read as a deletion.

`parse_message` turns a Kafka message value into one of them or a `Rejection` with a
stable reason code, a sentence for people and - whenever it could be read - the job_id,
so that a failed status can still be reported for it.

Reason codes: `vocabulary.Reason` (the message's own: empty_message, too_large,
invalid_json, not_an_object, unknown_kind, missing_field:<field>, invalid_field:<field>,
invalid_collection_id, invalid_alias, invalid_url, unsupported_encoding, not_html,
empty_content, bad_base64, bad_gzip).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from rag_pipeline.contract.fields import (
    ALIAS,
    COLLECTION_ID,
    CONTROL_CHARS,
    MAX_INT64,
    MAX_URL_LENGTH,
    UUID,
    Rejection,
    check_alias,
    check_collection_id,
    clean_json,
    clean_str,
    reason_of,
)
from rag_pipeline.decoding import ENCODINGS, DecodeError, check_decodable
from rag_pipeline.identity import normalize_url
from rag_pipeline.vocabulary import Reason

if TYPE_CHECKING:  # settings imports this module
    from rag_pipeline.settings.views import KafkaClientView, PageView

HTML_TYPES = ("text/html", "application/xhtml+xml")
JOB_ID_SNIFF = re.compile(rb'"job_id"\s*:\s*(\d{1,19})\b')
COLLECTION_SNIFF = re.compile(rb'"collection_id"\s*:\s*"([A-Za-z0-9_-]{1,64})"')
# What a message says it is; no `kind` is a page (the original contract).
PAGE_KIND = "page"
CRAWL_COMPLETED_KIND = "crawl_completed"
PAGE_DELETED_KIND = "page_deleted"
KINDS = (PAGE_KIND, CRAWL_COMPLETED_KIND, PAGE_DELETED_KIND)

class Content(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    html: str = ""
    text: str = ""
    title: str = ""
    content_type: str = "text/html"
    encoding: str = "gzip+base64"

    @field_validator("text", "title")
    @classmethod
    def _clean(cls, value: str) -> str:
        return clean_str(value)


class CrawlMetadata(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    base_url: str | None = None
    crawl_session_id: str | None = None


COLLECTION_ID_SCHEMA = {"pattern": f"^{COLLECTION_ID.pattern}$"}
ALIAS_SCHEMA = {"anyOf": [{"type": "string", "pattern": f"^{ALIAS.pattern}$",
                           "not": {"pattern": f"^{UUID.pattern}$"}}, {"type": "null"}]}


def check_url(value: str) -> str:
    if len(value) > MAX_URL_LENGTH or CONTROL_CHARS.search(value):
        raise ValueError("must be an http(s) URL without control characters, <= 16 KiB")
    normalize_url(value)  # raises InvalidUrl (a ValueError) with the reason
    return value


class IndexingJob(BaseModel):
    """One crawled page, as the Go backend publishes it. Unknown fields are kept."""

    model_config = ConfigDict(extra="allow", strict=True)

    kind: Literal["page"] = PAGE_KIND
    job_id: int = Field(gt=0, le=MAX_INT64)
    request_id: int = Field(ge=0, le=MAX_INT64)
    project_id: int = Field(ge=0, le=MAX_INT64)
    user_id: str
    collection_id: str = Field(json_schema_extra=COLLECTION_ID_SCHEMA)
    # The name the collection answers to (optional; the same on every page of a collection).
    alias: str | None = Field(default=None, json_schema_extra=ALIAS_SCHEMA)
    url: str
    depth: int = Field(ge=0)
    parent_url: str | None = None
    discovered_at: datetime
    content: Content
    metadata: CrawlMetadata = Field(default_factory=CrawlMetadata)

    _collection_id = field_validator("collection_id")(check_collection_id)
    _alias = field_validator("alias")(check_alias)

    _url = field_validator("url")(check_url)

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, value: str) -> str:
        return clean_str(value)

    @property
    def normalized_url(self) -> str:
        return normalize_url(self.url)

    def crawl_details(self) -> dict[str, Any]:
        """Everything the ledger keeps as metadata: crawl fields, metadata and extras."""
        details = {
            "depth": self.depth,
            "parent_url": self.parent_url,
            "discovered_at": self.discovered_at.isoformat(),
            "metadata": self.metadata.model_dump(),
        }
        if self.model_extra:
            details["extra"] = self.model_extra
        content_extra = self.content.model_extra
        if content_extra:
            details["content_extra"] = content_extra
        return clean_json(details)


class CrawlCompleted(BaseModel):
    """The crawler's word that crawl request `request_id` of `collection_id` is complete: it
    published `pages` page messages for it, every one before this message (same key, so
    the same partition). No job: nothing is reported to the Go API for it."""

    model_config = ConfigDict(extra="allow", strict=True)

    kind: Literal["crawl_completed"]
    request_id: int = Field(ge=0, le=MAX_INT64)
    collection_id: str = Field(json_schema_extra=COLLECTION_ID_SCHEMA)
    alias: str | None = Field(default=None, json_schema_extra=ALIAS_SCHEMA)
    pages: int = Field(ge=0, le=MAX_INT64)
    completed_at: datetime

    _collection_id = field_validator("collection_id")(check_collection_id)
    _alias = field_validator("alias")(check_alias)


class PageDeleted(BaseModel):
    """Remove the page at `url` from `collection_id` (a site owner's removal request, a page
    gone from the site): its document leaves LightRAG with the entities and relations only
    it supported; a later page message for the url indexes it again. A job: the Go API gets
    its status (completed also when the page was not indexed: deleting is idempotent)."""

    model_config = ConfigDict(extra="allow", strict=True)

    kind: Literal["page_deleted"]
    job_id: int = Field(gt=0, le=MAX_INT64)
    request_id: int = Field(ge=0, le=MAX_INT64)
    collection_id: str = Field(json_schema_extra=COLLECTION_ID_SCHEMA)
    alias: str | None = Field(default=None, json_schema_extra=ALIAS_SCHEMA)
    url: str

    _collection_id = field_validator("collection_id")(check_collection_id)
    _alias = field_validator("alias")(check_alias)
    _url = field_validator("url")(check_url)

    @property
    def normalized_url(self) -> str:
        return normalize_url(self.url)


Message = IndexingJob | CrawlCompleted | PageDeleted


@dataclass(frozen=True)
class ContentLimits:
    """How much a message may carry (KAFKA_MAX_MESSAGE_BYTES, MAX_PAYLOAD_BYTES,
    MAX_TEXT_BYTES)."""

    max_message_bytes: int
    max_payload_bytes: int
    max_text_bytes: int

    @classmethod
    def from_settings(cls, kafka: KafkaClientView, pages: PageView) -> ContentLimits:
        return cls(kafka.kafka_max_message_bytes, pages.max_payload_bytes, pages.max_text_bytes)


def _sniff(value: bytes) -> tuple[int | None, str | None]:
    """job_id and collection_id from a message we could not parse, if they are readable."""
    head = value[:65536]
    job_id = collection_id = None
    if m := JOB_ID_SNIFF.search(head):
        number = int(m.group(1))
        job_id = number if 0 < number <= MAX_INT64 else None
    if m := COLLECTION_SNIFF.search(head):
        collection_id = m.group(1).decode()
    return job_id, collection_id


def _readable_ids(data: Any) -> tuple[int | None, str | None]:
    if not isinstance(data, dict):
        return None, None
    job_id = data.get("job_id")
    if not (isinstance(job_id, int) and not isinstance(job_id, bool) and 0 < job_id <= MAX_INT64):
        job_id = None
    collection_id = data.get("collection_id")
    if not (isinstance(collection_id, str) and COLLECTION_ID.fullmatch(collection_id)):
        collection_id = None
    return job_id, collection_id


def parse_message(value: bytes | None, limits: ContentLimits) -> Message | Rejection:
    """Validate one Kafka message value of topic indexing_jobs; never raises."""
    if value is None or not value.strip():
        return Rejection(Reason.EMPTY_MESSAGE, "the message has no value (tombstone or empty)")
    if len(value) > limits.max_message_bytes:
        job_id, collection_id = _sniff(value)
        return Rejection(Reason.TOO_LARGE, f"the message is {len(value)} bytes, above the "
                         f"{limits.max_message_bytes} byte limit", job_id, collection_id)
    try:
        job = IndexingJob.model_validate_json(value)
    except ValidationError as exc:
        try:
            data = json.loads(value)
        except (ValueError, RecursionError):
            job_id, collection_id = _sniff(value)
            return Rejection(Reason.INVALID_JSON, "the message is not valid JSON", job_id,
                             collection_id)
        job_id, collection_id = _readable_ids(data)
        kind = data.get("kind", PAGE_KIND) if isinstance(data, dict) else PAGE_KIND
        if kind == CRAWL_COMPLETED_KIND:
            return _control(CrawlCompleted, value, None, collection_id)
        if kind == PAGE_DELETED_KIND:
            return _control(PageDeleted, value, job_id, collection_id)
        if isinstance(kind, str) and kind != PAGE_KIND:
            return Rejection(Reason.UNKNOWN_KIND, f"kind {kind!r} is not one of "
                             f"{', '.join(KINDS)}", job_id, collection_id)
        code, message = reason_of(exc.errors(include_url=False)[0])
        return Rejection(code, message, job_id, collection_id)
    return check_content(job, limits)


def _control(model: type[CrawlCompleted] | type[PageDeleted], value: bytes,
             job_id: int | None, collection_id: str | None) -> Message | Rejection:
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        code, message = reason_of(exc.errors(include_url=False)[0])
        return Rejection(code, message, job_id, collection_id)


def check_content(job: IndexingJob, limits: ContentLimits) -> IndexingJob | Rejection:
    """The content rules: a supported encoding, HTML, something to index, in bounds,
    decodable."""
    content = job.content

    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(reason, detail, job.job_id, job.collection_id)

    if content.encoding.strip().lower() not in ENCODINGS:
        return reject(Reason.UNSUPPORTED_ENCODING, f"content.encoding {content.encoding!r} is not "
                      f"supported; use one of {', '.join(ENCODINGS)}")
    media_type = content.content_type.split(";")[0].strip().lower()
    if media_type not in HTML_TYPES:
        return reject(Reason.NOT_HTML, f"content.content_type {content.content_type!r} is not "
                      f"HTML ({' or '.join(HTML_TYPES)})")
    if not content.html.strip() and not content.text.strip():
        return reject(Reason.EMPTY_CONTENT, "content.html and content.text are both empty")
    text_bytes = len(content.text.encode("utf-8", "surrogatepass"))
    if text_bytes > limits.max_text_bytes:
        return reject(Reason.TOO_LARGE, f"content.text is {text_bytes} bytes, above the "
                      f"{limits.max_text_bytes} byte limit (MAX_TEXT_BYTES)")
    if content.html:
        try:
            check_decodable(content.html, content.encoding, limits.max_payload_bytes)
        except DecodeError as exc:
            return reject(exc.reason, exc.detail)
    return job


