"""Runs in Dagster as this project sees them: the collections partitions (one per
collection_id), the tag that says which collection a run writes, the groups of run statuses
every definition asks about, a run's family, and the ledger's `RunOutcome` of a finished run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import dagster as dg

from rag_pipeline.vocabulary import RunOutcome

collections_partitions = dg.DynamicPartitionsDefinition(name="collections")

# The collection a run writes. Dagster puts this tag on every partitioned run, whoever
# launches it (the staging sensor, a backfill, a materialization from the UI), and the only
# partitions of this code location are collections: so dagster.yaml's limit of one run per
# value of this tag holds for every run that writes a collection.
COLLECTION_TAG = "dagster/partition"


class KnownPartitions:
    """Which collections have a partition already, asked of Dagster once per key and
    again after `ttl_seconds` (a partition deleted from the UI is added back): loading
    every key on each sensor tick would cost time in every collection ever crawled."""

    def __init__(self, ttl_seconds: float = 600.0) -> None:
        self.ttl_seconds = ttl_seconds
        self._seen: dict[str, float] = {}

    def missing(self, instance: dg.DagsterInstance, keys: Iterable[str]) -> list[str]:
        now = time.monotonic()
        missing = []
        for key in sorted(set(keys)):
            seen = self._seen.get(key)
            if seen is not None and now - seen < self.ttl_seconds:
                continue
            if instance.has_dynamic_partition(collections_partitions.name, key):
                self._seen[key] = now
            else:
                missing.append(key)
        return missing


S = dg.DagsterRunStatus
# Created but not launched yet: a new run for the collection would only wait behind it.
WAITING_STATUSES = (S.QUEUED, S.NOT_STARTED, S.STARTING)
# Launched and working (STARTING: its worker is on its way).
IN_PROGRESS_STATUSES = (S.STARTING, S.STARTED)
# Active for reconciliation: anything that will still run the collection's jobs.
ACTIVE_STATUSES = (S.QUEUED, S.NOT_STARTED, S.STARTING, S.STARTED)
ENDED_STATUSES = (S.SUCCESS, S.FAILURE, S.CANCELED)

# The ledger's run outcome of a run Dagster says has ended.
OUTCOME_OF_STATUS = {S.SUCCESS: RunOutcome.SUCCESS, S.FAILURE: RunOutcome.FAILURE,
                     S.CANCELED: RunOutcome.CANCELED}


def run_family(run: dg.DagsterRun) -> list[str]:
    """The run and the runs it re-executes (parent, root): a re-execution adopts their jobs."""
    return [r for r in (run.run_id, run.parent_run_id, run.root_run_id) if r]


def runs_matching(instance: dg.DagsterInstance, filters: dg.RunsFilter,
                  limit: int | None = None) -> list[dg.DagsterRun]:
    """The runs that match, newest first (through the public `get_run_records`)."""
    return [r.dagster_run for r in instance.get_run_records(filters=filters, limit=limit)]
