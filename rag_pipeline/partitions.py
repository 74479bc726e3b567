"""The dynamic partitions of the indexing assets: one partition per collection_id."""

import dagster as dg

collections_partitions = dg.DynamicPartitionsDefinition(name="collections")

# The collection a run writes. Dagster puts this tag on every partitioned run, whoever
# launches it (the staging sensor, a backfill, a materialization from the UI), and the only
# partitions of this code location are collections: so dagster.yaml's limit of one run per
# value of this tag holds for every run that writes a collection.
COLLECTION_TAG = "dagster/partition"
