"""Indexing runs: real pages into LightRAG on PostgreSQL + pgvector, one workspace per
collection, through the Dagster assets (in process) and the stand-in model over HTTP."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest
from lightrag import QueryParam

from rag_pipeline.identity import file_path, normalize_url
from rag_pipeline.indexing.insertion import is_transient_failure
from rag_pipeline.knowledge.workspaces import LightRAGOptions, shared_pool
from rag_pipeline.ledger import JobLedger
from rag_pipeline.local.corpus import pages as corpus_pages
from rag_pipeline.local.corpus import postgres_docs
from rag_pipeline.local.publishing import build_message
from tests.helpers import (
    dead_letters,
    index,
    job_id_base,
    page_message,
    produce,
    run_worker_inserting,
    tick,
)


@pytest.fixture(scope="module")
def docs() -> Path:
    return postgres_docs()


def model_stats(base: str) -> dict:
    return httpx.get(f"{base}/stats").json()


def metadata(result: dg.ExecuteInProcessResult, asset: str = "lightrag_documents") -> dict:
    [event] = [e for e in result.get_asset_materialization_events()
               if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def job_rows(ledger: JobLedger, job_ids: list[int]) -> dict[int, dict]:
    return {row["job_id"]: row for row in ledger.jobs(job_ids)}


def lightrag_docs(ledger: JobLedger, workspace: str) -> dict[str, str]:
    with ledger.pool.connection() as conn:
        rows = conn.execute("SELECT id, status FROM lightrag_doc_status WHERE workspace = %s",
                            (workspace,)).fetchall()
    return dict(rows)


def stage_and_index(s, ledger, instance, collection, messages):
    produce(s, s.kafka_topic, messages)
    assert tick(s, ledger).staged == len(messages)
    return index(s, instance, collection)


def test_three_collections_each_hold_exactly_their_pages(topics, ledger, unique, docs):
    files = corpus_pages(docs, limit=18, offset=200)
    base = job_id_base()
    collections = {f"c{i}-{unique}": (f"site{i}.example.com", files[i * 6:(i + 1) * 6])
                   for i in range(3)}
    expected: dict[str, set[str]] = {}
    with dg.instance_for_test() as instance:
        for n, (collection, (host, paths)) in enumerate(collections.items()):
            messages = [page_message(base + n * 100 + i, collection, host, p)
                        for i, p in enumerate(paths)]
            result = stage_and_index(topics, ledger, instance, collection, messages)
            assert result.success
            meta = metadata(result)
            assert meta["pages_inserted"] == 6 and meta["pages_failed"] == 0
            assert meta["chunks"] > 0 and meta["entities"] > 0 and meta["llm_calls"] > 0
            checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
            assert checks == {"completed_pages_in_lightrag": True, "no_job_left_running": True}
            rows = job_rows(ledger, [m["job_id"] for m in messages])
            assert {r["state"] for r in rows.values()} == {"completed"}
            assert {r["outcome"] for r in rows.values()} == {"inserted"}
            expected[collection] = {ledger.job(j)["doc_id"] for j in rows}
            job = ledger.job(messages[0]["job_id"])
            assert {"text_length", "chunks", "entities", "relations", "embedding_time_ms",
                    "storage_time_ms"} <= set(job["metrics"])

    for collection, doc_ids in expected.items():
        docs_in_workspace = lightrag_docs(ledger, collection)
        assert set(docs_in_workspace) == doc_ids, "exactly its pages, nothing else"
        assert set(docs_in_workspace.values()) == {"processed"}
        with ledger.pool.connection() as conn:
            tracks = conn.execute("SELECT count(DISTINCT track_id) FROM lightrag_doc_status "
                                  "WHERE workspace = %s", (collection,)).fetchone()[0]
        assert tracks < len(doc_ids), "pages are inserted in batches, not one call per page"

    # Queries see their collection's content and never another's.
    pool = shared_pool(LightRAGOptions.from_settings(topics))
    for collection, (host, _) in collections.items():
        own_prefix = host + "|"
        for mode in ("naive", "hybrid"):
            data = pool.run(_query_data(pool, collection, "How do I configure PostgreSQL?", mode))
            chunks = data["data"]["chunks"]
            assert chunks, f"{mode} query of {collection} found nothing"
            assert all(c["file_path"].startswith(own_prefix) for c in chunks), (mode, chunks[:2])


async def _query_data(pool, collection: str, question: str, mode: str) -> dict:
    rag = await pool.workspace(collection)
    return await rag.aquery_data(question, param=QueryParam(mode=mode, enable_rerank=False))


def test_unchanged_pages_are_skipped_without_model_calls_and_changed_ones_replaced(
        topics, ledger, unique, docs, model):
    collection = f"c-{unique}"
    paths = corpus_pages(docs, limit=4, offset=300)
    base = job_id_base()
    with dg.instance_for_test() as instance:
        first = [page_message(base + i, collection, "docs.test", p) for i, p in enumerate(paths)]
        assert stage_and_index(topics, ledger, instance, collection, first).success

        # The same crawl again (new job_ids): nothing is inserted, no model call is made.
        before = model_stats(model)
        again = [page_message(base + 10 + i, collection, "docs.test", p)
                 for i, p in enumerate(paths)]
        result = stage_and_index(topics, ledger, instance, collection, again)
        assert model_stats(model)["chat_calls"] == before["chat_calls"]
        assert metadata(result)["pages_unchanged"] == 4
        assert {r["outcome"] for r in job_rows(ledger, [m["job_id"] for m in again]).values()} \
            == {"unchanged"}

        # One page changed: exactly that one is replaced.
        changed_html = paths[0].read_bytes().replace(  # inside the main content
            b"</p>", f"</p><p>Brand new paragraph {unique} about vacuum tuning.</p>".encode(), 1)
        changed = [page_message(base + 20, collection, "docs.test", paths[0], html=changed_html)]
        result = stage_and_index(topics, ledger, instance, collection, changed)
        assert metadata(result)["pages_replaced"] == 1
        assert ledger.job(base + 20)["outcome"] == "replaced"
        doc_id = ledger.job(base + 20)["doc_id"]
        with ledger.pool.connection() as conn:
            content = conn.execute("SELECT content FROM lightrag_doc_full WHERE workspace = %s "
                                   "AND id = %s", (collection, doc_id)).fetchone()[0]
        assert f"Brand new paragraph {unique}" in content
        assert len(lightrag_docs(ledger, collection)) == 4, "replaced, not added"


def test_identical_text_under_two_urls_completes_both_one_as_duplicate(
        topics, ledger, unique, docs):
    collection = f"c-{unique}"
    [path] = corpus_pages(docs, limit=1, offset=400)
    base = job_id_base()
    messages = [page_message(base, collection, "a.test", path, name="original.html"),
                page_message(base + 1, collection, "a.test", path, name="mirror.html")]
    with dg.instance_for_test() as instance:
        result = stage_and_index(topics, ledger, instance, collection, messages)
    assert metadata(result)["pages_duplicate"] == 1
    rows = job_rows(ledger, [base, base + 1])
    assert rows[base]["state"] == rows[base + 1]["state"] == "completed"
    assert rows[base + 1]["outcome"] == "duplicate_content"
    assert rows[base + 1]["duplicate_of"] == normalize_url("https://a.test/docs/original.html")
    assert len(lightrag_docs(ledger, collection)) == 1


def test_a_page_the_model_refuses_fails_alone_with_its_reason(
        topics, ledger, unique, docs, model):
    collection = f"c-{unique}"
    paths = corpus_pages(docs, limit=3, offset=500)
    poison = f"POISON-PILL-{unique}"
    httpx.post(f"{model}/control", json={"refuse_text": poison})
    base = job_id_base()
    messages = [page_message(base + i, collection, "p.test", p) for i, p in enumerate(paths)]
    messages.append(page_message(base + 9, collection, "p.test", paths[0], name="poison.html",
                                 html=f"<html><body><p>{poison} in a page that the model "
                                      f"refuses to read, with enough words.</p></body></html>"
                                 .encode()))
    with dg.instance_for_test() as instance:
        result = stage_and_index(topics, ledger, instance, collection, messages)
    assert result.success
    assert metadata(result)["pages_failed"] == 1
    rows = job_rows(ledger, [m["job_id"] for m in messages])
    assert rows[base + 9]["state"] == "failed"
    assert rows[base + 9]["reason"] == "lightrag_failed"
    assert "HTTP 400" in rows[base + 9]["error_msg"]
    assert all(rows[base + i]["state"] == "completed" for i in range(3))
    [letter] = [d for d in dead_letters(topics, topics.kafka_dlq_topic) if d["job_id"] == base + 9]
    assert letter["error_class"] == "lightrag_failed"


def test_a_page_whose_cleaned_text_exceeds_the_text_limit_fails_as_too_large(
        topics, ledger, unique, model):
    collection = f"c-{unique}"
    s = topics.model_copy(update={"max_text_bytes": 4096})
    base = job_id_base()
    long_page = b"<html><body><main><p>" + b"many readable words here " * 400 + b"</p></main>"
    messages = [
        page_message(base, collection, "t.test", Path("short.html"),
                     html=b"<html><body><p>A short page with enough words.</p></body></html>"),
        page_message(base + 1, collection, "t.test", Path("long.html"),
                     html=long_page + b"</body></html>"),
    ]
    with dg.instance_for_test() as instance:
        result = stage_and_index(s, ledger, instance, collection, messages)
    assert result.success
    rows = job_rows(ledger, [base, base + 1])
    assert rows[base]["state"] == "completed"
    assert (rows[base + 1]["state"], rows[base + 1]["reason"]) == ("failed", "too_large")
    assert "MAX_TEXT_BYTES" in rows[base + 1]["error_msg"]
    [letter] = [d for d in dead_letters(s, s.kafka_dlq_topic) if d["job_id"] == base + 1]
    assert letter["error_class"] == "too_large"


def test_a_burst_of_rate_limits_is_survived(topics, ledger, unique, docs, model):
    collection = f"c-{unique}"
    paths = corpus_pages(docs, limit=6, offset=600)
    base = job_id_base()
    messages = [page_message(base + i, collection, "r.test", p) for i, p in enumerate(paths)]
    produce(topics, topics.kafka_topic, messages)
    tick(topics, ledger)
    httpx.post(f"{model}/control", json={"fail_rate": 0.3, "fail_status": 429})
    retries = 0
    with dg.instance_for_test() as instance:
        for _ in range(4):  # pages that outlast the request retries are queued for a new run
            result = index(topics, instance, collection)
            retries += metadata(result)["llm_retries"]
            if not ledger.job_states(collection).get("queued"):
                break
    assert retries > 0
    assert ledger.job_states(collection) == {"completed": 6}


def test_a_killed_run_converges_after_its_jobs_are_requeued(
        topics, ledger, unique, docs, model):
    collection = f"c-{unique}"
    paths = corpus_pages(docs, limit=16, offset=700)
    base = job_id_base()
    messages = [page_message(base + i, collection, "k.test", p) for i, p in enumerate(paths)]
    produce(topics, topics.kafka_topic, messages)
    tick(topics, ledger)
    httpx.post(f"{model}/control", json={"latency_ms": 150})
    with run_worker_inserting(topics, ledger, collection, until=frozenset({"processed"})
                              ) as worker:
        os.killpg(worker.pid, signal.SIGKILL)  # mid-insert: some documents done, others not
        worker.wait(30)
    with ledger.pool.connection() as conn:
        dead_runs = [r[0] for r in conn.execute(
            "SELECT DISTINCT run_id FROM rag_pipeline.jobs WHERE collection_id = %s "
            "AND state = 'running'", (collection,)).fetchall()]
    assert dead_runs, "the killed run left jobs running"
    httpx.post(f"{model}/control", json={"latency_ms": 0})
    ledger.requeue_jobs_of_runs(dead_runs, "run_failed", "the run was killed", max_retries=3)
    with dg.instance_for_test() as instance:
        assert index(topics, instance, collection).success
    assert ledger.job_states(collection) == {"completed": 16}
    in_lightrag = lightrag_docs(ledger, collection)
    expected = {ledger.job(m["job_id"])["doc_id"] for m in messages}
    assert set(in_lightrag) == expected and set(in_lightrag.values()) == {"processed"}
    with ledger.pool.connection() as conn:
        documents = conn.execute("SELECT count(*) FROM rag_pipeline.documents "
                                 "WHERE collection_id = %s", (collection,)).fetchone()[0]
    assert documents == 16


def test_file_paths_in_lightrag_are_the_readable_unique_ones(topics, ledger, unique, docs):
    collection = f"c-{unique}"
    [path] = corpus_pages(docs, limit=1, offset=800)
    base = job_id_base()
    messages = [build_message(job_id=base + i, collection_id=collection,
                              url=f"https://f.test/{d}/index.html", html=path.read_bytes()
                              .replace(b"</p>", f"</p><p>variant {d}</p>".encode(), 1))
                for i, d in enumerate(("x", "y"))]
    with dg.instance_for_test() as instance:
        assert stage_and_index(topics, ledger, instance, collection, messages).success
    with ledger.pool.connection() as conn:
        paths = {r[0] for r in conn.execute("SELECT file_path FROM lightrag_doc_status "
                                            "WHERE workspace = %s", (collection,))}
    assert paths == {file_path(normalize_url(m["url"])) for m in messages}
    assert json.dumps(sorted(paths)) == '["f.test|x|index.html", "f.test|y|index.html"]'


@pytest.mark.parametrize(("error", "transient"), [
    ("C[2/2]: page-x-chunk-000: transient_model_error: llm request failed 4 times", True),
    ("connection was closed in the middle of operation", True),
    # A LightRAG statement past its deadline (STATEMENT_TIMEOUT_MS): tried again, not failed.
    ("C[1/1]: QueryCanceledError: canceling statement due to statement timeout", True),
    ("C[1/1]: page-x-chunk-000: model_refused: HTTP 400", False),
])
def test_lightrag_errors_are_classified_as_transient_or_not(error, transient):
    assert is_transient_failure(error) is transient


def test_a_step_that_fails_transiently_is_retried_by_its_retry_policy_and_keeps_its_jobs(
        topics, ledger, unique, docs, monkeypatch):
    """The collection's writer lock is held elsewhere when the step starts: the step fails
    as retryable (CollectionBusy), Dagster retries it in the same run (RetryPolicy), and
    the retry takes the jobs the first attempt had claimed; each page ends once."""
    import threading

    import psycopg

    from rag_pipeline.assets import indexing as indexing_assets_module

    collection = f"c-{unique}"
    monkeypatch.setattr(indexing_assets_module, "LOCK_WAIT_SECONDS", 1.0)
    messages = [page_message(job_id_base() + i, collection, "r.test", p)
                for i, p in enumerate(corpus_pages(docs, limit=3, offset=700))]
    produce(topics, topics.kafka_topic, messages)
    assert tick(topics, ledger).staged == 3
    holder = psycopg.connect(topics.postgres_conninfo(), **topics.postgres_kwargs(),
                             autocommit=True)
    holder.execute("SELECT pg_advisory_lock(hashtext(%s))",
                   (f"rag_pipeline:collection:{collection}",))
    job_ids = [m["job_id"] for m in messages]
    stop = threading.Event()

    def other_writer_finishes() -> None:
        # Once the step has claimed the jobs (it takes the lock right after), long enough
        # for its first attempt to give up (LOCK_WAIT_SECONDS = 1): a timer from the start
        # would race the step's own start-up (LightRAG's storages, on a cold process).
        while not stop.is_set() and not all(
                r["state"] == "running" for r in job_rows(ledger, job_ids).values()):
            time.sleep(0.1)
        stop.wait(2.5)
        holder.close()

    release = threading.Thread(target=other_writer_finishes, daemon=True)
    release.start()
    try:
        with dg.instance_for_test() as instance:
            result = index(topics, instance, collection)
            retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    finally:
        stop.set()
        release.join(10)
        holder.close()
    assert result.success
    assert retries and "is being written by another run" in str(retries[0].event_specific_data)
    rows = job_rows(ledger, [m["job_id"] for m in messages])
    assert {(r["state"], r["attempts"]) for r in rows.values()} == {("completed", 0)}
    assert len({r["run_id"] for r in rows.values()}) == 1
