"""The fault scenarios' accounting sees what deterministic doc ids hide: a page whose model
work was paid twice (the stand-in model records answered extractions per chunk text), told
apart from an answer lost in flight (its asker gone, or a fault striking), and a status the
Go API accepted twice under one idempotency key. Real stack, one small
collection indexed in this process."""

from __future__ import annotations

import time

import dagster as dg
import httpx
import pytest
from lightrag.prompt import PROMPTS

from bench.fault_accounting import Repeats, repeats
from bench.harness import Model
from rag_pipeline.local.corpus import pages as corpus_pages
from rag_pipeline.local.corpus import postgres_docs
from rag_pipeline.local.devservers.llm_answers import extraction_input, extraction_key
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

    def counted(struck: list[tuple[float, float]] | None = None) -> Repeats:
        return repeats(ledger, [collection], stand_in.repeated_extractions(), job_ids,
                       topics.go_backend_url, struck)

    assert counted() == Repeats(processed_twice=0, repaid_extractions=0, duplicate_patches=0)

    with ledger.pool.connection() as conn:
        first, second = (row[0] for row in conn.execute(
            "SELECT content FROM lightrag_doc_chunks WHERE workspace = %s ORDER BY id LIMIT 2",
            (collection,)))

    def extract(content: str, timeout: float) -> httpx.Response:
        return httpx.post(f"{model}/v1/chat/completions", timeout=timeout, json={
            "model": "m", "messages": [
                {"role": "system", "content": EXTRACTION_SYSTEM},
                {"role": "user", "content": f"---Input Text---\n```\n{content}\n```"}]})

    # Asked again by a client that gave up before the answer (as a killed or timed-out
    # process does): paid, but no live process got it, so it is lost in flight.
    stand_in.set(latency_ms=1500)
    try:
        with pytest.raises(httpx.ReadTimeout):
            extract(first, timeout=0.3)
        time.sleep(2.5)  # the model finishes its answer to nobody
    finally:
        stand_in.set(latency_ms=0)
    assert counted() == Repeats(processed_twice=0, repaid_extractions=1, duplicate_patches=0,
                                lost_in_flight=1)

    # A second pass that got its answer, as a zombie run or a lost cache would make: the
    # page was processed twice, unless a fault struck while that answer was in flight.
    asked = time.time()
    assert extract(second, timeout=30).status_code == 200
    answered = time.time()
    assert counted() == Repeats(processed_twice=1, repaid_extractions=2, duplicate_patches=0,
                                lost_in_flight=1)
    assert counted(struck=[(asked, answered)]) == Repeats(
        processed_twice=0, repaid_extractions=2, duplicate_patches=0, lost_in_flight=2)

    # The same status accepted twice under one key (a delivery whose answer was lost).
    for _ in range(2):
        httpx.patch(f"{topics.go_backend_url}/api/v1/indexing/jobs/{base}/status",
                    json={"status": "completed"}, headers={"Idempotency-Key": f"t-{unique}"},
                    timeout=30).raise_for_status()
    assert counted().duplicate_patches == 1


def test_a_chunk_with_code_fences_is_named_by_all_of_its_text():
    """LightRAG fences the chunk with ``` in its extraction prompt; a chunk with code blocks
    has fences of its own. Named by the text before its first fence, two chunks that start
    alike would be one and the accounting could not find either among LightRAG's chunks."""
    chunk = "Joins\n```sql\nSELECT * FROM weather JOIN cities ON city = name;\n```\nThe rest."
    alike = "Joins\n```sql\nSELECT 1;\n```\nAnother page."
    prompt = PROMPTS["entity_extraction_user_prompt"]
    variables = {"max_total_records": 40, "max_entity_records": 20, "completion_delimiter":
                 "<|COMPLETE|>", "language": "English", "heading_context_block": ""}
    named = [extraction_key(extraction_input(prompt.format(input_text=text, **variables)))
             for text in (chunk, alike)]
    assert named == [extraction_key(chunk), extraction_key(alike)]
