"""The dynamic partitions of the indexing assets: one partition per collection_id."""

import dagster as dg

collections_partitions = dg.DynamicPartitionsDefinition(name="collections")
