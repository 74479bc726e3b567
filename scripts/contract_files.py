"""Writes the shared files of the indexing_jobs contract, which pytest and `go test`
(go/contract) both check:

- contract/schema/*.schema.json: JSON Schemas of the message and the status body, generated
  from the Python models (rag_pipeline.contract); tests/test_contract_vectors.py fails
  when they are not current;
- contract/vectors/*.json: messages (pages and crawl completions: accepted ones, and each
  malformed kind with its reason code) and status bodies, with what each side must decide.
  (status_sequences.json, the reports the Go handler is tested with, is written by hand.)

Edit a case here, run `.venv/bin/python scripts/contract_files.py`, commit what it writes.
Output is deterministic (fixed timestamps, gzip without mtime).
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "contract" / "vectors"
SCHEMAS = ROOT / "contract" / "schema"
UUID = "550e8400-e29b-41d4-a716-446655440000"
PAGE = b"<html><head><title>Getting Started</title></head><body><h1>Getting started</h1>" \
       b"<p>Install the package, then run it.</p></body></html>"


def gz64(data: bytes) -> str:
    return base64.b64encode(gzip.compress(data, mtime=0)).decode()


def good() -> dict[str, Any]:
    """The design's example message (docs/design.md, section 2)."""
    return {
        "job_id": 12345, "request_id": 100, "project_id": 50, "user_id": "user_abc123",
        "collection_id": UUID, "url": "https://docs.example.com/guides/getting-started",
        "depth": 2, "parent_url": "https://docs.example.com/guides",
        "discovered_at": "2025-12-24T10:30:00Z",
        "content": {"html": gz64(PAGE), "text": "Plain text extracted from body...",
                    "title": "Getting Started Guide", "content_type": "text/html",
                    "encoding": "gzip+base64"},
        "metadata": {"base_url": "https://docs.example.com", "crawl_session_id": "crawl_xyz789"},
    }


def mutate(fn: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    message = copy.deepcopy(good())
    fn(message)
    return message


def content(**values: Any) -> dict[str, Any]:
    return mutate(lambda m: m["content"].update(values))


def drop(field: str) -> dict[str, Any]:
    return mutate(lambda m: m.pop(field))


def with_(**values: Any) -> dict[str, Any]:
    return mutate(lambda m: m.update(values))


# (name, message value: a dict (JSON), bytes, or None for a tombstone, expected, job_id)
# expected is "accepted" or the reason code (rag_pipeline.vocabulary.Reason).
CASES: list[tuple[str, Any, str, int | None]] = [
    ("design example", good(), "accepted", 12345),
    ("extra fields kept", mutate(lambda m: (m.update(future_field={"x": 1}),
                                            m["content"].update(language="en"))),
     "accepted", 12345),
    ("collection id of the form project_N_request_M", with_(collection_id="project_50_request_100"),
     "accepted", 12345),
    ("identity encoding", content(html=PAGE.decode(), encoding="identity"), "accepted", 12345),
    ("base64 encoding", content(html=base64.b64encode(PAGE).decode(), encoding="base64"),
     "accepted", 12345),
    ("text only", content(html=""), "accepted", 12345),
    ("html only", content(text=""), "accepted", 12345),
    ("no parent_url, no metadata", mutate(lambda m: (m.pop("metadata"),
                                                    m.update(parent_url=None, depth=0))),
     "accepted", 12345),
    ("url with port and query", with_(url="https://docs.example.com:8443/a?b=c&d=e"),
     "accepted", 12345),
    ("content type with charset", content(content_type="text/html; charset=utf-8"),
     "accepted", 12345),
    ("tombstone", None, "empty_message", None),
    ("empty", b"", "empty_message", None),
    ("not json", b"{this is not json", "invalid_json", None),
    ("truncated json", json.dumps(good()).encode()[:200], "invalid_json", 12345),
    ("invalid utf-8", b'{"job_id": 7, "x": "\xff\xfe"}', "invalid_json", 7),
    ("json array", b"[1, 2, 3]", "not_an_object", None),
    ("json string", b'"hello"', "not_an_object", None),
    ("missing collection_id", drop("collection_id"), "missing_field:collection_id", 12345),
    ("missing job_id", drop("job_id"), "missing_field:job_id", None),
    ("missing url", drop("url"), "missing_field:url", 12345),
    ("missing content", drop("content"), "missing_field:content", 12345),
    ("job_id as string", with_(job_id="12345"), "invalid_field:job_id", None),
    ("job_id beyond 64 bits", with_(job_id=2**64 + 1), "invalid_field:job_id", None),
    ("job_id zero", with_(job_id=0), "invalid_field:job_id", None),
    ("job_id negative", with_(job_id=-5), "invalid_field:job_id", None),
    ("job_id bool", with_(job_id=True), "invalid_field:job_id", None),
    ("job_id float", with_(job_id=12345.0), "invalid_field:job_id", None),
    ("request_id negative", with_(request_id=-1), "invalid_field:request_id", 12345),
    ("user_id number", with_(user_id=7), "invalid_field:user_id", 12345),
    ("depth float", with_(depth=1.5), "invalid_field:depth", 12345),
    ("depth negative", with_(depth=-1), "invalid_field:depth", 12345),
    ("bad discovered_at", with_(discovered_at="yesterday"), "invalid_field:discovered_at",
     12345),
    ("content not object", with_(content="x"), "invalid_field:content", 12345),
    ("content.html number", content(html=5), "invalid_field:content.html", 12345),
    ("sql injection collection", with_(collection_id="x'; DROP TABLE jobs;--"),
     "invalid_collection_id", 12345),
    ("path traversal collection", with_(collection_id="../../etc"), "invalid_collection_id",
     12345),
    ("65 char collection", with_(collection_id="a" * 65), "invalid_collection_id", 12345),
    ("unicode look-alike collection", with_(collection_id="c\u043ellection"),
     "invalid_collection_id", 12345),
    ("newline in collection", with_(collection_id="abc\n"), "invalid_collection_id", 12345),
    ("empty collection", with_(collection_id=""), "invalid_collection_id", 12345),
    ("ftp url", with_(url="ftp://files.example.com/a"), "invalid_url", 12345),
    ("relative url", with_(url="/guides/x"), "invalid_url", 12345),
    ("url without host", with_(url="https:///x"), "invalid_url", 12345),
    ("url with NUL", with_(url="https://a.com/\x00x"), "invalid_url", 12345),
    ("unsupported encoding", content(encoding="brotli"), "unsupported_encoding", 12345),
    ("pdf", content(content_type="application/pdf"), "not_html", 12345),
    ("no content at all", content(html="", text=""), "empty_content", 12345),
    ("whitespace only", content(html="  ", text=" \n "), "empty_content", 12345),
    ("bad base64", content(html="***not base64***"), "bad_base64", 12345),
    ("base64 not gzip", content(html=base64.b64encode(b"<p>x</p>").decode()), "bad_gzip",
     12345),
    ("truncated gzip", content(html=base64.b64encode(
        gzip.compress(b"<p>x</p>" * 500, mtime=0)[:-30]).decode()), "bad_gzip", 12345),
    ("gzip trailing garbage", content(html=base64.b64encode(
        gzip.compress(b"<p>x</p>", mtime=0) + b"junk").decode()), "bad_gzip", 12345),
]

def completion(**values: Any) -> dict[str, Any]:
    """The crawler's word that the design example's request is complete (60 pages)."""
    message = {"kind": "crawl_completed", "request_id": 100, "collection_id": UUID,
               "alias": "pg-docs", "pages": 60, "completed_at": "2025-12-24T11:00:00Z"}
    message.update(values)
    return {k: v for k, v in message.items() if v is not DROP}


DROP = object()

# Aliases, kinds and the end of a crawl (docs/design.md, "Collections have a life").
CASES += [
    ("page with an alias", with_(alias="pg-docs"), "accepted", 12345),
    ("page with a host name as alias", with_(alias="docs.example.com"), "accepted", 12345),
    ("page with alias null", with_(alias=None), "accepted", 12345),
    ("page saying its kind", with_(kind="page"), "accepted", 12345),
    ("alias in capitals", with_(alias="PG-Docs"), "invalid_alias", 12345),
    ("alias that is a UUID", with_(alias=UUID), "invalid_alias", 12345),
    ("alias starting with a hyphen", with_(alias="-pg"), "invalid_alias", 12345),
    ("alias of 65 characters", with_(alias="a" * 65), "invalid_alias", 12345),
    ("empty alias", with_(alias=""), "invalid_alias", 12345),
    ("alias a number", with_(alias=7), "invalid_alias", 12345),
    ("alias with a space", with_(alias="pg docs"), "invalid_alias", 12345),
    ("unknown kind", with_(kind="delete_everything"), "unknown_kind", 12345),
    ("kind a number", with_(kind=5), "invalid_field:kind", 12345),
    ("crawl completed", completion(), "accepted", None),
    ("crawl completed without alias", completion(alias=DROP), "accepted", None),
    ("crawl completed with no page", completion(pages=0), "accepted", None),
    ("crawl completed without pages", completion(pages=DROP), "missing_field:pages", None),
    ("crawl completed without request_id", completion(request_id=DROP),
     "missing_field:request_id", None),
    ("crawl completed, negative pages", completion(pages=-1), "invalid_field:pages", None),
    ("crawl completed, pages a string", completion(pages="60"), "invalid_field:pages", None),
    ("crawl completed, bad completed_at", completion(completed_at="soon"),
     "invalid_field:completed_at", None),
    ("crawl completed, bad collection", completion(collection_id="../x"),
     "invalid_collection_id", None),
    ("crawl completed, bad alias", completion(alias="Bad Alias"), "invalid_alias", None),
]


def deletion(**values: Any) -> dict[str, Any]:
    """The removal of one page of the design example's collection."""
    message = {"kind": "page_deleted", "job_id": 12399, "request_id": 101,
               "collection_id": UUID, "alias": "pg-docs",
               "url": "https://www.postgresql.org/docs/current/tutorial-join.html"}
    message.update(values)
    return {k: v for k, v in message.items() if v is not DROP}


# Removing a page (docs/design.md, "Removing what should go").
CASES += [
    ("page deleted", deletion(), "accepted", 12399),
    ("page deleted without alias", deletion(alias=DROP), "accepted", 12399),
    ("page deleted without job_id", deletion(job_id=DROP), "missing_field:job_id", None),
    ("page deleted without url", deletion(url=DROP), "missing_field:url", 12399),
    ("page deleted without collection", deletion(collection_id=DROP),
     "missing_field:collection_id", 12399),
    ("page deleted, job_id zero", deletion(job_id=0), "invalid_field:job_id", None),
    ("page deleted, ftp url", deletion(url="ftp://files.example.com/a"), "invalid_url",
     12399),
    ("page deleted, bad alias", deletion(alias="Bad Alias"), "invalid_alias", 12399),
    ("page deleted, bad collection", deletion(collection_id="../x"), "invalid_collection_id",
     12399),
]

# (name, PATCH body as sent, accepted by the Go handler and by StatusUpdate)
STATUS_BODIES: list[tuple[str, str, bool]] = [
    ("completed", '{"status": "completed"}', True),
    ("failed with its reason", '{"status": "failed", "error_msg": "bad_gzip: not gzip"}', True),
    ("completed, error_msg null", '{"status": "completed", "error_msg": null}', True),
    ("failed without error_msg", '{"status": "failed"}', False),
    ("failed with empty error_msg", '{"status": "failed", "error_msg": ""}', False),
    ("unknown status", '{"status": "done"}', False),
    ("status missing", "{}", False),
    ("status a number", '{"status": 1}', False),
    ("error_msg a number", '{"status": "failed", "error_msg": 5}', False),
    ("unknown field", '{"status": "completed", "progress": 1}', False),
    ("field name in capitals", '{"STATUS": "completed"}', False),
    ("not an object", '["completed"]', False),
    ("not json", "status=completed", False),
    ("error_msg too long", json.dumps({"status": "failed", "error_msg": "x" * 4001}), False),
]


def encode(value: Any) -> str | None:
    if value is None:
        return None
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.b64encode(raw).decode()


def kind(value: Any) -> str:
    """The kind a message says it is (no kind: a page)."""
    if isinstance(value, dict) and value.get("kind") in ("crawl_completed", "page_deleted"):
        return value["kind"]
    return "page"


def main() -> None:
    from rag_pipeline.contract import json_schemas

    SCHEMAS.mkdir(parents=True, exist_ok=True)
    for name, text in json_schemas().items():
        (SCHEMAS / f"{name}.schema.json").write_text(text)
        print(f"wrote contract/schema/{name}.schema.json")
    VECTORS.mkdir(parents=True, exist_ok=True)
    messages = [{"name": name, "value_base64": encode(value), "expect": expect,
                 "job_id": job_id, "kind": kind(value)} for name, value, expect, job_id in CASES]
    statuses = [{"name": name, "body": body, "accepted": ok} for name, body, ok in STATUS_BODIES]
    for path, rows in ((VECTORS / "messages.json", messages),
                       (VECTORS / "status_bodies.json", statuses)):
        path.write_text(json.dumps(rows, indent=1, ensure_ascii=True) + "\n")
        print(f"wrote {path.relative_to(ROOT)} ({len(rows)} vectors)")


if __name__ == "__main__":
    main()
