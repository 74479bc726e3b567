"""State counts (schema migration 10): jobs and statuses per state without reading the history,
always equal to counting the rows; open crawl requests found from the jobs in flight."""

from __future__ import annotations

import dagster as dg

from rag_pipeline.dagster_runs import KnownPartitions
from rag_pipeline.ledger import JobLedger, JobOutcome
from rag_pipeline.reconciliation import inspection_lines
from rag_pipeline.vocabulary import JobState
from tests.helpers import job_id_base, page_messages, produce, tick


def counted(ledger: JobLedger, collection: str | None = None) -> dict[str, int]:
    """The rows themselves, counted."""
    with ledger.pool.connection() as conn:
        rows = conn.execute(
            "SELECT state, count(*) FROM rag_pipeline.jobs "
            "WHERE %(c)s::text IS NULL OR collection_id = %(c)s GROUP BY state",
            {"c": collection}).fetchall()
    return dict(rows)


def outbox_counted(ledger: JobLedger) -> dict[str, int]:
    with ledger.pool.connection() as conn:
        return dict(conn.execute("SELECT state, count(*) FROM rag_pipeline.outbox "
                                 "GROUP BY state").fetchall())


def test_state_counts_follow_every_change_of_state(topics, ledger, unique):
    collection = f"c-{unique}"
    produce(topics, topics.kafka_topic, page_messages(collection, job_id_base(), 6))
    assert tick(topics, ledger).staged == 6
    assert ledger.job_states(collection) == {"queued": 6} == counted(ledger, collection)

    jobs = ledger.claim_jobs(collection, f"run-{unique}", [], 4)
    done = [JobOutcome(job_id=j.job_id, request_id=j.request_id, state=state,
                       outcome="inserted" if state == JobState.COMPLETED else None,
                       reason=None if state == JobState.COMPLETED else "bad_gzip",
                       error_msg=None if state == JobState.COMPLETED else "bad_gzip: x",
                       collection_id=collection)
            for j, state in zip(jobs, [JobState.COMPLETED, JobState.COMPLETED, JobState.FAILED,
                                       JobState.QUEUED], strict=True)]
    ledger.finish_jobs(collection, done, max_retries=3, owner=f"run-{unique}")
    expected = {"queued": 3, "completed": 2, "failed": 1}
    assert ledger.job_states(collection) == expected == counted(ledger, collection)
    # Overall and for the outbox too, before and after the deltas are folded.
    assert ledger.job_states() == counted(ledger)
    assert ledger.outbox_counts() == outbox_counted(ledger)
    ledger.fold_state_counts()
    assert ledger.job_states(collection) == expected
    assert ledger.job_states() == counted(ledger)
    assert ledger.outbox_counts() == outbox_counted(ledger)
    with ledger.pool.connection() as conn:
        left = conn.execute("SELECT count(*) FROM rag_pipeline.state_count_deltas").fetchone()[0]
    assert left == 0, "folding empties the deltas"

    # An update that leaves the state as it is adds no delta.
    with ledger.transaction() as conn:
        conn.execute("UPDATE rag_pipeline.jobs SET title = 't' WHERE job_id = %s",
                     (jobs[0].job_id,))
    with ledger.pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM rag_pipeline.state_count_deltas "
                            "WHERE scope = %s", (collection,)).fetchone()[0] == 0


def test_inspect_lists_open_requests_only(topics, ledger, unique):
    collection = f"c-{unique}"
    messages = page_messages(collection, job_id_base(), 2)
    produce(topics, topics.kafka_topic, messages)
    tick(topics, ledger)
    request_id = messages[0]["request_id"]
    assert request_id in {s.request_id for s in ledger.request_summaries()}
    text = "\n".join(inspection_lines(ledger, collection))
    assert f"jobs of {collection}: 2 queued" in text
    jobs = ledger.claim_jobs(collection, f"run-{unique}", [], 2)
    ledger.finish_jobs(collection, [
        JobOutcome(job_id=j.job_id, request_id=j.request_id, state=JobState.COMPLETED,
                   outcome="inserted", collection_id=collection) for j in jobs],
        max_retries=3, owner=f"run-{unique}")
    with ledger.pool.connection() as conn:
        still_open = conn.execute("SELECT count(*) FROM rag_pipeline.jobs WHERE request_id = %s "
                                  "AND state IN ('queued', 'running')",
                                  (request_id,)).fetchone()[0]
    assert (request_id in {s.request_id for s in ledger.request_summaries()}) == bool(still_open)


def test_known_partitions_ask_dagster_once_per_key():
    known = KnownPartitions(ttl_seconds=600)
    with dg.instance_for_test() as instance:
        assert known.missing(instance, ["a", "b"]) == ["a", "b"]
        instance.add_dynamic_partitions("collections", ["a"])
        assert known.missing(instance, ["a", "b"]) == ["b"]
        instance.delete_dynamic_partition("collections", "a")
        assert known.missing(instance, ["a"]) == [], "a key seen is not asked again ..."
        known.ttl_seconds = 0
        assert known.missing(instance, ["a"]) == ["a"], "... until its time is up"
