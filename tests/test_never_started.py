"""The never-started rule (`rag_pipeline/liveness/never_started.py`): which runs have been
launched, or could have been, for too long without a first heartbeat."""

from __future__ import annotations

from rag_pipeline.liveness.never_started import SeenRun, never_started

NOW = 10_000.0


def check(runs, *, in_progress=0, slots=4, unblocked=None, older_than=60.0):
    return never_started(runs, in_progress=in_progress, max_concurrent_runs=slots,
                         unblocked_since=unblocked or {}, now=NOW,
                         older_than_seconds=older_than)


def test_started_and_starting_runs_are_timed_from_their_start():
    runs = [SeenRun("old", "a", "STARTED", NOW - 61, NOW - 1),
            SeenRun("young", "b", "STARTED", NOW - 10, NOW - 100),
            SeenRun("starting", "c", "STARTING", None, NOW - 90)]
    assert check(runs, in_progress=3).candidates == [("old", "a", "STARTED"),
                                                      ("starting", "c", "STARTING")]


def test_a_queued_run_is_timed_from_when_nothing_stood_in_its_way():
    queued = SeenRun("q", "a", "QUEUED", None, NOW - 1000)
    first = check([queued])
    assert first.candidates == [] and first.unblocked_since == {"q": NOW}
    later = check([queued], unblocked={"q": NOW - 61})
    assert later.candidates == [("q", "a", "QUEUED")]


def test_a_queued_run_waiting_for_a_slot_or_its_collection_is_not_timed():
    queued = SeenRun("q", "a", "QUEUED", None, NOW - 1000)
    assert check([queued], in_progress=4, unblocked={"q": NOW - 500}).unblocked_since == {}
    running = SeenRun("r", "a", "STARTED", NOW - 5, NOW - 5)
    result = check([queued, running], in_progress=1, unblocked={"q": NOW - 500})
    assert result.candidates == [] and result.unblocked_since == {}
    assert check([queued], slots=None, unblocked={"q": NOW - 500}).candidates == []
