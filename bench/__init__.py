"""Benchmarks of rag-pipeline: programs that print figures and write JSON (never tests)."""
