"""The shared vectors of the contract (contract/vectors/): the Python side decides each one
as the file says; `go test ./...` in go/ checks the Go side against the same files."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from rag_pipeline.contract import (
    ContentLimits,
    CrawlCompleted,
    IndexingJob,
    PageDeleted,
    Rejection,
    StatusUpdate,
    json_schemas,
    parse_message,
)

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "contract"
MIB = 1024 * 1024
# The limits the vectors assume (the defaults of KAFKA_MAX_MESSAGE_BYTES, MAX_PAYLOAD_BYTES,
# MAX_TEXT_BYTES); go/contract uses the same.
LIMITS = ContentLimits(max_message_bytes=20 * MIB, max_payload_bytes=50 * MIB,
                       max_text_bytes=8 * MIB)
MESSAGES = json.loads((CONTRACT / "vectors" / "messages.json").read_text())
STATUS_BODIES = json.loads((CONTRACT / "vectors" / "status_bodies.json").read_text())


def value(vector: dict) -> bytes | None:
    encoded = vector["value_base64"]
    return None if encoded is None else base64.b64decode(encoded)


@pytest.mark.parametrize("vector", MESSAGES, ids=[v["name"] for v in MESSAGES])
def test_python_decides_every_message_vector_as_the_file_says(vector):
    result = parse_message(value(vector), LIMITS)
    if vector["expect"] == "accepted":
        kind = {"page": IndexingJob, "crawl_completed": CrawlCompleted,
                "page_deleted": PageDeleted}[vector["kind"]]
        assert isinstance(result, kind), result
        assert getattr(result, "job_id", None) == vector["job_id"]
    else:
        assert isinstance(result, Rejection), f"{vector['name']} was accepted"
        assert (result.reason, result.job_id) == (vector["expect"], vector["job_id"])


@pytest.mark.parametrize("vector", STATUS_BODIES, ids=[v["name"] for v in STATUS_BODIES])
def test_python_decides_every_status_body_as_the_file_says(vector):
    try:
        StatusUpdate.model_validate_json(vector["body"])
    except ValidationError:
        accepted = False
    else:
        accepted = True
    assert accepted == vector["accepted"]


def test_every_kind_of_vector_is_there():
    kinds = {v["expect"].split(":")[0] for v in MESSAGES}
    assert {"accepted", "empty_message", "too_large", "invalid_json", "not_an_object",
            "missing_field", "invalid_field", "invalid_collection_id", "invalid_alias",
            "unknown_kind", "invalid_url",
            "unsupported_encoding", "not_html", "empty_content", "bad_base64",
            "bad_gzip"} - kinds <= {"too_large"}  # 20 MiB vectors would not fit the repo
    assert {True, False} == {v["accepted"] for v in STATUS_BODIES}
    accepted = {v["kind"] for v in MESSAGES if v["expect"] == "accepted"}
    assert accepted == {"page", "crawl_completed", "page_deleted"}


def test_checked_in_json_schemas_are_current():
    for name, text in json_schemas().items():
        path = CONTRACT / "schema" / f"{name}.schema.json"
        assert path.read_text() == text, (
            f"{path} is out of date: run .venv/bin/python scripts/contract_files.py")
