"""A run's watch on its own progress (`StallWatch`: invariant 11, nothing hangs for ever) and
how it groups claimed pages by their size in memory (`by_bytes`: invariant 7)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from rag_pipeline.knowledge.models import ModelUsage
from rag_pipeline.ledger import RunJob


class RunStalled(Exception):
    """LightRAG made no progress for RUN_STALL_TIMEOUT_SECONDS: a run that beats but does
    nothing would block its collection for good, so it fails and its jobs go to a new run."""


def model_activity(usage: ModelUsage) -> int:
    """Anything the model client did: answers, retries, errors (a model outage is not a
    stall of the run: its retries are activity)."""
    return usage.llm_calls + usage.llm_retries + usage.llm_failures + usage.embedding_calls


class StallWatch:
    """Raises RunStalled when pages are in flight and nothing happened for `seconds`."""

    def __init__(self, seconds: float, activity: Callable[[], int]) -> None:
        self.seconds = seconds
        self.activity = activity
        self._last = activity()
        self._changed = time.monotonic()

    def progressed(self) -> None:
        self._changed = time.monotonic()

    def observe(self, busy: bool) -> None:
        now, seen = time.monotonic(), self.activity()
        if seen != self._last or not busy:
            self._last, self._changed = seen, now
        elif now - self._changed > self.seconds:
            raise RunStalled(
                f"LightRAG made no progress for {self.seconds:.0f} s (no model answer, retry "
                "or error, no page settled; RUN_STALL_TIMEOUT_SECONDS): the run stops, its "
                "jobs go to a new run")


def by_bytes(jobs: Sequence[RunJob], max_bytes: int, max_count: int) -> Iterator[list[RunJob]]:
    """Consecutive groups of at most `max_count` jobs whose messages add up to at most
    `max_bytes` (at least one job each): the payload a run holds in memory at once
    (invariant 7)."""
    group: list[RunJob] = []
    total = 0
    for job in jobs:
        if group and (total + job.message_bytes > max_bytes or len(group) >= max_count):
            yield group
            group, total = [], 0
        group.append(job)
        total += job.message_bytes
    if group:
        yield group
