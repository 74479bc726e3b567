"""A collection's name and the end of its crawl, as staging records them: the alias its
pages carry (one per collection; a page naming another fails with `alias_conflict`), and
the crawler's `crawl_completed` message with its page count. Real Kafka and PostgreSQL."""

from __future__ import annotations

from rag_pipeline.ledger import PendingCollection
from rag_pipeline.local.publishing import completion_message
from rag_pipeline.reconciliation import inspection_lines
from rag_pipeline.sensors.staging import run_requests
from rag_pipeline.vocabulary import Reason
from tests.helpers import complete, dead_letters, job_id_base, page_messages, produce, tick


def test_aliases_and_crawl_completions_are_recorded_with_their_collections(
        topics, ledger, unique):
    base = job_id_base()
    named, plain, alias = f"named-{unique}", f"plain-{unique}", f"docs-{unique}"
    incomplete_before = ledger.metrics_snapshot(5).crawls_incomplete
    pages = page_messages(named, base, 5, alias=alias)
    stray = page_messages(named, base + 5, 1, alias=f"other-{unique}")  # another alias
    produce(topics, topics.kafka_topic, [
        *pages, *stray, completion_message(collection_id=named, request_id=1, pages=6,
                                           alias=alias),
        *page_messages(plain, base + 10, 2)])

    report = tick(topics, ledger)

    assert (report.staged, report.completions, report.rejected) == (7, 1, 1)
    assert report.rejected_reasons == {Reason.ALIAS_CONFLICT: 1}
    [letter] = dead_letters(topics, topics.kafka_dlq_topic)
    assert (letter["error_class"], letter["job_id"]) == ("alias_conflict", base + 5)
    assert ledger.job(base + 5)["reason"] == "alias_conflict"
    [crawl] = ledger.crawls(collection_id=named)
    assert (crawl.alias, crawl.request_id, crawl.crawl_pages, crawl.completed) == (
        alias, 1, 6, True)
    assert crawl.jobs_by_state == {"queued": 5, "failed": 1} and crawl.received == 6
    crawling = [c.collection_id for c in ledger.crawls(crawling_only=True, limit=10_000)]
    assert plain in crawling and named not in crawling
    assert ledger.collection_aliases([named, plain]) == {named: alias, plain: None}
    # Visible to people: `inspect`, the metrics (the named crawl is complete, the plain not).
    assert ledger.metrics_snapshot(5).crawls_incomplete == incomplete_before + 1
    lines = "\n".join(inspection_lines(ledger, named))
    assert f"collection {named}: alias {alias}, request 1, 6 pages received, the crawler said " \
           "it is complete with 6 pages" in lines
    assert f"| {plain} |  | 1 |" in lines.split("crawls not said complete")[1]


def test_a_completion_naming_another_alias_is_dead_lettered_and_a_redelivery_changes_nothing(
        topics, ledger, unique):
    named, alias = f"named-{unique}", f"docs-{unique}"
    produce(topics, topics.kafka_topic, page_messages(named, job_id_base(), 2, alias=alias))
    tick(topics, ledger)
    done = completion_message(collection_id=named, request_id=1, pages=2, alias=alias)
    produce(topics, topics.kafka_topic, [
        completion_message(collection_id=named, request_id=1, pages=2, alias=f"x-{unique}"),
        done])
    report = tick(topics, ledger)
    assert (report.completions, report.rejected) == (1, 1)
    [letter] = dead_letters(topics, topics.kafka_dlq_topic)
    assert (letter["error_class"], letter["job_id"]) == ("alias_conflict", None)
    [first] = ledger.crawls(collection_id=named)
    assert (first.alias, first.crawl_pages) == (alias, 2)

    produce(topics, topics.kafka_topic, [done])  # the crawler retried
    tick(topics, ledger)
    assert ledger.crawls(collection_id=named) == [first]


def test_a_crawl_is_released_once_every_page_it_announced_is_done(topics, ledger, unique):
    collection, alias, base = f"c-{unique}", f"a-{unique}", job_id_base()
    pages = page_messages(collection, base, 4, alias=alias)
    produce(topics, topics.kafka_topic, [*pages[:3], completion_message(
        collection_id=collection, request_id=1, pages=4, alias=alias)])
    tick(topics, ledger)
    complete(ledger, collection, [base, base + 1, base + 2])
    ready = lambda: [c for c, _ in ledger.ready_to_release() if c == collection]  # noqa: E731
    assert ready() == [], "a page it announced has not arrived"
    produce(topics, topics.kafka_topic, pages[3:])  # late, on another partition maybe
    tick(topics, ledger)
    assert ready() == [], "a page is still queued"
    complete(ledger, collection, [base + 3])
    assert ready() == [collection]
    # The sensor asks for a run of it (the run releases it), once per run it has had.
    [(_, runs)] = [r for r in ledger.ready_to_release() if r[0] == collection]
    [request] = run_requests([], [(collection, runs)], waiting=set())
    assert (request.partition_key, request.run_key) == (collection, f"{collection}:release:0")
    assert run_requests([PendingCollection("x", 1, 2, 1, 0)], [(collection, runs)],
                        waiting={collection})[0].partition_key == "x"
