"""Test session setup: a private local stack on its own ports, started once per session.

The suite talks to a real Kafka broker and a real PostgreSQL with pgvector. By default it
starts them itself (under .stack-test/, ports 15432, 19092, 18080, 18081) and removes them
at the end. With RAG_TEST_EXTERNAL=1 it uses an already-running Kafka and PostgreSQL named
by the usual environment variables (KAFKA_BOOTSTRAP_SERVERS, POSTGRES_*), as a production
user would, and starts only the stand-ins of the services outside the system (the Go API
and the model) on ports 18080 and 18081 (README, "Running against existing services").
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXTERNAL = os.environ.get("RAG_TEST_EXTERNAL") == "1"

# Hermetic: the developer's .env and model keys must not leak into tests.
os.environ["RAG_PIPELINE_ENV_FILE"] = ""
os.environ.pop("POSTGRES_WORKSPACE", None)
for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
    os.environ.pop(name, None)
# The stand-ins of the outside services (tests steer them), and their data folder.
os.environ.update({
    "STACK_DIR": str(ROOT / ".stack-test"),
    "GO_BACKEND_URL": "http://127.0.0.1:18080",
    "DEV_LLM_URL": "http://127.0.0.1:18081/v1",
    "EMBEDDING_DIM": "256",
    "DAGSTER_PORT": "13000",
    # Runs end as soon as their collection is drained (a test of lingering sets its own).
    "RUN_IDLE_SECONDS": "0",
})
if not EXTERNAL:
    os.environ.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092",
            "KAFKA_CONTROLLER_PORT": "19093",
            # A listener wanting SASL credentials (tests/test_connections.py).
            "KAFKA_SASL_PORT": "19094",
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": "15432",
            "POSTGRES_USER": "postgres",
            # A kept stack (RAG_TEST_KEEP_STACK=1) must find the password it was made with.
            "POSTGRES_PASSWORD": "test-kept-stack"
            if os.environ.get("RAG_TEST_KEEP_STACK") == "1"
            else "test-" + secrets.token_hex(12),
            "POSTGRES_DB": "mcpdocs",
        }
    )

from rag_pipeline.ledger import JobLedger  # noqa: E402
from rag_pipeline.local.stack import LocalStack  # noqa: E402
from rag_pipeline.settings import Settings, load_settings  # noqa: E402
from tests.e2e_deployment import deployment, ledger_e2e  # noqa: E402, F401 (fixtures of test_e2e)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[LocalStack]:
    local = LocalStack(settings)
    keep = os.environ.get("RAG_TEST_KEEP_STACK") == "1"
    if not keep:
        local.down(purge=True)
    only = {"go-api", "model"} if EXTERNAL else None
    local.up(progress=lambda msg: print(f"[stack] {msg}"), only=only)
    yield local
    if not keep:
        local.down(purge=True)


@pytest.fixture(scope="session", autouse=True)
def shared_pool_closed() -> Iterator[None]:
    """Close LightRAG's pool while pytest still captures its log lines (not at exit)."""
    yield
    from rag_pipeline.knowledge.workspaces import close_shared_pool

    close_shared_pool()


@pytest.fixture(scope="session")
def go_bin(settings: Settings) -> Path:
    """The commands of the Go module (go/cmd/...), built once per session."""
    from tests.go_side import build_go

    return build_go(settings.stack_path / "go-bin")


@pytest.fixture(autouse=True)
def no_model_key_leaks() -> Iterator[None]:
    """A test that leaves a model key in os.environ would send every later test to a real
    model endpoint (build_resources exports secrets it reads from a file)."""
    yield
    leaked = [n for n in ("OPENAI_API_KEY", "OPENAI_BASE_URL") if n in os.environ]
    assert not leaked, f"the test left {leaked} in os.environ"


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topics, collections and jobs of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def topics(stack, settings: Settings, unique: str) -> Iterator[Settings]:
    """Settings pointing at a fresh indexing topic (3 partitions) and DLQ of this test."""
    from tests.helpers import create_topic, delete_topic

    topic, dlq = f"indexing_jobs_{unique}", f"indexing_jobs_dlq_{unique}"
    create_topic(settings, topic, partitions=3)
    create_topic(settings, dlq, partitions=1)
    yield settings.model_copy(update={"kafka_topic": topic, "kafka_dlq_topic": dlq})
    delete_topic(settings, topic)
    delete_topic(settings, dlq)


@pytest.fixture
def ledger(stack, settings: Settings) -> Iterator[JobLedger]:
    from tests.helpers import open_ledger

    with open_ledger(settings) as opened:
        yield opened


@pytest.fixture
def model(stack, settings: Settings) -> Iterator[str]:
    """The stand-in model's base URL; its knobs are reset after the test."""
    base = settings.dev_llm_url.removesuffix("/v1")
    yield base
    httpx.post(f"{base}/control", json={"fail_rate": 0.0, "refuse_text": "", "latency_ms": 0,
                                        "slow_text": "", "slow_ms": 0})


@pytest.fixture
def go_api(stack, settings: Settings) -> Iterator[str]:
    """The Go API stand-in's base URL; told to behave again after the test."""
    base = settings.go_backend_url
    yield base
    httpx.post(f"{base}/control", json={"fail_status": None, "delay_ms": 0})
