"""An alias's life on the real stack (Kafka, PostgreSQL + pgvector, LightRAG, the stand-in
model): a first crawl of 60 pages, then a renewal with 10 changed, 5 removed and 5 new
pages. The renewal pays the model only for the changed and new pages, the removed ones are
gone from what the alias answers, and queries by alias during the renewal always answer
from a complete collection. A rebuild after an embedding model change answers from the old
collection until the new one, with vectors of the new dimension, is done."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
from psycopg import sql

from rag_pipeline.identity import doc_id, normalize_url
from rag_pipeline.indexing.cleaning import clean_html
from rag_pipeline.indexing.renewal import plan_rebuild
from rag_pipeline.knowledge.tables import workspace_rows
from rag_pipeline.knowledge.workspaces import LightRAGOptions, WorkspacePool, shared_pool
from rag_pipeline.local.corpus import pages as corpus_pages
from rag_pipeline.local.corpus import postgres_docs
from rag_pipeline.local.devservers.llm_answers import extraction_key
from rag_pipeline.local.publishing import build_message, completion_message
from rag_pipeline.reconciliation import alias_table, inspection_lines
from tests.helpers import ROOT, index, job_id_base, produce, tick

HOST = "www.postgresql.org"


def page(job_id: int, collection: str, alias: str, path: Path, html: bytes | None = None
         ) -> dict:
    return build_message(job_id=job_id, collection_id=collection, alias=alias,
                         url=f"https://{HOST}/docs/15/{path.name}", request_id=job_id // 1000,
                         html=html if html is not None else path.read_bytes())


def changed(path: Path, n: int) -> bytes:
    """The page revised in its main text (its first paragraph: the cleaner keeps it)."""
    return path.read_bytes().replace(
        b"</p>", f" Revised for the renewal: note {n} on Maintenance Windows.</p>".encode(), 1)


def doc_of(alias: str, path: Path) -> str:
    return doc_id(alias, normalize_url(f"https://{HOST}/docs/15/{path.name}"))


def kept_rows(rows: dict[str, int]) -> dict[str, int]:
    """A workspace's rows per table, as what it holds (tables made since, where it has none,
    and LightRAG's LLM cache, where queries may leave answers, left out)."""
    return {t: n for t, n in rows.items() if n and t != "lightrag_llm_cache"}


def retrieve(pool: WorkspacePool, collection: str, question: str) -> list[dict]:
    from lightrag import QueryParam

    async def ask() -> list[dict]:
        rag = await pool.workspace(collection)
        data = await rag.aquery_data(question, param=QueryParam(mode="naive", top_k=5,
                                                                enable_rerank=False))
        return (data.get("data") or {}).get("chunks") or []

    return pool.run(ask(), timeout=120)


def pool_for(settings) -> WorkspacePool:
    """The process's LightRAG pool (LightRAG shares its PostgreSQL pool per process: the
    in-process runs and the queries go through one loop), asked for at each use."""
    return shared_pool(LightRAGOptions.from_settings(settings))


def passage(path: Path) -> str:
    """A question a page surely answers: the start of its own text."""
    return " ".join(clean_html(path.read_text(errors="replace")).text.split()[:40])


def test_a_renewal_pays_only_for_what_changed_and_its_alias_always_answers(
        topics, ledger, model, unique):
    alias, first, second = f"pg-{unique}", f"first-{unique}", f"second-{unique}"
    paths = corpus_pages(postgres_docs(), limit=65, offset=300)
    kept, new = paths[:60], paths[60:]
    unchanged, revised, removed = kept[:45], kept[45:55], kept[55:]
    base = job_id_base()

    # The first crawl: 60 pages, then the crawler says it is complete.
    produce(topics, topics.kafka_topic, [
        *(page(base + i, first, alias, p) for i, p in enumerate(kept)),
        completion_message(collection_id=first, request_id=1, pages=60, alias=alias)])
    tick(topics, ledger)
    with dg.instance_for_test() as instance:
        result = index(topics, instance, first)
    assert result.success
    assert ledger.alias_collection(alias) == first
    with ledger.pool.connection() as conn:
        first_rows = workspace_rows(conn, first)
    assert first_rows["lightrag_doc_status"] == 60

    # The renewal: 45 unchanged, 10 changed, 5 gone, 5 new, under a new collection.
    base2 = base + 500
    messages = [page(base2 + i, second, alias, p) for i, p in enumerate(unchanged)]
    messages += [page(base2 + 100 + i, second, alias, p, changed(p, i))
                 for i, p in enumerate(revised)]
    messages += [page(base2 + 200 + i, second, alias, p) for i, p in enumerate(new)]
    produce(topics, topics.kafka_topic, [*messages, completion_message(
        collection_id=second, request_id=2, pages=len(messages), alias=alias)])
    assert tick(topics, ledger).staged == 60
    httpx.post(f"{model}/stats/reset")

    answered: list[str] = []
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.run_collection", second], cwd=ROOT,
        env={**os.environ, "KAFKA_TOPIC": topics.kafka_topic,
             "KAFKA_DLQ_TOPIC": topics.kafka_dlq_topic})
    try:
        deadline = time.monotonic() + 600
        while worker.poll() is None and time.monotonic() < deadline:
            current = ledger.alias_collection(alias)
            chunks = retrieve(pool_for(topics), current, passage(unchanged[0]))
            # Never empty, never half built: the alias answers from a released collection.
            assert chunks, f"query {len(answered)} by alias found nothing in {current}"
            assert ledger.collection_life(current).released_at is not None
            answered.append(current)
            time.sleep(0.5)
        assert worker.wait(60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert answered and answered[0] == first

    # The alias answers from the renewed collection; the old one is left as it was.
    assert ledger.alias_collection(alias) == second
    assert [(c["collection_id"], c["cause"], c["pages_removed"])
            for c in ledger.alias_history(alias)] == [(first, "first_crawl", 0),
                                                      (second, "renewal", 5)]
    assert ledger.collection_life(second).renews == first
    assert f"  {alias} -> {second} (since " in "\n".join(inspection_lines(ledger))
    assert f"| {alias} | {second} |" in alias_table(ledger.aliases(limit=10_000))
    assert ledger.collection_life(first).superseded_at is not None
    with ledger.pool.connection() as conn:
        assert kept_rows(workspace_rows(conn, first)) == kept_rows(first_rows)
        in_second = dict(conn.execute(
            "SELECT id, status FROM lightrag_doc_status WHERE workspace = %s",
            (second,)).fetchall())
        chunks = conn.execute("SELECT content, full_doc_id FROM lightrag_doc_chunks "
                              "WHERE workspace = %s", (second,)).fetchall()
        outcomes = dict(conn.execute(
            "SELECT outcome, count(*) FROM rag_pipeline.jobs WHERE collection_id = %s "
            "GROUP BY outcome", (second,)).fetchall())
    assert set(in_second.values()) == {"processed"}
    assert set(in_second) == {doc_of(alias, p) for p in [*unchanged, *revised, *new]}
    assert not {doc_of(alias, p) for p in removed} & {d for _, d in chunks}
    assert outcomes == {"unchanged": 45, "replaced": 10, "inserted": 5}

    # The model was asked about the changed and new pages only.
    paid = {doc_of(alias, p) for p in [*revised, *new]}
    chunk_docs = {extraction_key(content): doc for content, doc in chunks}
    extracted = httpx.get(f"{model}/stats/extractions", params={"all": "1"}).json()
    assert extracted, "the changed and new pages were extracted"
    assert {chunk_docs.get(key, "not a chunk of the renewal") for key in extracted} <= paid

    # What the alias answers no longer holds the removed pages.
    for path in removed:
        found = retrieve(pool_for(topics), second, passage(path))
        assert not {c.get("file_path") for c in found} & {
            f"{HOST}|docs|15|{p.name}" for p in removed}


def test_a_rebuild_after_an_embedding_model_change_moves_the_alias_once_done(
        topics, ledger, unique):
    alias, first = f"rb-{unique}", f"rb-first-{unique}"
    paths = corpus_pages(postgres_docs(), limit=8, offset=400)
    base = job_id_base()
    produce(topics, topics.kafka_topic, [
        *(page(base + i, first, alias, p) for i, p in enumerate(paths)),
        completion_message(collection_id=first, request_id=1, pages=8, alias=alias)])
    tick(topics, ledger)
    with dg.instance_for_test() as instance:
        assert index(topics, instance, first).success
    assert ledger.alias_collection(alias) == first
    with ledger.pool.connection() as conn:
        before = workspace_rows(conn, first)

    # The embedding model changes (768 dimensions): the alias is rebuilt.
    plan = plan_rebuild(ledger, alias)
    assert (plan.rebuild_of, plan.pages, plan.pruned_urls) == (first, 8, [])
    answered = 0
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.run_collection", plan.collection_id], cwd=ROOT,
        env={**os.environ, "KAFKA_TOPIC": topics.kafka_topic, "EMBEDDING_DIM": "768",
             "KAFKA_DLQ_TOPIC": topics.kafka_dlq_topic})
    try:
        while worker.poll() is None:
            if ledger.alias_collection(alias) == first:  # it answers until the rebuild is done
                assert retrieve(pool_for(topics), first, passage(paths[0])), "empty answer"
                answered += 1
            time.sleep(0.5)
        assert worker.wait(60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert answered > 0

    new = plan.collection_id
    assert ledger.alias_collection(alias) == new
    assert ledger.alias_history(alias)[-1]["cause"] == "rebuild"
    new_settings = topics.model_copy(update={"embedding_dim": 768})
    assert retrieve(pool_for(new_settings), new, passage(paths[0]))
    model = re.sub(r"[^a-zA-Z0-9_]", "_", topics.openai_embedding_model.lower())
    with ledger.pool.connection() as conn:
        dims = conn.execute(
            sql.SQL("SELECT DISTINCT vector_dims(content_vector) FROM {} WHERE workspace = %s")
            .format(sql.Identifier(f"lightrag_vdb_chunks_{model}_768d")), (new,)).fetchall()
        assert dims == [(768,)]
        assert conn.execute("SELECT DISTINCT embedding_dim FROM rag_pipeline.documents "
                            "WHERE collection_id = %s", (new,)).fetchall() == [(768,)]
        # Nothing reported to the Go API for the rebuild's own jobs; the old workspace as it
        # was (it is retired later, not here).
        assert conn.execute("SELECT count(*) FROM rag_pipeline.outbox o JOIN "
                            "rag_pipeline.jobs j USING (job_id) WHERE j.collection_id = %s",
                            (new,)).fetchone()[0] == 0
        assert kept_rows(workspace_rows(conn, first)) == kept_rows(before)
