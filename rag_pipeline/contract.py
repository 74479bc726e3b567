"""The message contract of topic `indexing_jobs`, and the records this project writes.

`parse_message` turns a Kafka message value into an `IndexingJob` or a `Rejection` with a
stable reason code, a sentence for people and - whenever it could be read - the job_id,
so that a failed status can still be reported for it.

Reason codes: `vocabulary.Reason` (the message's own: empty_message, too_large,
invalid_json, not_an_object, missing_field:<field>, invalid_field:<field>,
invalid_collection_id, invalid_url, unsupported_encoding, not_html, empty_content,
bad_base64, bad_gzip).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from rag_pipeline.decoding import ENCODINGS, DecodeError, check_decodable
from rag_pipeline.identity import normalize_url
from rag_pipeline.vocabulary import Reason, ReportedStatus

if TYPE_CHECKING:  # settings imports this module
    from rag_pipeline.settings.views import KafkaClientView, PageView

COLLECTION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a UUID is one of these
MAX_INT64 = 2**63 - 1
MAX_URL_LENGTH = 16 * 1024
HTML_TYPES = ("text/html", "application/xhtml+xml")
JOB_ID_SNIFF = re.compile(rb'"job_id"\s*:\s*(\d{1,19})\b')
COLLECTION_SNIFF = re.compile(rb'"collection_id"\s*:\s*"([A-Za-z0-9_-]{1,64})"')
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
MAX_ERROR_MSG = 4000

def clean_str(value: str) -> str:
    """Text safe for PostgreSQL: no NUL, no lone surrogates (from JSON "\\ud800")."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


def clean_json(value: Any) -> Any:
    """`clean_str` applied to every string of a JSON value (keys included)."""
    if isinstance(value, str):
        return clean_str(value)
    if isinstance(value, dict):
        return {clean_str(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    return value


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


class IndexingJob(BaseModel):
    """One crawled page, as the Go backend publishes it. Unknown fields are kept."""

    model_config = ConfigDict(extra="allow", strict=True)

    job_id: int = Field(gt=0, le=MAX_INT64)
    request_id: int = Field(ge=0, le=MAX_INT64)
    project_id: int = Field(ge=0, le=MAX_INT64)
    user_id: str
    collection_id: str = Field(json_schema_extra={"pattern": f"^{COLLECTION_ID.pattern}$"})
    url: str
    depth: int = Field(ge=0)
    parent_url: str | None = None
    discovered_at: datetime
    content: Content
    metadata: CrawlMetadata = Field(default_factory=CrawlMetadata)

    @field_validator("collection_id")
    @classmethod
    def _collection_id(cls, value: str) -> str:
        # It becomes a LightRAG workspace and part of SQL rows: letters, digits, _ and - only.
        if not COLLECTION_ID.fullmatch(value):
            raise ValueError("must be a UUID or 1-64 of the characters A-Z a-z 0-9 _ -")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if len(value) > MAX_URL_LENGTH or CONTROL_CHARS.search(value):
            raise ValueError("must be an http(s) URL without control characters, <= 16 KiB")
        normalize_url(value)  # raises InvalidUrl (a ValueError) with the reason
        return value

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


@dataclass(frozen=True)
class Rejection:
    """A message that cannot be processed: its reason code, a sentence, what could be read."""

    reason: str
    detail: str
    job_id: int | None = None
    collection_id: str | None = None

    @property
    def error_msg(self) -> str:
        return f"{self.reason}: {self.detail}"


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


def _reason(error: dict[str, Any]) -> tuple[str, str]:
    loc = [str(p) for p in error.get("loc", ())]
    field = ".".join(loc)
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    kind = error.get("type", "")
    if kind == "json_invalid":
        return Reason.INVALID_JSON, f"the message is not valid JSON ({message})"
    if not loc and kind in ("model_type", "model_attributes_type", "dict_type"):
        return Reason.NOT_AN_OBJECT, "the message is JSON but not an object"
    if kind == "missing":
        return Reason.MISSING_FIELD.about(field), f"required field {field} is missing"
    if loc and loc[0] == "collection_id":
        return Reason.INVALID_COLLECTION_ID, f"collection_id {message}"
    if loc and loc[0] in ("url", "parent_url") and kind == "value_error":
        return Reason.INVALID_URL, f"{field} {message}"
    return Reason.INVALID_FIELD.about(field), f"field {field}: {message}"


def parse_message(value: bytes | None, limits: ContentLimits) -> IndexingJob | Rejection:
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
        code, message = _reason(exc.errors(include_url=False)[0])
        return Rejection(code, message, job_id, collection_id)
    return check_content(job, limits)


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


# --- Records this project writes -----------------------------------------------------------
class StatusUpdate(BaseModel):
    """Body of PATCH {GO_BACKEND_URL}/api/v1/indexing/jobs/{job_id}/status, as strict as the
    Go backend's handler decodes it (go/contract): no unknown field, `error_msg` required
    when the status is failed, at most MAX_ERROR_MSG characters."""

    model_config = ConfigDict(extra="forbid")

    status: ReportedStatus
    error_msg: StrictStr | None = Field(default=None, max_length=MAX_ERROR_MSG)

    @model_validator(mode="after")
    def _failed_says_why(self) -> StatusUpdate:
        if self.status == ReportedStatus.FAILED and not self.error_msg:
            raise ValueError("error_msg is required when status is failed")
        return self

    def body(self) -> dict[str, str]:
        return self.model_dump(mode="json", exclude_none=True)


class ResultMetrics(BaseModel):
    text_length: int = 0
    chunks_created: int = 0
    embedding_time_ms: float = 0.0
    storage_time_ms: float = 0.0


class JobResultEvent(BaseModel):
    """The optional event on topic indexing_job_results."""

    job_id: int
    request_id: int | None
    status: ReportedStatus
    error_msg: str | None = None
    processed_at: datetime
    metrics: ResultMetrics = Field(default_factory=ResultMetrics)


class DeadLetter(BaseModel):
    """A record of topic indexing_jobs_dlq (same key as the original message)."""

    original_message: str
    original_message_encoding: Literal["utf-8", "base64"] = "utf-8"
    original_truncated: bool = False
    error: str
    error_class: str
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    retry_count: int = 0
    job_id: int | None = None
    collection_id: str | None = None


def json_schemas() -> dict[str, str]:
    """The JSON Schemas of the contract, as checked in under contract/schema/ for the Go side
    (scripts/contract_files.py writes them; a test keeps them current)."""
    schemas = {"indexing_job": IndexingJob, "status_update": StatusUpdate}
    return {name: json.dumps({"$schema": "https://json-schema.org/draft/2020-12/schema",
                              **model.model_json_schema()}, indent=1, sort_keys=True) + "\n"
            for name, model in schemas.items()}
