"""The dynamic partitions of the indexing assets: one partition per collection_id."""

import time
from collections.abc import Iterable

import dagster as dg

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
