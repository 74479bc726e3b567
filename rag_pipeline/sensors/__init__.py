"""Dagster sensors of rag-pipeline."""
