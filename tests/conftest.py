"""Test session setup: a private local stack on its own ports, started once per session.

The suite talks to a real Kafka broker and a real PostgreSQL with pgvector. By default it
starts them itself (under .stack-test/, ports 15432, 19092, 18080, 18081) and removes them
at the end. With RAG_TEST_EXTERNAL=1 it uses already-running services named by the usual
environment variables instead (README, "Running against existing services").
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXTERNAL = os.environ.get("RAG_TEST_EXTERNAL") == "1"

# Hermetic: the developer's .env and model keys must not leak into tests.
os.environ["RAG_PIPELINE_ENV_FILE"] = ""
os.environ.pop("POSTGRES_WORKSPACE", None)
if not EXTERNAL:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "STACK_DIR": str(ROOT / ".stack-test"),
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092",
            "KAFKA_CONTROLLER_PORT": "19093",
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": "15432",
            "POSTGRES_USER": "postgres",
            # A kept stack (RAG_TEST_KEEP_STACK=1) must find the password it was made with.
            "POSTGRES_PASSWORD": "test-kept-stack"
            if os.environ.get("RAG_TEST_KEEP_STACK") == "1"
            else "test-" + secrets.token_hex(12),
            "POSTGRES_DB": "mcpdocs",
            "GO_BACKEND_URL": "http://127.0.0.1:18080",
            "DEV_LLM_URL": "http://127.0.0.1:18081/v1",
            "EMBEDDING_DIM": "256",
            "DAGSTER_PORT": "13000",
        }
    )

from rag_pipeline.settings import Settings, load_settings  # noqa: E402
from rag_pipeline.stack import LocalStack  # noqa: E402


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[LocalStack]:
    local = LocalStack(settings)
    if EXTERNAL:
        yield local
        return
    keep = os.environ.get("RAG_TEST_KEEP_STACK") == "1"
    if not keep:
        local.down(purge=True)
    local.up(progress=lambda msg: print(f"[stack] {msg}"))
    yield local
    if not keep:
        local.down(purge=True)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topics, collections and jobs of one test."""
    return uuid.uuid4().hex[:10]
