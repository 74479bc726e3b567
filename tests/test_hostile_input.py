"""Bad input through the real system: every kind ends where it is documented to (README,
"What happens to a page"): the DLQ with its reason code and a failed status when its job_id
can be read, or indexed. The sensor stays alive, the messages behind are processed, memory
stays bounded, and nothing in a message makes the pipeline send a request anywhere.
"""

from __future__ import annotations

import base64
import gzip
import http.server
import json
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import httpx
import pytest

from rag_pipeline.local.publishing import OutgoingMessage, build_message
from rag_pipeline.outbox import DeliveryPolicy, GoApiClient, deliver_outbox
from tests.helpers import MIB, dead_letters, index, job_id_base, tick

UUID = "6f1c8c9e-1d2b-4c3a-9e8f-000000000001"
# Stored as given, byte for byte: SQL is data here.
SQL_PAYLOAD = "Robert'); DROP TABLE rag_pipeline.jobs;-- \\' \" $$ ; SELECT pg_sleep(10);"


def produce_located(settings, topic: str, messages: list[OutgoingMessage]
                    ) -> list[tuple[int, int]]:
    """Produce in order, one at a time; the (partition, offset) each message got."""
    from confluent_kafka import Producer

    from rag_pipeline.kafka_io import KafkaOptions, producer_config

    producer = Producer(producer_config(KafkaOptions.from_settings(settings)))
    located: list[tuple[int, int]] = []
    for message in messages:
        got: list[tuple[int, int]] = []
        producer.produce(topic, key=message.key, value=message.value,
                         on_delivery=lambda err, m, got=got: got.append(
                             (m.partition(), m.offset()) if err is None else (-1, -1)))
        producer.flush(60)
        assert got and got[0][0] >= 0, "Kafka did not take a test message"
        located.append(got[0])
    return located


@dataclass
class Case:
    name: str
    message: OutgoingMessage
    job_id: int | None  # the job_id a status can be reported for, if any
    expect: str  # a DLQ reason code, or "completed"


@pytest.fixture
def canary() -> Iterator[list[str]]:
    """An HTTP server that message URLs point at: it must never be called."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def record(self) -> None:
            hits.append(f"{self.command} {self.path}")
            self.send_response(200)
            self.end_headers()

        # Every method a client could send: none may reach this server.
        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = record

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hits.append(f"http://127.0.0.1:{server.server_address[1]}")  # hits[0]: its address
    yield hits
    server.shutdown()


def gzip_bomb() -> str:
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [deflater.compress(bytes(MIB)) for _ in range(1100)]  # 1.1 GiB of zeros
    return base64.b64encode(b"".join(parts) + deflater.flush()).decode()


def cases(collection: str, base: int, canary_url: str) -> list[Case]:
    page = b"<html><body><main><h1>Title</h1><p>" + b"Readable words. " * 40 + b"</p></main>"

    def good(job_id: int, html: bytes = page + b"</body></html>", **extra) -> dict:
        return build_message(job_id=job_id, collection_id=collection,
                             url=f"https://hostile.test/{job_id}.html", html=html, **extra)

    def variant(job_id: int, /, **changes) -> dict:
        message = good(job_id)
        for key, value in changes.items():
            if key.startswith("content_"):
                message["content"][key.removeprefix("content_")] = value
            else:
                message[key] = value
        return message

    def raw(value: bytes | None) -> OutgoingMessage:
        return OutgoingMessage(key=collection.encode(), value=value)  # type: ignore[arg-type]

    def msg(message: dict) -> OutgoingMessage:
        return OutgoingMessage(key=collection.encode(), value=json.dumps(message).encode())

    b = base
    compressed = gzip.compress(page * 50)
    huge_text = variant(b + 3, content_text="x" * (19 * 1000 * 1000))  # a 20 MB JSON value
    deep = b"<html><body>" + b"<div>" * 10_000 + b"<p>deep but readable text</p>" + \
        b"</div>" * 10_000 + b"</body></html>"
    # 5 MB on one line, mostly markup (a text of 5 MB would cost the model ~500 chunks).
    single_line = (b"<html><body><p>" + b"one long line of words " * 200 + b"</p>"
                   + b'<span data-blob="' + b"x" * (5 * MIB) + b'">end</span></body></html>')
    return [
        Case("invalid json", raw(b"{not json at all"), None, "invalid_json"),
        Case("truncated json", raw(json.dumps(good(b + 1)).encode()[:300]), b + 1,
             "invalid_json"),
        Case("tombstone", raw(None), None, "empty_message"),
        Case("20 MB json value", msg(huge_text), b + 3, "too_large"),
        Case("job_id as string", msg(variant(b + 4, job_id=str(b + 4))), None,
             "invalid_field:job_id"),
        Case("depth as string", msg(variant(b + 5, depth="two")), b + 5, "invalid_field:depth"),
        Case("missing url", msg({k: v for k, v in good(b + 6).items() if k != "url"}), b + 6,
             "missing_field:url"),
        Case("job_id beyond 64 bits", raw(json.dumps(variant(b, job_id=2**70)).encode()), None,
             "invalid_field:job_id"),
        Case("sql in the title", msg(variant(b + 30, title=SQL_PAYLOAD, content_title=SQL_PAYLOAD)),
             b + 30, "completed"),
        Case("sql in collection_id", msg(variant(b + 8, collection_id="x'; DROP TABLE jobs;--")),
             b + 8, "invalid_collection_id"),
        Case("path in collection_id", msg(variant(b + 9, collection_id="../../etc")), b + 9,
             "invalid_collection_id"),
        Case("65-char collection_id", msg(variant(b + 10, collection_id="c" * 65)), b + 10,
             "invalid_collection_id"),
        Case("look-alike collection_id", msg(variant(b + 11, collection_id="collеction")),
             b + 11, "invalid_collection_id"),
        Case("bad base64", msg(variant(b + 12, content_html="%%% not base64 %%%")), b + 12,
             "bad_base64"),
        Case("whitespace in base64", msg(variant(b + 13, content_html=" \n".join(
            good(b)["content"]["html"][i:i + 76] for i in range(0, 400, 76)))), b + 13,
             "bad_base64"),
        Case("not gzip", msg(variant(b + 14, content_html=base64.b64encode(page).decode())),
             b + 14, "bad_gzip"),
        Case("truncated gzip", msg(variant(b + 15, content_html=base64.b64encode(
            compressed[: len(compressed) // 2]).decode())), b + 15, "bad_gzip"),
        Case("gzip with trailing garbage", msg(variant(b + 16, content_html=base64.b64encode(
            compressed + b"GARBAGE").decode())), b + 16, "bad_gzip"),
        Case("gzip bomb", msg(variant(b + 17, content_html=gzip_bomb())), b + 17, "too_large"),
        Case("unsupported encoding", msg(variant(b + 18, content_encoding="zstd")), b + 18,
             "unsupported_encoding"),
        Case("unsupported content type", msg(variant(b + 19, content_content_type="image/png")),
             b + 19, "not_html"),
        Case("empty html and text", msg(variant(b + 20, content_html="", content_text="")),
             b + 20, "empty_content"),
        Case("invalid utf-8 in the json", raw(b'{"job_id": %d, "url": "\xff\xfe"}' % (b + 21)),
             b + 21, "invalid_json"),
        Case("javascript url", msg(variant(b + 22, url="javascript:alert(1)")), b + 22,
             "invalid_url"),
        Case("script-only page", msg(good(b + 23, html=b"<html><head><script>var a = 1;"
                                                        b"</script></head><body><script>"
                                                        b"run()</script></body></html>")),
             b + 23, "empty_content"),
        # Handled, not refused:
        Case("nul bytes and invalid utf-8 in the page", msg(good(
            b + 24, html=page + b"\x00\xff\xfe more words \x00</body></html>",
            title="nul\x00title")), b + 24, "completed"),
        Case("10,000-deep nesting", msg(good(b + 25, html=deep)), b + 25, "completed"),
        Case("5 MB single-line page", msg(good(b + 26, html=single_line)), b + 26, "completed"),
        Case("urls and hosts pointing elsewhere", msg(variant(
            b + 27, url=f"{canary_url}/steal.html", parent_url=f"{canary_url}/parent",
            metadata={"base_url": canary_url, "crawl_session_id": "x"})), b + 27, "completed"),
        Case("same job_id, first content", msg(good(b + 28)), b + 28, "completed"),
        Case("same job_id, other content", msg(good(b + 28, html=page + b"<p>other</p>")),
             None, "conflicting_job_id"),
        Case("a good page behind all of them", msg(good(b + 29)), b + 29, "completed"),
    ]


def test_every_kind_of_bad_input_ends_where_documented(
        topics, ledger, unique, go_api, model, canary):
    collection = f"h-{unique}"
    base = job_id_base()
    all_cases = cases(collection, base, canary[0])
    assert len({c.name for c in all_cases}) >= 25
    located = dict(zip((c.name for c in all_cases),
                       produce_located(topics, topics.kafka_topic, [c.message for c in all_cases]),
                       strict=True))

    tracemalloc.start()
    try:
        reads = []
        while (report := tick(topics, ledger)).read or not reads:
            reads.append(report)  # the sensor's tick never raises on bad input
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(r.read for r in reads) == len(all_cases)
    assert peak < 400 * MIB, f"staging peaked at {peak / MIB:.0f} MiB of Python memory"

    with dg.instance_for_test() as instance:
        assert index(topics, instance, collection).success
    client = GoApiClient(topics.go_backend_url, 10)
    deliver_outbox(ledger, client, DeliveryPolicy.from_settings(topics), limit=1000)
    client.close()

    # Every dead letter is tied to the message it came from by the headers that locate it.
    letters = {(int(d["headers"]["__connect.errors.partition"]),
                int(d["headers"]["__connect.errors.offset"])): d
               for d in dead_letters(topics, topics.kafka_dlq_topic)}
    statuses: dict[int, list[dict]] = {}
    for call in httpx.get(f"{topics.go_backend_url}/calls", timeout=30).json():
        if call["answered"] == 200:
            statuses.setdefault(call["job_id"], []).append(call)
    for case in all_cases:
        if case.expect == "completed":
            job = ledger.job(case.job_id)
            assert job["state"] == "completed", (case.name, job)
            assert [c["status"] for c in statuses[case.job_id]] == ["completed"], case.name
            continue
        letter = letters.get(located[case.name])
        assert letter is not None, f"{case.name}: no dead letter for its message"
        assert letter["error_class"] == case.expect, (case.name, letter["error_class"])
        if case.job_id is not None:
            assert letter["job_id"] == case.job_id, case.name
        if letter["original_message_encoding"] == "utf-8" and not letter["original_truncated"]:
            assert letter["original_message"].encode() == (case.message.value or b""), case.name
        if case.job_id is not None:
            [call] = statuses[case.job_id]
            assert call["status"] == "failed", case.name
            assert call["error_msg"].startswith(case.expect.split(":")[0]), (case.name, call)
    # Nothing in a message made the pipeline fetch anything: no URL is ever requested.
    assert canary[1:] == []
    # SQL is stored as the data it is, byte for byte.
    with ledger.pool.connection() as conn:
        [title] = conn.execute("SELECT title FROM rag_pipeline.jobs WHERE job_id = %s",
                               (base + 30,)).fetchone()
    assert title.encode() == SQL_PAYLOAD.encode()
    # The injection attempts left the ledger and LightRAG's tables as they were.
    with ledger.pool.connection() as conn:
        for table in ("rag_pipeline.jobs", "rag_pipeline.outbox", "public.lightrag_doc_status",
                      "public.lightrag_doc_chunks"):
            assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None
        assert conn.execute("SELECT count(*) FROM rag_pipeline.jobs WHERE job_id = ANY(%s)",
                            ([c.job_id for c in all_cases if c.job_id],)).fetchone()[0] > 20
