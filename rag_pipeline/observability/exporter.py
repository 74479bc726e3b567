"""The metrics exporter: one long-running process serving

- `/metrics`: prometheus_client's own handler (the text format, or OpenMetrics when the
  scraper asks for it; `?name[]=` filters), read at scrape time from the ledger, Kafka and
  the Dagster instance (observability/metrics.py), with the health of each source as
  `rag_pipeline_source_healthy{source}`;
- `/healthz`: 200 while the process lives;
- `/readyz`: 200 whenever the exporter can serve scrapes, whatever its sources say: during
  an outage it is the exporter that reports it (Kubernetes must not take it out of its
  Service then). The JSON body names each source's check and why it failed.

    rag-pipeline-exporter          (settings from the environment; DAGSTER_HOME for Dagster)

Run beside the daemon, with the same DAGSTER_HOME; it writes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import psycopg
from prometheus_client import make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from rag_pipeline import dagster_internals
from rag_pipeline.kafka_io import KafkaOptions, consumer_config
from rag_pipeline.ledger import JobLedger
from rag_pipeline.observability.events import event_line
from rag_pipeline.observability.logs import configure_logging
from rag_pipeline.observability.metrics import SENSOR_NAME, PipelineCollector, Sources
from rag_pipeline.settings import Settings, SettingsError, load_settings

log = logging.getLogger("rag_pipeline.exporter")
CHECK_TIMEOUT_SECONDS = 3.0
# Every source's check at once, answered within this (a probe's timeout must exceed it).
HEALTH_DEADLINE_SECONDS = 5.0
SOURCES = ("postgres", "kafka", "dagster_daemon", "indexing_sensor")


class Kafka:
    """One consumer (no group membership) for the topic's partitions and watermarks.

    Scrapes and health checks come concurrently, and librdkafka queues concurrent metadata
    requests behind each other: during an outage each waits its own timeout after all the
    earlier ones, and scrapes arriving every few seconds would wait without end. So one call
    at a time, a caller waiting at most CHECK_TIMEOUT_SECONDS for its turn, and a scrape's
    reads ending within CHECK_TIMEOUT_SECONDS of it."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import Consumer

        self.topic = settings.kafka_topic
        self.consumer = Consumer({**consumer_config(KafkaOptions.from_settings(settings)),
                                  "group.id": f"{settings.kafka_group_id}-exporter"})
        self.lock = threading.Lock()

    @contextmanager
    def _turn(self) -> Iterator[float]:
        """The consumer to ourselves; yields the deadline of this turn's calls."""
        if not self.lock.acquire(timeout=CHECK_TIMEOUT_SECONDS):
            raise TimeoutError("Kafka has not answered the calls before this one yet")
        try:
            self.consumer.poll(0)  # hands librdkafka's queued log lines to logging
            yield time.monotonic() + CHECK_TIMEOUT_SECONDS
        finally:
            self.lock.release()

    def _partitions(self, deadline: float) -> list[int]:
        described = self.consumer.list_topics(self.topic, timeout=_left(deadline))
        topic = described.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise RuntimeError(f"topic {self.topic} does not exist")
        return sorted(topic.partitions)

    def partitions(self) -> list[int]:
        with self._turn() as deadline:
            return self._partitions(deadline)

    def watermarks(self) -> dict[int, int]:
        from confluent_kafka import TopicPartition

        with self._turn() as deadline:
            return {p: self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=_left(deadline), cached=False)[1]
                for p in self._partitions(deadline)}


def _left(deadline: float) -> float:
    """Seconds left before `deadline`; none left is a timeout, raised here rather than
    passed to librdkafka as 0 (which means "do not wait")."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"Kafka did not answer within {CHECK_TIMEOUT_SECONDS:.0f} s")
    return left


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
        self.checks: dict[str, Callable[[], str]] = {
            "postgres": self._postgres, "kafka": self._kafka,
            "dagster_daemon": self._daemon, "indexing_sensor": self._sensor}
        self.kafka_checked: tuple[float, bool] = (0.0, True)  # when, and whether it answered
        self.pool = ThreadPoolExecutor(max_workers=2 * len(SOURCES),
                                       thread_name_prefix="health")
        self.registry.register(HealthCollector(self))
        self.registry.register(PipelineCollector(Sources(
            ledger=self.ledger, kafka_watermarks=self._watermarks, dagster=self.dagster,
            topic=settings.kafka_topic,
            model_bounds={"llm": settings.llm_max_concurrency,
                          "embedding": settings.embedding_max_concurrency})))

    def health(self) -> dict[str, dict[str, Any]]:
        """Each source's check, run at once; one that does not answer in time is down."""
        futures = {source: self.pool.submit(self._check, probe)
                   for source, probe in self.checks.items()}
        deadline = time.monotonic() + HEALTH_DEADLINE_SECONDS
        out: dict[str, dict[str, Any]] = {}
        for source, future in futures.items():
            try:
                out[source] = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                out[source] = {"ok": False,
                               "why": f"no answer within {HEALTH_DEADLINE_SECONDS:.0f} s"}
        self.kafka_checked = (time.monotonic(), out["kafka"]["ok"])
        return out

    def _watermarks(self) -> dict[int, int]:
        """The topic's watermarks, unless this scrape's health check (a moment ago) found
        Kafka down: asking again would only make the scrape wait out another timeout."""
        at, ok = self.kafka_checked
        if not ok and time.monotonic() - at < HEALTH_DEADLINE_SECONDS:
            raise RuntimeError("Kafka did not answer this scrape's health check")
        return self.kafka.watermarks()

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
        if age > self.settings.daemon_heartbeat_tolerance_seconds:
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


class HealthCollector(Collector):
    """`rag_pipeline_source_healthy{source}`: the readiness checks, as series."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        healthy = GaugeMetricFamily(
            "rag_pipeline_source_healthy", "1 when the source passed its check this scrape "
            "(postgres and kafka answer, the dagster-daemon beats, the indexing sensor ticks).",
            labels=["source"])
        for source, check in self.exporter.health().items():
            healthy.add_metric([source], 1.0 if check["ok"] else 0.0)
        yield healthy


def dagster_instance() -> Any | None:
    if not os.environ.get("DAGSTER_HOME"):
        return None
    import dagster as dg

    return dg.DagsterInstance.get()


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


def app_for(exporter: Exporter) -> Callable[..., Iterable[bytes]]:
    """/metrics through prometheus_client's handler; /healthz and /readyz as JSON."""
    metrics = make_wsgi_app(exporter.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/healthz":
            status, body = "200 OK", {"status": "alive"}
        elif path == "/readyz":
            status, body = "200 OK", {"ready": True, "checks": exporter.health()}
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"/metrics, /healthz or /readyz\n"]
        data = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(data)))])
        return [data]

    return app


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"rag-pipeline-exporter: {exc}") from None
    configure_logging(settings.log_format)
    exporter = Exporter(settings)
    try:
        server = make_server(settings.metrics_host, settings.metrics_port, app_for(exporter),
                             ThreadingWSGIServer, handler_class=QuietHandler)
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
