"""The indexing_jobs contract: every malformed message has its reason code."""

from __future__ import annotations

import base64
import copy
import gzip
import json
from collections.abc import Callable
from typing import Any

import pytest

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


MALFORMED: list[tuple[str, Any, str, int | None]] = [
    ("tombstone", None, "empty_message", None),
    ("empty", b"", "empty_message", None),
    ("not json", b"{this is not json", "invalid_json", None),
    ("truncated json", json.dumps(good()).encode()[:200], "invalid_json", 12345),
    ("invalid utf-8", b'{"job_id": 7, "x": "\xff\xfe"}', "invalid_json", 7),
    ("json array", b"[1, 2, 3]", "not_an_object", None),
    ("json string", b'"hello"', "not_an_object", None),
    ("missing collection_id", mutate(lambda m: m.pop("collection_id")),
     "missing_field:collection_id", 12345),
    ("missing job_id", mutate(lambda m: m.pop("job_id")), "missing_field:job_id", None),
    ("missing content", mutate(lambda m: m.pop("content")), "missing_field:content", 12345),
    ("job_id as string", mutate(lambda m: m.update(job_id="12345")), "invalid_field:job_id", None),
    ("job_id beyond 64 bits", mutate(lambda m: m.update(job_id=2**64 + 1)),
     "invalid_field:job_id", None),
    ("job_id negative", mutate(lambda m: m.update(job_id=-5)), "invalid_field:job_id", None),
    ("job_id bool", mutate(lambda m: m.update(job_id=True)), "invalid_field:job_id", None),
    ("depth float", mutate(lambda m: m.update(depth=1.5)), "invalid_field:depth", 12345),
    ("bad discovered_at", mutate(lambda m: m.update(discovered_at="yesterday")),
     "invalid_field:discovered_at", 12345),
    ("content not object", mutate(lambda m: m.update(content="x")), "invalid_field:content",
     12345),
    ("sql injection collection", mutate(lambda m: m.update(collection_id="x'; DROP TABLE jobs;--")),
     "invalid_collection_id", 12345),
    ("path traversal collection", mutate(lambda m: m.update(collection_id="../../etc")),
     "invalid_collection_id", 12345),
    ("65 char collection", mutate(lambda m: m.update(collection_id="a" * 65)),
     "invalid_collection_id", 12345),
    ("unicode look-alike collection", mutate(lambda m: m.update(collection_id="cоllection")),
     "invalid_collection_id", 12345),
    ("newline in collection", mutate(lambda m: m.update(collection_id="abc\n")),
     "invalid_collection_id", 12345),
    ("empty collection", mutate(lambda m: m.update(collection_id="")), "invalid_collection_id",
     12345),
    ("ftp url", mutate(lambda m: m.update(url="ftp://files.example.com/a")), "invalid_url", 12345),
    ("relative url", mutate(lambda m: m.update(url="/guides/x")), "invalid_url", 12345),
    ("url with NUL", mutate(lambda m: m.update(url="https://a.com/\x00x")), "invalid_url", 12345),
    ("unsupported encoding", mutate(set_content(encoding="brotli")), "unsupported_encoding", 12345),
    ("pdf", mutate(set_content(content_type="application/pdf")), "not_html", 12345),
    ("no content at all", mutate(set_content(html="", text="")), "empty_content", 12345),
    ("whitespace only", mutate(set_content(html="  ", text=" \n ")), "empty_content", 12345),
    ("bad base64", mutate(set_content(html="***not base64***")), "bad_base64", 12345),
    ("base64 not gzip", mutate(set_content(html=base64.b64encode(b"<p>x</p>").decode())),
     "bad_gzip", 12345),
    ("truncated gzip", mutate(set_content(
        html=base64.b64encode(gzip.compress(b"<p>x</p>" * 500)[:-30]).decode())),
     "bad_gzip", 12345),
    ("gzip trailing garbage", mutate(set_content(
        html=base64.b64encode(gzip.compress(b"<p>x</p>") + b"junk").decode())),
     "bad_gzip", 12345),
]


@pytest.mark.parametrize(("name", "message", "code", "job_id"), MALFORMED,
                         ids=[row[0] for row in MALFORMED])
def test_malformed_messages_are_rejected_with_their_reason(name, message, code, job_id):
    result = parse(message)
    assert isinstance(result, Rejection), f"{name} was accepted"
    assert result.code == code
    assert result.job_id == job_id
    assert result.message and "Traceback" not in result.message


def test_oversized_message_is_refused_before_parsing_and_keeps_its_job_id():
    message = good()
    message["content"]["text"] = "x" * (LIMIT + 10)
    result = parse(message)
    assert isinstance(result, Rejection)
    assert (result.code, result.job_id, result.collection_id) == ("too_large", 12345, UUID)


def test_text_above_the_text_limit_is_too_large_with_its_job_id():
    message = good()
    message["content"]["text"] = "word " * (2 * MIB)
    result = parse_message(json.dumps(message).encode(), ContentLimits(LIMIT, 50 * MIB, MIB))
    assert isinstance(result, Rejection)
    assert (result.code, result.job_id) == ("too_large", 12345)
    assert "MAX_TEXT_BYTES" in result.message


def test_gzip_bomb_in_a_message_is_too_large():
    message = good()
    message["content"]["html"] = base64.b64encode(gzip.compress(bytes(4 * MIB))).decode()
    result = parse_message(json.dumps(message).encode(),
                           ContentLimits(LIMIT, 1 * MIB, LIMITS.max_text_bytes))
    assert isinstance(result, Rejection) and result.code == "too_large"


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
    assert (result.code, result.job_id) == ("invalid_json", 12345)


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
