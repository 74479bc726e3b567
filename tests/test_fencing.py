"""Invariant 11: every write a run makes is fenced. Once a run is declared dead the ledger
refuses its claims, its page texts, its taking of new jobs and its outcomes, and its late
success leaves it `declared dead`; a declaration gives the run's jobs back in the same
transaction, waits for a write of the run already in progress, and is never half done: what
a half-ended run leaves (jobs still running, a Dagster run not failed) is swept by the next
liveness check. Real PostgreSQL, Kafka and Dagster storage."""

from __future__ import annotations

import threading
import time

import dagster as dg
import pytest

from rag_pipeline.dagster_runs import COLLECTION_TAG
from rag_pipeline.ledger import JobOutcome, RunFenced
from rag_pipeline.ledger.connection import fence_run
from rag_pipeline.liveness.check import check_liveness
from rag_pipeline.sensors.liveness import InstanceRuns
from rag_pipeline.vocabulary import DeathCause, JobState, RunOutcome
from tests.helpers import job_id_base, page_messages, produce, tick
from tests.test_dagster_internals import noop_job


def stage(s, ledger, collection: str, count: int) -> list[int]:
    base = job_id_base()
    produce(s, s.kafka_topic, page_messages(collection, base, count))
    assert tick(s, ledger).staged == count
    return [base + i for i in range(count)]


def states(ledger, job_ids: list[int]) -> dict[int, tuple[str, int, str | None]]:
    return {r["job_id"]: (r["state"], r["attempts"], r["run_id"]) for r in ledger.jobs(job_ids)}


def test_a_run_declared_dead_writes_nothing_and_its_jobs_go_back_at_once(topics, ledger,
                                                                        unique):
    collection, run = f"f-{unique}", f"run-{unique}"
    job_ids = stage(topics, ledger, collection, 4)
    assert ledger.heartbeat(run, collection, "rag-pipeline:test:1:fence")
    claimed = ledger.claim_jobs(collection, run, [run], 2)
    assert len(claimed) == 2

    released = ledger.declare_run_dead(run, collection, "a test declared it dead",
                                       DeathCause.SILENT, max_retries=3)
    assert sorted(o.job_id for o in released) == sorted(j.job_id for j in claimed)
    assert {states(ledger, job_ids)[j.job_id][:2] for j in claimed} == {("queued", 1)}

    with pytest.raises(RunFenced, match="a test declared it dead"):
        ledger.claim_jobs(collection, run, [run], 4)
    with pytest.raises(RunFenced):
        ledger.claim_more(collection, run, 4)
    with pytest.raises(RunFenced):
        ledger.store_page_texts(run, [(claimed[0].job_id, "t", "text", "extracted", "h", {})])
    with pytest.raises(RunFenced):
        ledger.set_accepting(run, True)
    ledger.set_accepting(run, False)  # giving work away is always allowed
    late = [JobOutcome(job_id=j.job_id, request_id=j.request_id, state=JobState.COMPLETED,
                       outcome="inserted", collection_id=collection) for j in claimed]
    assert ledger.finish_jobs(collection, late, max_retries=3, owner=run) == []
    ledger.finish_run(run, collection, RunOutcome.SUCCESS)
    assert ledger.run_outcome(run) == RunOutcome.DECLARED_DEAD
    assert {s for s, _, _ in states(ledger, job_ids).values()} == {"queued"}
    # Declaring it again changes nothing.
    assert ledger.declare_run_dead(run, collection, "again", DeathCause.SILENT, 3) == []
    assert ledger.declared_dead(run) == "a test declared it dead"


def test_a_declaration_waits_for_a_write_in_progress_and_gives_its_jobs_away(topics, ledger,
                                                                            unique):
    collection, run = f"w-{unique}", f"run-{unique}"
    job_ids = stage(topics, ledger, collection, 3)
    assert ledger.heartbeat(run, collection, "rag-pipeline:test:1:inflight")
    declared: list[list[JobOutcome]] = []
    with ledger.transaction() as conn:
        fence_run(conn, run)  # a claim of the run, under way
        conn.execute("UPDATE rag_pipeline.jobs SET state = 'running', run_id = %s "
                     "WHERE job_id = ANY(%s)", (run, job_ids))
        declaring = threading.Thread(target=lambda: declared.append(ledger.declare_run_dead(
            run, collection, "declared mid-claim", DeathCause.SILENT, max_retries=3)))
        declaring.start()
        time.sleep(1.0)
        assert declaring.is_alive(), "the declaration did not wait for the run's write"
    declaring.join(timeout=30)
    assert sorted(o.job_id for o in declared[0]) == sorted(job_ids)
    assert {s for s, _, _ in states(ledger, job_ids).values()} == {"queued"}


def test_the_liveness_check_sweeps_what_a_half_ended_run_left(topics, ledger, unique):
    collection, ended = f"h-{unique}", f"ended-{unique}"
    job_ids = stage(topics, ledger, collection, 2)
    assert ledger.heartbeat(ended, collection, "rag-pipeline:test:1:ended")
    [left] = ledger.claim_jobs(collection, ended, [ended], 1)
    ledger.finish_run(ended, collection, RunOutcome.SUCCESS)  # with a job still running
    with ledger.transaction() as conn:
        conn.execute("UPDATE rag_pipeline.runs SET finished_at = now() - interval '1 minute' "
                     "WHERE run_id = %s", (ended,))
    with dg.instance_for_test() as instance:
        run = instance.create_run_for_job(job_def=noop_job, tags={COLLECTION_TAG: collection})
        assert ledger.heartbeat(run.run_id, collection, "rag-pipeline:test:1:dead")
        # Declared dead, but failing it in Dagster did not happen (the sensor died there).
        ledger.declare_run_dead(run.run_id, collection, "declared, then the check died",
                                DeathCause.SILENT, max_retries=3)
        assert (run.run_id, "declared, then the check died") in \
            ledger.dead_runs_not_failed_in_dagster()

        report = check_liveness(ledger, InstanceRuns(instance), heartbeat_timeout_seconds=60,
                                start_timeout_seconds=600, max_retries=3, emit=print)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert run.run_id not in {r for r, _ in ledger.dead_runs_not_failed_in_dagster()}
    assert [o.job_id for o in report.outcomes] == [left.job_id]
    assert states(ledger, job_ids)[left.job_id][:2] == ("queued", 1)
    assert collection in report.collections
