"""The fault scenarios' accounting sees what deterministic doc ids hide: a page whose model
work was paid twice (the stand-in model counts answered extractions per chunk text) and a
status the Go API accepted twice under one idempotency key. Real stack, one small
collection indexed in this process."""

from __future__ import annotations

import dagster as dg
import httpx

from bench.fault_accounting import Repeats, repeats
from bench.harness import Model
from rag_pipeline.local.corpus import pages as corpus_pages
from rag_pipeline.local.corpus import postgres_docs
from tests.helpers import job_id_base, page_message
from tests.test_indexing import stage_and_index

EXTRACTION_SYSTEM = "You are a Knowledge Graph Specialist responsible for extracting entities"


def test_a_page_paid_twice_and_a_status_accepted_twice_are_counted(topics, ledger, unique,
                                                                   model):
    collection, base = f"twice-{unique}", job_id_base()
    stand_in = Model(topics)
    stand_in.reset()
    paths = corpus_pages(postgres_docs(), limit=2, offset=320)
    messages = [page_message(base + i, collection, "twice.test", p) for i, p in enumerate(paths)]
    with dg.instance_for_test() as instance:
        assert stage_and_index(topics, ledger, instance, collection, messages).success
    job_ids = {m["job_id"] for m in messages}

    def counted() -> Repeats:
        return repeats(ledger, [collection], stand_in.repeated_extractions(), job_ids,
                       topics.go_backend_url)

    assert counted() == Repeats(processed_twice=0, repaid_extractions=0, duplicate_patches=0)

    # A second pass over one chunk of one page, as a zombie run or a lost cache would make.
    with ledger.pool.connection() as conn:
        content = conn.execute("SELECT content FROM lightrag_doc_chunks WHERE workspace = %s "
                               "ORDER BY id LIMIT 1", (collection,)).fetchone()[0]
    answered = httpx.post(f"{model}/v1/chat/completions", timeout=30, json={
        "model": "m", "messages": [
            {"role": "system", "content": EXTRACTION_SYSTEM},
            {"role": "user", "content": f"---Input Text---\n```\n{content}\n```"}]})
    assert answered.status_code == 200
    # The same status accepted twice under one key (a delivery whose answer was lost).
    for _ in range(2):
        httpx.patch(f"{topics.go_backend_url}/api/v1/indexing/jobs/{base}/status",
                    json={"status": "completed"}, headers={"Idempotency-Key": f"t-{unique}"},
                    timeout=30).raise_for_status()
    assert counted() == Repeats(processed_twice=1, repaid_extractions=1, duplicate_patches=1)
