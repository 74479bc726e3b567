"""The dynamic partitions of the indexing assets: one partition per collection_id."""

import dagster as dg

collections_partitions = dg.DynamicPartitionsDefinition(name="collections")

# Every indexing run carries this tag; dagster.yaml limits runs to one per unique value.
COLLECTION_TAG = "rag_pipeline/collection"
