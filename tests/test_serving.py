"""The query service on the real stack: `rag-pipeline api` as a process of its own, asked over
HTTP (httpx) and MCP (the SDK's client), over collections indexed by real runs of PostgreSQL
documentation pages (Kafka, PostgreSQL + pgvector, LightRAG, the stand-in model)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rag_pipeline.local.corpus import pages as corpus_pages
from rag_pipeline.local.corpus import postgres_docs
from rag_pipeline.local.publishing import build_message, completion_message
from rag_pipeline.local.stack.deployment import free_port
from tests.helpers import (
    ROOT,
    create_topic,
    delete_topic,
    job_id_base,
    json_log_lines,
    produce,
    tick,
)

HOST = "www.postgresql.org"
ALL_TOKEN = "all-" + "a" * 28
LIMITED_TOKEN = "lim-" + "b" * 28
QUESTION = "How do I create an index on an expression?"


@dataclass
class Indexed:
    alias: str
    collection: str
    others: list[str]  # two small collections without alias
    request_id: int
    titles: dict[str, str]  # url -> page title, as the ledger keeps it
    settings: object
    paths: list[Path]


def page(job_id: int, collection: str, path: Path, request_id: int,
         alias: str | None = None) -> dict:
    return build_message(job_id=job_id, collection_id=collection, alias=alias,
                         url=f"https://{HOST}/docs/15/{path.name}", request_id=request_id,
                         html=path.read_bytes())


def run_collection(settings, collection: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.run_collection", collection],
                            cwd=ROOT, env={**os.environ, "KAFKA_TOPIC": settings.kafka_topic,
                                           "KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic})


@pytest.fixture(scope="module")
def indexed(stack, settings) -> Iterator[Indexed]:
    """pg-docs-like collection of 12 pages with an alias (released), two of 3 pages."""
    from rag_pipeline.ledger import JobLedger

    unique = os.urandom(5).hex()
    topic, dlq = f"indexing_jobs_{unique}", f"indexing_jobs_dlq_{unique}"
    create_topic(settings, topic, partitions=3)
    create_topic(settings, dlq, partitions=1)
    s = settings.model_copy(update={"kafka_topic": topic, "kafka_dlq_topic": dlq})
    ledger = JobLedger(s.postgres_conninfo(), s.postgres_password.get_secret_value()).open()
    ledger.migrate()
    try:
        paths = corpus_pages(postgres_docs(), limit=24, offset=500)
        alias, main = f"pg-{unique}", f"main-{unique}"
        others = [f"small-{unique}-{i}" for i in range(2)]
        base, request_id = job_id_base(), 7_000_000 + int(unique[:4], 16)
        messages = [page(base + i, main, p, request_id, alias) for i, p in enumerate(paths[:12])]
        messages.append(completion_message(collection_id=main, request_id=request_id,
                                           pages=12, alias=alias))
        for n, other in enumerate(others):
            messages += [page(base + 100 + 10 * n + i, other, p, request_id + 1 + n)
                         for i, p in enumerate(paths[12 + 3 * n: 15 + 3 * n])]
        produce(s, topic, messages)
        tick(s, ledger)
        # One after the other: the first run in a fresh database creates LightRAG's tables.
        assert [run_collection(s, c).wait(600) for c in (main, *others)] == [0, 0, 0]
        assert ledger.alias_collection(alias) == main
        with ledger.pool.connection() as conn:
            titles = dict(conn.execute(
                "SELECT url, title FROM rag_pipeline.jobs WHERE collection_id = %s",
                (main,)).fetchall())
        yield Indexed(alias, main, others, request_id, titles, s, paths)
    finally:
        ledger.close()
        delete_topic(settings, topic)
        delete_topic(settings, dlq)


@contextmanager
def api(env: dict[str, str] | None = None) -> Iterator[str]:
    """`rag-pipeline api` on a free port, its LightRAG sessions named apart; its base URL."""
    port = free_port()
    full = {**os.environ, "API_PORT": str(port), "API_TOKENS": f"{ALL_TOKEN},{LIMITED_TOKEN}:"
            "someone-else|another", "POSTGRES_SERVER_SETTINGS":
            f"application_name=serving-test-{port}", **(env or {})}
    url = f"http://127.0.0.1:{port}"
    log_path = api_log(url)
    log = log_path.open("wb")
    process = subprocess.Popen([str(Path(sys.executable).parent / "rag-pipeline"), "api"],
                               env=full, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def api_log(url: str) -> Path:
    return Path(tempfile.gettempdir()) / f"rag-pipeline-api-{url.rsplit(':', 1)[1]}.log"


def ask(url: str, body: dict, token: str | None = ALL_TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{url}/v1/query", json=body, headers=headers, timeout=120)


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, flags=re.M)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def test_queries_by_id_and_alias_cite_each_page_by_url_and_title(indexed):
    with api() as url:
        by_alias = ask(url, {"collection": indexed.alias, "question": QUESTION, "mode": "naive"})
        assert by_alias.status_code == 200, by_alias.text
        body = by_alias.json()
        assert (body["collection_id"], body["alias"]) == (indexed.collection, indexed.alias)
        assert body["answer"] and body["references"]
        for ref in body["references"]:
            assert ref["url"] in indexed.titles, ref
            assert ref["title"] == indexed.titles[ref["url"]] and ref["title"]
            assert ref["passages"] and all(p.strip() for p in ref["passages"])
        by_id = ask(url, {"collection": indexed.collection, "question": QUESTION,
                          "mode": "mix", "context_only": True, "top_k": 5})
        assert by_id.status_code == 200, by_id.text
        assert by_id.json()["answer"] is None and by_id.json()["references"]

        listed = httpx.get(f"{url}/v1/collections",
                           headers={"Authorization": f"Bearer {ALL_TOKEN}"}).json()
        [entry] = [c for c in listed["collections"] if c["collection_id"] == indexed.collection]
        assert entry["alias"] == indexed.alias and entry["answers_for_alias"]
        assert entry["pages_by_state"] == {"completed": 12} and entry["complete"]
        assert entry["models"] and entry["models"][0]["embedding_dim"] == 256

        status = httpx.get(f"{url}/v1/requests/{indexed.request_id}?offset=5&limit=5",
                           headers={"Authorization": f"Bearer {ALL_TOKEN}"}).json()
        assert status["jobs_by_state"] == {"completed": 12} and status["complete"]
        assert len(status["jobs"]) == 5 and status["total"] == 12
        assert status["collections"] == {indexed.collection: indexed.alias}
        missing = httpx.get(f"{url}/v1/requests/{2**62 + 7}", headers={
            "Authorization": f"Bearer {ALL_TOKEN}"})
        assert missing.status_code == 404 and missing.json()["reason"] == "unknown_request"
    # The service's own lines, uvicorn's and LightRAG's: one JSON object each (LOG_FORMAT).
    logged = json_log_lines(api_log(url))
    assert {"uvicorn.error", "uvicorn.access"} <= {e["logger"] for e in logged}


def test_unauthorised_forbidden_and_bad_requests_are_refused_with_what_to_do(indexed):
    body = {"collection": indexed.alias, "question": QUESTION, "mode": "naive"}
    with api() as url:
        none = ask(url, body, token=None)
        assert none.status_code == 401 and "Authorization: Bearer" in none.json()["detail"]
        assert none.headers["www-authenticate"] == "Bearer"
        wrong = ask(url, body, token="x" * 32)
        assert wrong.status_code == 401 and "not one of API_TOKENS" in wrong.json()["detail"]
        limited = ask(url, body, token=LIMITED_TOKEN)
        assert limited.status_code == 403 and limited.json()["reason"] == "forbidden"
        unknown = ask(url, {**body, "collection": "no-such-alias"})
        assert unknown.status_code == 404 and "no-such-alias" in unknown.json()["detail"]
        long = ask(url, {**body, "question": "why " * 600})
        assert long.status_code == 422 and "QUERY_MAX_CHARS" in long.json()["detail"]
        top_k = ask(url, {**body, "top_k": 1000})
        assert top_k.status_code == 422 and "QUERY_MAX_TOP_K" in top_k.json()["detail"]
        # A limited token sees only its collections.
        seen = httpx.get(f"{url}/v1/collections",
                         headers={"Authorization": f"Bearer {LIMITED_TOKEN}"}).json()
        assert seen == {"collections": []}
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert metric(url, 'rag_pipeline_query_errors_total{reason="unauthorized"}') == 2
        assert metric(url, 'rag_pipeline_query_errors_total{reason="forbidden"}') == 1
    # The limited token opens the collections it names.
    with api({"API_TOKENS": f"{LIMITED_TOKEN}:{indexed.alias}"}) as url:
        assert ask(url, body, token=LIMITED_TOKEN).status_code == 200


def test_a_saturated_service_answers_429_and_still_serves_what_it_admitted(indexed, model):
    httpx.post(f"{model}/control", json={"embed_latency_ms": 1500})
    try:
        with api({"QUERY_MAX_CONCURRENCY": "2"}) as url:
            body = {"collection": indexed.alias, "question": QUESTION, "mode": "naive",
                    "context_only": True}
            with ThreadPoolExecutor(6) as pool:
                answers = list(pool.map(lambda _n: ask(url, body), range(6)))
            codes = sorted(a.status_code for a in answers)
            assert codes.count(200) >= 2 and codes.count(429) >= 1, codes
            assert set(codes) <= {200, 429}
            refused = next(a for a in answers if a.status_code == 429).json()
            assert refused["reason"] == "saturated"
            assert "QUERY_MAX_CONCURRENCY" in refused["detail"]
    finally:
        httpx.post(f"{model}/control", json={"embed_latency_ms": 0})


def test_the_pool_is_bounded_shared_by_concurrent_queries_and_closes_what_it_evicts(
        indexed, ledger):
    with api({"MAX_RAG_INSTANCES": "2", "RAG_INSTANCE_TTL_SECONDS": "4"}) as url:
        port = url.rsplit(":", 1)[1]
        body = {"question": QUESTION, "mode": "naive", "context_only": True}
        # Six concurrent queries of one collection: one instance.
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(
                lambda _n: ask(url, {**body, "collection": indexed.others[0]}), range(6)))
        assert [a.status_code for a in answers] == [200] * 6
        assert metric(url, "rag_pipeline_query_pool_opened_total") == 1
        # Three collections through a pool of two: the least recently used goes.
        for collection in (indexed.others[1], indexed.collection):
            assert ask(url, {**body, "collection": collection}).status_code == 200
        assert metric(url, "rag_pipeline_query_pool_instances") == 2
        assert metric(url, 'rag_pipeline_query_pool_evictions_total{cause="lru"}') == 1
        assert lightrag_sessions(ledger, port) > 0
        # Idle past the TTL: every instance finalized, LightRAG's connections closed.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
                metric(url, "rag_pipeline_query_pool_instances") > 0
                or lightrag_sessions(ledger, port) > 0):
            time.sleep(0.5)
        assert metric(url, "rag_pipeline_query_pool_instances") == 0
        assert metric(url, 'rag_pipeline_query_pool_evictions_total{cause="ttl"}') == 2
        assert lightrag_sessions(ledger, port) == 0
        # And it opens again on the next query.
        assert ask(url, {**body, "collection": indexed.alias}).status_code == 200


def lightrag_sessions(ledger, port: str) -> int:
    with ledger.pool.connection() as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                            (f"serving-test-{port}",)).fetchone()[0]


def test_an_mcp_client_lists_the_tools_and_gets_cited_passages(indexed):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def session(url: str, token: str | None) -> tuple[list[str], dict, bool]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx2.AsyncClient(headers=headers, timeout=120) as http, Client(
                streamable_http_client(f"{url}/mcp/", http_client=http)) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            found = await client.call_tool("search_docs", {
                "collection": indexed.alias, "question": QUESTION, "top_k": 5})
            listed = await client.call_tool("list_collections", {})
            assert not listed.is_error
            return tools, found.structured_content or {}, found.is_error

    with api() as url:
        tools, found, failed = asyncio.run(session(url, ALL_TOKEN))
        assert {"search_docs", "list_collections"} <= set(tools)
        assert not failed and found["collection_id"] == indexed.collection
        assert found["passages"]
        for passage in found["passages"]:
            assert indexed.titles[passage["url"]] == passage["title"] and passage["text"]
        refused = httpx.post(f"{url}/mcp/", json={"jsonrpc": "2.0", "id": 1,
                                                  "method": "tools/list"})
        assert refused.status_code == 401


def test_a_query_answers_while_its_collection_is_being_indexed(indexed, ledger):
    s = indexed.settings
    base = job_id_base()
    more = [page(base + i, indexed.collection, p, indexed.request_id, indexed.alias)
            for i, p in enumerate(indexed.paths[18:24])]
    produce(s, s.kafka_topic, more)
    tick(s, ledger)
    with api() as url:
        worker = run_collection(s, indexed.collection)
        try:
            answered = 0
            while worker.poll() is None:
                reply = ask(url, {"collection": indexed.collection, "question": QUESTION,
                                  "mode": "naive"})
                assert reply.status_code == 200, reply.text
                assert reply.json()["references"]
                answered += 1
            assert worker.wait(60) == 0 and answered >= 1
        finally:
            if worker.poll() is None:
                worker.kill()


def test_the_cli_query_prints_urls_and_titles_and_the_service_refuses_to_start_open(
        indexed, ledger):
    env = {**os.environ}
    cli = str(Path(sys.executable).parent / "rag-pipeline")
    done = subprocess.run([cli, "query", "--alias", indexed.alias, "--mode", "naive", QUESTION],
                          env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    cited = re.findall(r"^\[\d+\] (.+) <(https://\S+)>$", done.stdout, flags=re.M)
    with ledger.pool.connection() as conn:
        titles = dict(conn.execute("SELECT url, title FROM rag_pipeline.jobs WHERE "
                                   "collection_id = %s", (indexed.collection,)).fetchall())
    assert cited and all(titles[url] == title for title, url in cited)
    env.pop("API_TOKENS", None)
    refused = subprocess.run([cli, "api"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "API_TOKENS is empty" in refused.stderr
    exposed = subprocess.run([cli, "api"], env={**env, "API_ALLOW_ANONYMOUS": "true",
                                                "API_HOST": "0.0.0.0"},
                             capture_output=True, text=True, timeout=60)
    assert exposed.returncode == 2 and "loopback" in exposed.stderr


def test_api_tokens_that_would_open_the_service_too_wide_are_refused_with_what_to_do():
    from rag_pipeline.serving.access import Access, Refused

    with pytest.raises(ValueError, match="shorter than 16"):
        Access.parse("short", False, "127.0.0.1")
    with pytest.raises(ValueError, match="names no collection"):
        Access.parse(f"{ALL_TOKEN}:", False, "127.0.0.1")
    with pytest.raises(ValueError, match="loopback"):
        Access.parse("", True, "0.0.0.0")
    access = Access.parse(f"{ALL_TOKEN}, {LIMITED_TOKEN}:docs|c-1", False, "0.0.0.0")
    assert access.grant(f"Bearer {ALL_TOKEN}").refs is None
    limited = access.grant(f"bearer {LIMITED_TOKEN}")
    assert limited.allows("docs", "c-9", "docs") and limited.allows("c-1", "c-1", None)
    assert not limited.allows("other", "c-2", "other")
    with pytest.raises(Refused) as refused:
        access.grant(f"Basic {ALL_TOKEN}")
    assert refused.value.status == 401
    # Secrets never in what is printed of the settings.
    assert ALL_TOKEN not in repr(access)
