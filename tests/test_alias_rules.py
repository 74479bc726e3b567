"""The rules of an alias that need no stack: one alias per collection, fixed by its first
message; an aliased collection's pages named in the alias's scope; a page indexed with
other models is not unchanged."""

from __future__ import annotations

from rag_pipeline.identity import doc_id
from rag_pipeline.indexing.insertion import plan_pages
from rag_pipeline.ledger import IndexedDocument, IndexModels, PageText, StagedJob
from rag_pipeline.staging_rules import split_alias_conflicts, with_alias_scope

URL = "https://docs.example.com/a.html"


def job(job_id: int, collection: str, alias: str | None) -> StagedJob:
    return StagedJob(job_id=job_id, request_id=1, project_id=1, user_id="u",
                     collection_id=collection, url=URL, normalized_url=URL,
                     doc_id=doc_id(collection, URL), title="", details={}, message=b"{}",
                     topic="t", partition=0, offset=job_id, alias=alias)


def test_the_first_message_fixes_a_collections_alias_even_when_it_names_none():
    aliases: dict[str, str | None] = {"known": "docs"}
    items = [job(1, "known", None), job(2, "known", "other"), job(3, "new", None),
             job(4, "new", "late"), job(5, "fresh", "pg"), job(6, "fresh", "pg")]
    kept, conflicting = split_alias_conflicts(aliases, items)
    assert [j.job_id for j in kept] == [1, 3, 5, 6]
    assert [j.job_id for j in conflicting] == [2, 4]
    assert aliases == {"known": "docs", "new": None, "fresh": "pg"}


def test_an_aliased_collections_pages_share_the_aliases_document_ids():
    first, second = (with_alias_scope(job(n, c, None), "pg") for n, c in ((1, "c1"), (2, "c2")))
    assert first.doc_id == second.doc_id == doc_id("pg", URL)
    assert (first.alias, second.alias) == ("pg", "pg")
    plain = job(3, "c3", None)
    assert with_alias_scope(plain, None) is plain and plain.doc_id == doc_id("c3", URL)


def test_a_page_indexed_with_other_models_is_indexed_again():
    now, before = IndexModels("gpt-4o-mini", "text-embedding-3-small", 768), IndexModels(
        "gpt-4o-mini", "text-embedding-3-small", 1536)
    page = PageText(1, 1, "d", URL, "", "text", "hash", 0)

    def planned(models: IndexModels | None) -> list[str]:
        known = {"d": IndexedDocument("d", URL, "f", "hash", models)}
        to_index, decided = plan_pages([page], known, {}, "c", now)
        return [o.outcome for o in decided] or ["index" for _ in to_index]

    assert planned(now) == ["unchanged"]
    assert planned(None) == ["unchanged"]  # indexed before models were recorded
    assert planned(before) == ["index"]
