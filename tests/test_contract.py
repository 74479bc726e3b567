"""The indexing_jobs contract: every malformed message has its reason code."""

from __future__ import annotations

import base64
import copy
import gzip
import json
from collections.abc import Callable
from typing import Any

from rag_pipeline.contract import (
    ContentLimits,
    DeadLetter,
    IndexingJob,
    JobResultEvent,
    Rejection,
    StatusUpdate,
    parse_message,
)
from rag_pipeline.local.publishing import build_message

MIB = 1024 * 1024
LIMIT = 20 * MIB
LIMITS = ContentLimits(max_message_bytes=LIMIT, max_payload_bytes=50 * MIB,
                       max_text_bytes=8 * MIB)
UUID = "550e8400-e29b-41d4-a716-446655440000"


def good() -> dict[str, Any]:
    return build_message(job_id=12345, collection_id=UUID,
                         url="https://docs.example.com/guides/getting-started",
                         html=b"<html><body><p>Getting started</p></body></html>",
                         text="Plain text extracted from body...", title="Getting Started")


def parse(message: dict[str, Any] | bytes | None):
    value = message if isinstance(message, (bytes, type(None))) else json.dumps(message).encode()
    return parse_message(value, LIMITS)


def test_the_design_example_is_accepted_with_extra_fields_kept():
    message = good()
    message["future_field"] = {"x": 1}
    message["content"]["language"] = "en"
    job = parse(message)
    assert isinstance(job, IndexingJob)
    assert job.job_id == 12345 and job.collection_id == UUID
    assert job.model_extra == {"future_field": {"x": 1}}
    details = job.crawl_details()
    assert details["extra"] == {"future_field": {"x": 1}}
    assert details["content_extra"] == {"language": "en"}


def mutate(fn: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    message = copy.deepcopy(good())
    fn(message)
    return message


def set_content(**values: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda m: m["content"].update(values)


# Every malformed kind with its reason code: the shared vectors in contract/vectors/
# (tests/test_contract_vectors.py, and go test in go/).


def test_oversized_message_is_refused_before_parsing_and_keeps_its_job_id():
    message = good()
    message["content"]["text"] = "x" * (LIMIT + 10)
    result = parse(message)
    assert isinstance(result, Rejection)
    assert (result.reason, result.job_id, result.collection_id) == ("too_large", 12345, UUID)


def test_text_above_the_text_limit_is_too_large_with_its_job_id():
    message = good()
    message["content"]["text"] = "word " * (2 * MIB)
    result = parse_message(json.dumps(message).encode(), ContentLimits(LIMIT, 50 * MIB, MIB))
    assert isinstance(result, Rejection)
    assert (result.reason, result.job_id) == ("too_large", 12345)
    assert "MAX_TEXT_BYTES" in result.detail


def test_gzip_bomb_in_a_message_is_too_large():
    message = good()
    message["content"]["html"] = base64.b64encode(gzip.compress(bytes(4 * MIB))).decode()
    result = parse_message(json.dumps(message).encode(),
                           ContentLimits(LIMIT, 1 * MIB, LIMITS.max_text_bytes))
    assert isinstance(result, Rejection) and result.reason == "too_large"


def test_identity_and_base64_encodings_are_accepted():
    for encoding, html in (("identity", "<p>x</p>"), ("base64", "PHA+eDwvcD4=")):
        message = mutate(set_content(encoding=encoding, html=html))
        assert isinstance(parse(message), IndexingJob)


def test_text_only_message_is_accepted():
    assert isinstance(parse(mutate(set_content(html=""))), IndexingJob)


def test_nul_in_free_text_is_removed_so_postgres_can_store_it():
    message = mutate(set_content(title="ti\x00tle", text="te\x00xt"))
    message["metadata"]["crawl_session_id"] = "s\x00id"
    message["extra\x00key"] = "v\x00"
    job = parse(json.dumps(message).encode())
    assert isinstance(job, IndexingJob)
    assert (job.content.title, job.content.text) == ("title", "text")
    assert "\\u0000" not in json.dumps(job.crawl_details())


def test_lone_surrogate_escape_is_invalid_json_with_its_job_id():
    # Go's encoding/json never writes one; RFC 8259 leaves its meaning undefined.
    message = mutate(set_content(text="te\ud800xt"))
    result = parse(json.dumps(message).encode())
    assert isinstance(result, Rejection)
    assert (result.reason, result.job_id) == ("invalid_json", 12345)


def test_records_serialise_as_the_design_says():
    assert StatusUpdate(status="completed").body() == {"status": "completed"}
    assert StatusUpdate(status="failed", error_msg="bad_gzip: x").body() == {
        "status": "failed", "error_msg": "bad_gzip: x"}
    event = JobResultEvent(job_id=1, request_id=2, status="completed",
                           processed_at="2025-12-24T10:30:00Z")
    assert set(json.loads(event.model_dump_json())) == {
        "job_id", "request_id", "status", "error_msg", "processed_at", "metrics"}
    assert set(event.metrics.model_dump()) == {
        "text_length", "chunks_created", "embedding_time_ms", "storage_time_ms"}
    dead = DeadLetter(original_message="{}", error="x", error_class="invalid_json")
    assert {"original_message", "error", "error_class", "failed_at", "retry_count"} <= set(
        dead.model_dump())
