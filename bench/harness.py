"""The benchmark stack and what the scenarios share: pages, messages, the stand-in model's
knobs and counters, waiting for jobs, deployments of Dagster on fresh databases.

The benchmarks run on a stack of their own (.stack-bench/, ports 25432, 29092, 28080,
28081), started here and stopped at the end, with 1536-dimension embeddings as in
production (text-embedding-3-small).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rag_pipeline.ledger import JobLedger
from rag_pipeline.ledger.connection import STATEMENT_TIMEOUT_MS
from rag_pipeline.local.corpus import pages, postgres_docs
from rag_pipeline.local.publishing import OutgoingMessage, build_message, message_for, publish
from rag_pipeline.local.stack import LocalStack
from rag_pipeline.local.stack.deployment import DagsterDeployment, create_databases, drop_databases
from rag_pipeline.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BENCH_ENV = {
    "STACK_DIR": str(ROOT / ".stack-bench"),
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:29092",
    "KAFKA_CONTROLLER_PORT": "29093",
    "POSTGRES_HOST": "127.0.0.1",
    "POSTGRES_PORT": "25432",
    "POSTGRES_USER": "postgres",
    "POSTGRES_DB": "mcpdocs",
    "GO_BACKEND_URL": "http://127.0.0.1:28080",
    "DEV_LLM_URL": "http://127.0.0.1:28081/v1",
    "EMBEDDING_DIM": "1536",
    "RAG_PIPELINE_ENV_FILE": "",
}
TERMINAL = ("completed", "failed", "dead")


def bench_settings() -> Settings:
    os.environ.update(BENCH_ENV)
    os.environ.setdefault("POSTGRES_PASSWORD", "bench-" + uuid.uuid4().hex[:12])
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "POSTGRES_WORKSPACE"):
        os.environ.pop(name, None)
    return load_settings()


_shared_stack: Settings | None = None


@contextlib.contextmanager
def bench_stack() -> Iterator[Settings]:
    """The bench stack; started and removed here unless `shared_bench_stack` holds it."""
    if _shared_stack is not None:
        yield _shared_stack
        return
    settings = bench_settings()
    stack = LocalStack(settings)
    stack.down(purge=True)
    stack.up(progress=lambda m: print(f"[bench stack] {m}"))
    try:
        yield settings
    finally:
        stack.down(purge=True)


@contextlib.contextmanager
def shared_bench_stack() -> Iterator[Settings]:
    """One stack for several benchmarks (make bench)."""
    global _shared_stack
    with bench_stack() as settings:
        _shared_stack = settings
        try:
            yield settings
        finally:
            _shared_stack = None


# --- the stand-in model ----------------------------------------------------------------------
class Model:
    def __init__(self, settings: Settings) -> None:
        self.base = settings.dev_llm_url.removesuffix("/v1")

    def set(self, **knobs: Any) -> None:
        """These knobs; every other one back to its default (a scenario's latency spikes or
        error rate never leak into the next)."""
        from dataclasses import asdict

        from rag_pipeline.local.devservers.llm import Knobs

        httpx.post(f"{self.base}/control", json={**asdict(Knobs()), **knobs},
                   timeout=10).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.base}/stats/reset", timeout=10)

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.base}/stats", timeout=10).json()

    def repeated_extractions(self) -> dict[str, int]:
        return httpx.get(f"{self.base}/stats/extractions", timeout=60).json()

    def timeline(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.base}/stats/timeline", timeout=10).json()


# --- pages and messages ----------------------------------------------------------------------
def corpus(count: int, offset: int = 0) -> list[Path]:
    files = pages(postgres_docs(), limit=count, offset=offset)
    if len(files) < count:
        raise SystemExit(f"postgresql-doc-15 has {len(files)} pages from offset {offset}; "
                         f"{count} needed")
    return files


def collection_messages(collections: dict[str, list[Path]], first_job_id: int,
                        request_id: int = 1) -> tuple[list[OutgoingMessage], dict[int, str]]:
    messages, owner = [], {}
    job_id = first_job_id
    for collection, paths in collections.items():
        for path in paths:
            message = build_message(job_id=job_id, collection_id=collection,
                                    url=f"https://{collection}.bench.test/{path.name}",
                                    html=path.read_bytes(), request_id=request_id)
            messages.append(message_for(message))
            owner[job_id] = collection
            job_id += 1
    return messages, owner


def split(files: list[Path], names: list[str]) -> dict[str, list[Path]]:
    size = len(files) // len(names)
    return {name: files[i * size:(i + 1) * size] for i, name in enumerate(names)}


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def job_id_base() -> int:
    return (time.time_ns() // 1000) * 10 % (2**62)


# --- deployments -----------------------------------------------------------------------------
@dataclass
class PipelineRun:
    settings: Settings
    deployment: DagsterDeployment
    ledger: JobLedger
    pipeline_db: str
    dagster_db: str


@contextlib.contextmanager
def pipeline(settings: Settings, max_concurrent_runs: int = 4,
             extra_env: dict[str, str] | None = None,
             deadline_on_database: bool = False) -> Iterator[PipelineRun]:
    """A code server and a daemon on fresh databases and topics, torn down afterwards.
    `deadline_on_database`: the statement deadline set on the pipeline's database, as a
    deployment behind a connection pooler must (bench/pgbouncer.py)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    pipeline_db, dagster_db = unique_name("bench_pipeline"), unique_name("bench_dagster")
    topic, dlq = unique_name("bench_jobs"), unique_name("bench_dlq")
    create_databases(settings, pipeline_db, dagster_db,
                     STATEMENT_TIMEOUT_MS if deadline_on_database else None)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    size = {"max.message.bytes": str(settings.kafka_max_message_bytes)}
    for future in admin.create_topics([NewTopic(topic, 12, 1, config=size),
                                       NewTopic(dlq, 1, 1, config=size)]).values():
        future.result(timeout=30)
    scoped = settings.model_copy(update={"kafka_topic": topic, "kafka_dlq_topic": dlq,
                                         "postgres_db": pipeline_db})
    env = {"DAGSTER_POSTGRES_DB": dagster_db, "POSTGRES_DB": pipeline_db, "KAFKA_TOPIC": topic,
           "KAFKA_DLQ_TOPIC": dlq, "EMBEDDING_DIM": str(settings.embedding_dim),
           **(extra_env or {})}
    home = RESULTS / "tmp" / unique_name("dagster_home")
    deployment = DagsterDeployment.prepare(settings, home, env, max_concurrent_runs)
    ledger = open_ledger(scoped)
    try:
        deployment.start()
        yield PipelineRun(scoped, deployment, ledger, pipeline_db, dagster_db)
    finally:
        deployment.cleanup()
        ledger.close()
        for future in admin.delete_topics([topic, dlq]).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)
        drop_databases(settings, pipeline_db, dagster_db)


def open_ledger(settings: Settings) -> JobLedger:
    ledger = JobLedger(settings.postgres_conninfo(),
                       settings.postgres_password.get_secret_value()).open()
    ledger.migrate()
    return ledger


def send(settings: Settings, messages: list[OutgoingMessage]) -> None:
    publish(settings, messages)


def wait_terminal(ledger: JobLedger, job_ids: list[int], timeout: float = 1800) -> float:
    """Seconds until every job is terminal (polled every 0.5 s)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with ledger.pool.connection() as conn:
            done = conn.execute("SELECT count(*) FROM rag_pipeline.jobs WHERE job_id = ANY(%s) "
                                "AND state = ANY(%s)", (job_ids, list(TERMINAL))).fetchone()[0]
        if done == len(job_ids):
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"{len(job_ids)} jobs did not finish within {timeout:.0f} s")


def finish_times(ledger: JobLedger, job_ids: list[int]) -> list[float]:
    with ledger.pool.connection() as conn:
        rows = conn.execute("SELECT extract(epoch FROM finished_at) FROM rag_pipeline.jobs "
                            "WHERE job_id = ANY(%s) AND finished_at IS NOT NULL",
                            (job_ids,)).fetchall()
    return sorted(float(r[0]) for r in rows)
