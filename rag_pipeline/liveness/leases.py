"""A run's lease: the heartbeats that prove it is alive while a step works (the run side of
liveness; the check that declares runs dead is `liveness.check`).

A working run holds a `RunLease`: it beats every HEARTBEAT_SECONDS; a beat is refused once
the run has been declared dead, and a run that could not beat for most of the timeout stops
itself, so that it is gone before anyone declares it dead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from rag_pipeline.ledger import JobLedger, RunFenced
from rag_pipeline.ledger.connection import process_name
from rag_pipeline.observability.events import event_line

log = logging.getLogger(__name__)

# A working run beats this often. RUN_HEARTBEAT_TIMEOUT_SECONDS (60 s by default) is twelve
# missed beats: long enough for a PostgreSQL restart or a stalled network to pass without a
# false alarm, short enough that a collection is taken over within about two minutes
# (timeout + one check interval + the next run's start).
HEARTBEAT_SECONDS = 5.0
# A run that could not beat for this share of the timeout stops itself (before it is
# declared dead, so that a cut-off run never writes after its jobs were given away).
SELF_STOP_SHARE = 0.75
# Exit status of a run worker that stopped itself because it lost its lease.
LEASE_LOST_EXIT_STATUS = 70


class RunDeclaredDead(RunFenced):
    """This run was declared dead (or lost its lease): it must not write anything more."""


def exit_process(detail: str) -> None:
    """What a run worker does when it loses its lease: stop at once, writing nothing more."""
    log.error(event_line("run_lease_lost", detail=detail, process=process_name()))
    logging.shutdown()
    os._exit(LEASE_LOST_EXIT_STATUS)


class RunLease:
    """A run's hold on its jobs and its collection, kept by heartbeats while it works.

    Use as a context manager around a step's work; `check()` raises RunDeclaredDead once
    the lease is lost (call it before every write that LightRAG would keep). `check()` is also
    the run's sign of progress: with `progress_timeout_seconds`, a run whose working thread
    has not called it for that long stops beating (liveness takes over: a run that beats must
    be a run that works), and exits once it could have been declared dead.
    """

    def __init__(self, ledger: JobLedger, run_id: str, collection_id: str,
                 timeout_seconds: float, on_lost: Callable[[str], None] = exit_process,
                 beat_seconds: float = HEARTBEAT_SECONDS, process: str | None = None,
                 progress_timeout_seconds: float | None = None) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.collection_id = collection_id
        self.timeout_seconds = timeout_seconds
        self.on_lost = on_lost
        self.beat_seconds = beat_seconds
        self.process = process or process_name()  # whose sessions go when declared dead
        self.lost_detail: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_beat = time.monotonic()
        self.progress_timeout_seconds = progress_timeout_seconds
        self._progress_at = time.monotonic()
        self._said_stopped = False

    def __enter__(self) -> RunLease:
        if not self.ledger.heartbeat(self.run_id, self.collection_id, self.process):
            raise RunDeclaredDead(self._dead_message())
        self._last_beat = time.monotonic()
        self._thread = threading.Thread(target=self._beat, name="rag-pipeline-lease",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def check(self) -> None:
        self._progress_at = time.monotonic()
        if self.lost_detail is not None:
            raise RunDeclaredDead(self.lost_detail)

    def _dead_message(self) -> str:
        detail = self.ledger.declared_dead(self.run_id) or "declared dead"
        return f"run {self.run_id} was declared dead ({detail}); it stops writing"

    def _beat(self) -> None:
        while not self._stop.wait(self.beat_seconds):
            if not self._progressing():  # no beat: liveness takes the run over
                if self.lost_detail is not None:
                    return
                continue
            try:
                alive = self.ledger.heartbeat(self.run_id, self.collection_id, self.process)
            except Exception as exc:
                silent = time.monotonic() - self._last_beat
                if silent > SELF_STOP_SHARE * self.timeout_seconds:
                    self._lose(f"no heartbeat reached PostgreSQL for {silent:.0f} s "
                               f"({type(exc).__name__}); the run stops before it is declared "
                               "dead")
                    return
                continue
            if not alive:
                self._lose(self._dead_message())
                return
            self._last_beat = time.monotonic()

    def _progressing(self) -> bool:
        """Whether the working thread called `check()` lately (always, without a timeout).
        Once it could have been declared dead for not progressing, the run is lost."""
        if self.progress_timeout_seconds is None:
            return True
        idle = time.monotonic() - self._progress_at
        if idle <= self.progress_timeout_seconds:
            self._said_stopped = False
            return True
        if idle > self.progress_timeout_seconds + self.timeout_seconds:
            self._lose(f"the run made no progress for {idle:.0f} s: it stopped beating and "
                       "stops now (its jobs went to a new run)")
        elif not self._said_stopped:
            self._said_stopped = True
            log.warning(event_line("run_stopped_progressing", run_id=self.run_id,
                                   collection_id=self.collection_id, seconds=round(idle)))
        return False

    def _lose(self, detail: str) -> None:
        self.lost_detail = detail
        self.on_lost(detail)
