"""The Dagster code location of rag-pipeline."""

import dagster as dg

defs = dg.Definitions()
