"""The local stack: Kafka, PostgreSQL + pgvector, the Go API stand-in and the stand-in model.

Every service listens where the settings point (KAFKA_BOOTSTRAP_SERVERS, POSTGRES_PORT,
GO_BACKEND_URL, DEV_LLM_URL) and keeps its data under STACK_DIR. `up` is idempotent and
waits for health; `down` leaves no process behind.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from rag_pipeline.local.stack.dagster_dev import DagsterDev
from rag_pipeline.local.stack.kafka import KafkaService
from rag_pipeline.local.stack.postgres import PostgresService
from rag_pipeline.local.stack.processes import (
    ServiceProcess,
    StackError,
    require_free_port,
    rss_bytes,
    wait_until,
)
from rag_pipeline.settings import Settings

__all__ = ["LocalStack", "ServiceStatus", "StackError"]

LOCAL_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str
    running: bool
    healthy: bool
    pid: int | None
    rss_bytes: int | None
    note: str = ""


class HttpService:
    """One of the project's own small HTTP services (the Go API and model stand-ins)."""

    def __init__(self, name: str, module: str, url: str, settings: Settings,
                 extra_args: list[str]) -> None:
        self.name = name
        self.module = module
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.settings = settings
        self.extra_args = extra_args
        self.process = ServiceProcess(name, settings.stack_path)

    @property
    def local(self) -> bool:
        return self.host in LOCAL_HOSTS

    @property
    def address(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.address}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> None:
        if self.process.pid is None:
            setting = "GO_BACKEND_URL" if self.name == "go-api" else "DEV_LLM_URL"
            require_free_port(self.host, self.port, self.name, setting)
            self.process.start([sys.executable, "-m", self.module, "--host", self.host,
                                "--port", str(self.port), *self.extra_args])
        wait_until(self.healthy, 30, self.name, self.process.log_file)

    def stop(self) -> bool:
        return self.process.stop()


class LocalStack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        stack = settings.stack_path
        self.postgres = PostgresService(settings)
        self.kafka = KafkaService(settings)
        self.go_api = HttpService(
            "go-api", "rag_pipeline.local.devservers.go_api", settings.go_backend_url, settings,
            ["--record-file", str(stack / "go-api-calls.jsonl")],
        )
        self.model = HttpService(
            "model", "rag_pipeline.local.devservers.llm", settings.dev_llm_url, settings,
            ["--dim", str(settings.embedding_dim)],
        )

    def up(self, progress=print, only: set[str] | None = None) -> None:
        """Start the services (all, or those named in `only`) and wait until each is healthy."""
        self.settings.stack_path.mkdir(parents=True, exist_ok=True)
        if only is None or "postgres" in only:
            progress(f"PostgreSQL 18 + pgvector on 127.0.0.1:{self.settings.postgres_port} ...")
            self.postgres.start()
        if only is None or "kafka" in only:
            progress(f"Kafka (KRaft) on {self.kafka.address} ...")
            self.kafka.start()
        for service in (self.go_api, self.model):
            if only is not None and service.name not in only:
                continue
            if service.local:
                progress(f"{service.name} stand-in on {service.address} ...")
                service.start()
            else:
                progress(f"{service.name}: {service.address} is not local, not started")

    def down(self, purge: bool = False) -> list[str]:
        """Stop everything the quick start started: Dagster first, then the services."""
        stopped = ["dagster"] if DagsterDev(self.settings).stop() else []
        stopped += [svc.name for svc in (self.model, self.go_api, self.kafka, self.postgres)
                    if svc.stop()]
        if purge and self.settings.stack_path.exists():
            shutil.rmtree(self.settings.stack_path)
        return stopped

    def status(self) -> list[ServiceStatus]:
        rows = []
        pg = self.postgres
        pg_pid = pg.pid
        try:
            pg_ok = pg.healthy()
        except StackError:
            pg_ok = False
        external = "external: not managed by the local stack"
        rows.append(ServiceStatus("postgres",
                                  f"{self.settings.postgres_host}:{self.settings.postgres_port}",
                                  pg_pid is not None, pg_ok, pg_pid, rss_bytes(pg_pid),
                                  "" if pg_pid or not pg_ok else external))
        kafka_pid = self.kafka.process.pid
        kafka_ok = self.kafka.healthy()
        rows.append(ServiceStatus("kafka", self.kafka.address, kafka_pid is not None,
                                  kafka_ok, kafka_pid, rss_bytes(kafka_pid),
                                  "" if kafka_pid or not kafka_ok else external))
        for svc in (self.go_api, self.model):
            pid = svc.pid
            note = "" if svc.local else external
            rows.append(ServiceStatus(svc.name, svc.address, pid is not None, svc.healthy(),
                                      pid, rss_bytes(pid), note))
        return rows
