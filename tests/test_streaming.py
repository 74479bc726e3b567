"""Streaming runs (design invariant 10): pages flow one by one, a run takes the pages staged
while it runs, lingers, yields to other collections, and a page that failed for good costs
no further model calls.

Real Kafka, PostgreSQL + pgvector, LightRAG and the stand-in model over HTTP; the run is
`indexing.CollectionRun` called directly, or the Dagster asset in process."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import dagster as dg
import httpx
import psycopg
import pytest

from rag_pipeline.definitions import build_definitions
from rag_pipeline.indexing import pages as pages_module
from rag_pipeline.indexing.pages import PageLimits
from rag_pipeline.indexing.run import CollectionRun, StreamLimits
from rag_pipeline.indexing.stalls import RunStalled, StallWatch
from rag_pipeline.knowledge.workspaces import LightRAGOptions, shared_pool
from rag_pipeline.local.corpus import pages as corpus_pages
from rag_pipeline.local.corpus import postgres_docs
from tests.helpers import index, job_id_base, page_message, produce, tick


@pytest.fixture(scope="module")
def docs() -> Path:
    return postgres_docs()


def stage(s, ledger, collection: str, paths: list[Path], base: int, host: str = "s.test",
          extra: list[dict] | None = None) -> list[int]:
    messages = [page_message(base + i, collection, host, p) for i, p in enumerate(paths)]
    messages += extra or []
    produce(s, s.kafka_topic, messages)
    assert tick(s, ledger).staged == len(messages)
    return [m["job_id"] for m in messages]


def page_limits(s) -> PageLimits:
    return PageLimits(s.max_payload_bytes, s.max_text_bytes, s.text_source)


def limits(window: int, **overrides) -> StreamLimits:
    values = {"window": window, "idle_seconds": 0.0, "max_seconds": 3600.0,
              "stall_seconds": 300.0, "max_retries": 3, **overrides}
    return StreamLimits(**values)


def rows(ledger, job_ids: list[int]) -> dict[int, dict]:
    return {r["job_id"]: r for r in ledger.jobs(job_ids)}


def finished_at(ledger, job_ids: list[int]) -> dict[int, float]:
    with ledger.pool.connection() as conn:
        found = conn.execute("SELECT job_id, extract(epoch FROM finished_at) FROM "
                             "rag_pipeline.jobs WHERE job_id = ANY(%s)", (job_ids,)).fetchall()
    return {job_id: float(at) for job_id, at in found if at is not None}


def run_ids(ledger, job_ids: list[int]) -> set[str]:
    with ledger.pool.connection() as conn:
        found = conn.execute("SELECT DISTINCT run_id FROM rag_pipeline.jobs "
                             "WHERE job_id = ANY(%s)", (job_ids,)).fetchall()
    return {r[0] for r in found}


def test_a_slow_page_holds_up_no_other_page(topics, ledger, unique, docs, model):
    """No batch barrier: while one page waits for a slow model, the others are inserted and
    recorded one after another (a batch would record them all after the slow one)."""
    collection = f"c-{unique}"
    slow = f"SLOW-PAGE-{unique}"
    httpx.post(f"{model}/control", json={"slow_text": slow, "slow_ms": 4000})
    base = job_id_base()
    slow_page = page_message(base + 99, collection, "s.test", Path("slow.html"),
                             html=f"<html><body><p>{slow}: a page the model reads slowly, "
                                  "with enough words to be indexed.</p></body></html>".encode())
    job_ids = stage(topics, ledger, collection, corpus_pages(docs, limit=10, offset=520), base,
                    extra=[slow_page])
    pool = shared_pool(LightRAGOptions.from_settings(topics.model_copy(update={"max_workers": 2})))
    report = CollectionRun(ledger, pool, collection, f"run-{unique}", page_limits(topics),
                           limits(window=4)).run([f"run-{unique}"])
    assert report.inserted == len(job_ids)
    done = finished_at(ledger, job_ids)
    before_slow = [j for j in job_ids if j != base + 99 and done[j] < done[base + 99]]
    assert len(before_slow) >= 8, f"only {len(before_slow)} of 10 pages settled before the slow one"


def test_a_run_past_its_time_yields_to_waiting_collections_and_a_new_run_takes_the_rest(
        topics, ledger, unique, docs, model):
    collection = f"c-{unique}"
    httpx.post(f"{model}/control", json={"latency_ms": 200})
    job_ids = stage(topics, ledger, collection, corpus_pages(docs, limit=16, offset=540),
                    job_id_base())
    pool = shared_pool(LightRAGOptions.from_settings(topics.model_copy(update={"max_workers": 2})))
    first = CollectionRun(ledger, pool, collection, f"run-a-{unique}", page_limits(topics),
                          limits(window=4, max_seconds=0.0))
    first.hooks.others_waiting = lambda: True
    report = first.run([f"run-a-{unique}"])
    assert report.yielded
    states = [r["state"] for r in rows(ledger, job_ids).values()]
    assert states.count("running") == 0
    left = [j for j, r in rows(ledger, job_ids).items() if r["state"] == "queued"]
    assert len(left) >= 8, "the run took its whole collection instead of yielding"
    assert all(r["attempts"] == 0 for j, r in rows(ledger, job_ids).items() if j in left)

    second = CollectionRun(ledger, pool, collection, f"run-b-{unique}", page_limits(topics),
                           limits(window=4))
    assert second.run([f"run-b-{unique}"]).inserted == len(left)
    assert {r["state"] for r in rows(ledger, job_ids).values()} == {"completed"}


def test_a_run_takes_pages_staged_while_it_runs_and_the_sensor_requests_no_other(
        topics, ledger, unique, docs, model, monkeypatch):
    """One run for a trickle of pages: it lingers (RUN_IDLE_SECONDS), takes the pages the
    sensor stages meanwhile, and the sensor requests no run for its collection until it has
    ended. Each payload is decoded once."""
    collection = f"c-{unique}"
    s = topics.model_copy(update={"run_idle_seconds": 8.0})
    decoded: list[int] = []
    real_decode = pages_module.decode_html

    def counting_decode(*args, **kwargs):
        decoded.append(1)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(pages_module, "decode_html", counting_decode)
    paths = corpus_pages(docs, limit=5, offset=560)
    base = job_id_base()
    first = stage(s, ledger, collection, paths[:3], base)
    defs = build_definitions(s)
    with dg.instance_for_test() as instance:
        # Resolved inside the instance's context: Dagster looks for the current instance.
        sensor = defs.resolve_sensor_def("indexing_jobs_sensor")
        outcome: dict[str, dg.ExecuteInProcessResult] = {}
        worker = threading.Thread(target=lambda: outcome.update(run=index(s, instance,
                                                                          collection)))
        worker.start()
        deadline = time.monotonic() + 120
        while {r["state"] for r in rows(ledger, first).values()} != {"completed"}:
            assert time.monotonic() < deadline and worker.is_alive()
            time.sleep(0.2)
        later = [page_message(base + 10 + i, collection, "s.test", p)
                 for i, p in enumerate(paths[3:])]
        produce(s, s.kafka_topic, later)
        with dg.build_sensor_context(instance=instance, definitions=defs,
                                     resources=defs.resources) as context:
            result = sensor(context)
        assert '"staged": 2' in result.cursor
        assert collection not in {r.partition_key for r in result.run_requests}
        worker.join(180)
        assert not worker.is_alive() and outcome["run"].success
        all_jobs = first + [m["job_id"] for m in later]
        assert {r["state"] for r in rows(ledger, all_jobs).values()} == {"completed"}
        assert len(run_ids(ledger, all_jobs)) == 1
        assert len(decoded) == len(all_jobs)
        # The run has ended: a new page gets a run of its own.
        produce(s, s.kafka_topic, [page_message(base + 20, collection, "s.test", paths[0],
                                                name="again.html")])
        with dg.build_sensor_context(instance=instance, definitions=defs,
                                     resources=defs.resources) as context:
            again = sensor(context)
        assert collection in {r.partition_key for r in again.run_requests}


def test_a_page_that_failed_for_good_costs_no_further_model_calls(
        topics, ledger, unique, docs, model):
    """LightRAG 1.5.7 leaves FAILED documents alone when other pages of their workspace are
    inserted later (it does not reset them to PENDING), so a refused page is asked once."""
    collection = f"c-{unique}"
    poison = f"POISON-PILL-{unique}"
    httpx.post(f"{model}/control", json={"refuse_text": poison})
    base = job_id_base()
    refused = page_message(base + 50, collection, "f.test", Path("poison.html"),
                           html=f"<html><body><p>{poison} in a page that the model refuses "
                                "to read, with enough words.</p></body></html>".encode())
    paths = corpus_pages(docs, limit=4, offset=580)
    stage(topics, ledger, collection, paths[:2], base, extra=[refused])
    with dg.instance_for_test() as instance:
        assert index(topics, instance, collection).success
        assert rows(ledger, [base + 50])[base + 50]["state"] == "failed"
        asked = httpx.get(f"{model}/stats").json()["refused"]
        assert asked >= 1
        later = stage(topics, ledger, collection, paths[2:], base + 10)
        assert index(topics, instance, collection).success
    assert {r["state"] for r in rows(ledger, later).values()} == {"completed"}
    assert httpx.get(f"{model}/stats").json()["refused"] == asked


def test_a_run_in_flight_without_progress_is_declared_stalled():
    watch = StallWatch(1.0, lambda: 0)
    watch.observe(busy=True)
    time.sleep(1.2)
    watch.observe(busy=False)  # nothing in flight: waiting for pages is not a stall
    watch.observe(busy=True)
    time.sleep(1.2)
    with pytest.raises(RunStalled, match="no progress for 1 s"):
        watch.observe(busy=True)


def test_a_run_whose_model_keeps_answering_is_not_stalled():
    ticks = iter(range(1000))
    watch = StallWatch(1.0, lambda: next(ticks))
    for _ in range(4):
        time.sleep(0.4)
        watch.observe(busy=True)


def test_a_lightrag_call_that_never_returns_ends_the_run_as_stalled(topics, ledger, unique,
                                                                     docs, model):
    """Invariant 11: a statement of LightRAG's that blocks (here on a lock held on its
    doc-status table, as a backend that stopped answering would) does not hold the run and
    its collection for ever: the stall rule ends the run, and a new run finishes the pages."""
    collection = f"c-{unique}"
    base = job_id_base()
    first = stage(topics, ledger, collection, corpus_pages(docs, limit=2, offset=600), base)
    pool = shared_pool(LightRAGOptions.from_settings(topics.model_copy(update={"max_workers": 2})))
    CollectionRun(ledger, pool, collection, f"run-a-{unique}", page_limits(topics),
                  limits(window=4)).run([f"run-a-{unique}"])
    later = stage(topics, ledger, collection, corpus_pages(docs, limit=2, offset=610), base + 10)
    stuck = CollectionRun(ledger, pool, collection, f"run-b-{unique}", page_limits(topics),
                          limits(window=4, stall_seconds=3.0))
    outcome: list[BaseException | None] = []

    def run_stuck() -> None:
        try:
            stuck.run([f"run-b-{unique}"])
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    with psycopg.connect(topics.postgres_conninfo(), **topics.postgres_kwargs()) as blocker:
        blocker.execute("LOCK TABLE lightrag_doc_status IN ACCESS EXCLUSIVE MODE")
        worker = threading.Thread(target=run_stuck, daemon=True)
        worker.start()
        worker.join(timeout=120)
        assert not worker.is_alive(), "the run waited on LightRAG's blocked call for 120 s"
        blocker.rollback()
    assert isinstance(outcome[0], RunStalled), outcome
    ledger.requeue_jobs_of_runs([f"run-b-{unique}"], "run_failed", "stalled", max_retries=3)
    CollectionRun(ledger, pool, collection, f"run-c-{unique}", page_limits(topics),
                  limits(window=4)).run([f"run-c-{unique}"])
    assert {r["state"] for r in rows(ledger, first + later).values()} == {"completed"}
