"""The local workshop: what `make up`, the CLI, the tests and the benchmarks need around
the pipeline, and production never runs.

- `cli`: the `rag-pipeline` command (stack, dev, env, publish, query, inspect);
- `stack/`: the local Kafka, PostgreSQL + pgvector and the stand-ins, started as processes;
- `devservers/`: the stand-ins of the services outside the system (Go API, model);
- `demo`, `corpus`, `publishing`, `samples/`: the demo crawl and its pages.

The code location (`rag_pipeline.definitions`) imports nothing from here (a test checks).
"""

from pathlib import Path

# The checkout: dagster.yaml, workspace.yaml and .env.example live at its root.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
