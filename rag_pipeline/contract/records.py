"""The records this project writes: the status PATCH body, the optional result event, the
dead letter; and the JSON Schemas of the contract for the Go side."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from rag_pipeline.contract.fields import MAX_ERROR_MSG
from rag_pipeline.contract.messages import CrawlCompleted, IndexingJob, PageDeleted
from rag_pipeline.vocabulary import ReportedStatus


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
    schemas = {"indexing_job": IndexingJob, "crawl_completed": CrawlCompleted,
               "page_deleted": PageDeleted, "status_update": StatusUpdate}
    return {name: json.dumps({"$schema": "https://json-schema.org/draft/2020-12/schema",
                              **model.model_json_schema()}, indent=1, sort_keys=True) + "\n"
            for name, model in schemas.items()}
