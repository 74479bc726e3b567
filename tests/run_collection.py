"""Run the indexing assets for one collection in this process (tests kill it on purpose).

    python -m tests.run_collection <collection_id>

Settings come from the environment, as in the test session.
"""

from __future__ import annotations

import sys

import dagster as dg

from rag_pipeline.assets.indexing import indexing_assets
from rag_pipeline.definitions import build_definitions
from rag_pipeline.settings import load_settings


def main() -> None:
    collection = sys.argv[1]
    defs = build_definitions(load_settings())
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("collections", [collection])
        result = dg.materialize(indexing_assets, partition_key=collection, instance=instance,
                                resources=defs.resources, raise_on_error=False)
    sys.exit(0 if result.success else 1)


if __name__ == "__main__":
    main()
