"""The metrics exporter: one long-running process serving

- `/metrics`: Prometheus text format, read at scrape time from the ledger, Kafka and the
  Dagster instance (rag_pipeline/metrics.py);
- `/healthz`: 200 while the process lives;
- `/readyz`: 200 when PostgreSQL and Kafka answer, the Dagster daemon's heartbeat is fresh
  and the indexing sensor ticks; 503 otherwise. The JSON body names each check and why it
  failed.

    rag-pipeline-exporter          (settings from the environment; DAGSTER_HOME for Dagster)

Run beside the daemon, with the same DAGSTER_HOME; it writes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from rag_pipeline import dagster_internals
from rag_pipeline.kafka_io import KafkaOptions, consumer_config
from rag_pipeline.ledger import JobLedger
from rag_pipeline.observability.events import event_line
from rag_pipeline.observability.logs import configure_logging
from rag_pipeline.observability.metrics import SENSOR_NAME, PipelineCollector, Sources
from rag_pipeline.settings import Settings, SettingsError, load_settings

log = logging.getLogger("rag_pipeline.exporter")
CHECK_TIMEOUT_SECONDS = 3.0
# A daemon beats every 20 s or so; Dagster itself calls one silent for 60 s unhealthy.
DAEMON_HEARTBEAT_TOLERANCE_SECONDS = 60.0


class Kafka:
    """One consumer (no group membership) for watermarks; scrapes may come concurrently."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import Consumer

        self.topic = settings.kafka_topic
        self.consumer = Consumer({**consumer_config(KafkaOptions.from_settings(settings)),
                                  "group.id": f"{settings.kafka_group_id}-exporter"})
        self.lock = threading.Lock()

    def partitions(self) -> list[int]:
        described = self.consumer.list_topics(self.topic, timeout=CHECK_TIMEOUT_SECONDS)
        topic = described.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise RuntimeError(f"topic {self.topic} does not exist")
        return sorted(topic.partitions)

    def watermarks(self) -> dict[int, int]:
        from confluent_kafka import TopicPartition

        with self.lock:
            return {p: self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=CHECK_TIMEOUT_SECONDS, cached=False)[1]
                for p in self.partitions()}


class Exporter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        conninfo = settings.postgres_conninfo()
        self.ledger = JobLedger(conninfo, settings.postgres_password.get_secret_value(),
                                max_size=2, application_name="rag-pipeline-exporter",
                                wait_seconds=CHECK_TIMEOUT_SECONDS)
        self.ledger.pool.open(wait=False)
        self.kafka = Kafka(settings)
        self.dagster = dagster_instance()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(PipelineCollector(Sources(
            ledger=self.ledger, kafka_watermarks=self.kafka.watermarks, dagster=self.dagster,
            topic=settings.kafka_topic,
            model_bounds={"llm": settings.llm_max_concurrency,
                          "embedding": settings.embedding_max_concurrency})))

    def metrics(self) -> bytes:
        return generate_latest(self.registry)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks = {"postgres": self._check(self._postgres), "kafka": self._check(self._kafka),
                  "daemon": self._check(self._daemon), "sensor": self._check(self._sensor)}
        return all(c["ok"] for c in checks.values()), checks

    @staticmethod
    def _check(probe: Any) -> dict[str, Any]:
        try:
            detail = probe()
        except Exception as exc:
            return {"ok": False, "why": f"{type(exc).__name__}: {str(exc)[:300]}"}
        return {"ok": True, **({"detail": detail} if detail else {})}

    def _postgres(self) -> str:
        s = self.settings
        with psycopg.connect(s.postgres_conninfo(), **s.postgres_kwargs(),
                             connect_timeout=int(CHECK_TIMEOUT_SECONDS)) as conn:
            conn.execute("SELECT 1")
        return f"{s.postgres_host}:{s.postgres_port}"

    def _kafka(self) -> str:
        return f"{len(self.kafka.partitions())} partitions of {self.settings.kafka_topic}"

    def _daemon(self) -> str:
        instance = self._instance()
        sensor_beat = dagster_internals.daemon_heartbeats(instance).get("SENSOR")
        if sensor_beat is None:
            raise RuntimeError("no dagster-daemon has ever beaten on this instance")
        age = time.time() - sensor_beat
        if age > DAEMON_HEARTBEAT_TOLERANCE_SECONDS:
            raise RuntimeError(f"the dagster-daemon's last heartbeat is {age:.0f} s old")
        return f"heartbeat {age:.0f} s ago"

    def _sensor(self) -> str:
        tick = dagster_internals.last_sensor_tick(self._instance(), SENSOR_NAME)
        if tick is None:
            raise RuntimeError(f"{SENSOR_NAME} has never ticked")
        age = time.time() - tick.timestamp
        tolerance = 3 * self.settings.sensor_interval_seconds + 30
        if age > tolerance:
            raise RuntimeError(f"{SENSOR_NAME} last ticked {age:.0f} s ago "
                               f"(more than {tolerance} s)")
        return f"last tick {age:.0f} s ago"

    def _instance(self) -> Any:
        if self.dagster is None:
            raise RuntimeError("DAGSTER_HOME is not set: the exporter needs the Dagster "
                               "instance of the daemon it watches")
        return self.dagster


def dagster_instance() -> Any | None:
    if not os.environ.get("DAGSTER_HOME"):
        return None
    import dagster as dg

    return dg.DagsterInstance.get()


def handler_for(exporter: Exporter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, exporter.metrics(), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._send(200, b'{"status": "alive"}', "application/json")
            elif self.path == "/readyz":
                ready, checks = exporter.readiness()
                body = json.dumps({"ready": ready, "checks": checks}).encode()
                self._send(200 if ready else 503, body, "application/json")
            else:
                self._send(404, b"/metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return Handler


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"rag-pipeline-exporter: {exc}") from None
    configure_logging(settings.log_format)
    exporter = Exporter(settings)
    try:
        server = ThreadingHTTPServer((settings.metrics_host, settings.metrics_port),
                                     handler_for(exporter))
    except OSError as exc:
        exporter.ledger.close()
        raise SystemExit(
            f"rag-pipeline-exporter: cannot listen on {settings.metrics_host}:"
            f"{settings.metrics_port} ({exc.strerror}): another exporter may already run "
            "there; stop it, or set METRICS_HOST / METRICS_PORT.") from None
    log.info(event_line("exporter_started", address=f"http://{settings.metrics_host}:"
                        f"{settings.metrics_port}", dagster=exporter.dagster is not None))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        exporter.ledger.close()


if __name__ == "__main__":
    main()
