"""Observability, checked by a real Prometheus: the exporter (rag-pipeline-exporter) scraped
every second while a crawl is indexed by the daemon; the alert rules under deploy/prometheus
checked and unit-tested by promtool; /readyz holding through outages while the health series
follow PostgreSQL, Kafka and the daemon."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from rag_pipeline.kafka_io import KafkaOptions, consumer_config
from rag_pipeline.knowledge.workspaces import close_shared_pool
from rag_pipeline.local.corpus import pages as corpus_pages
from rag_pipeline.local.corpus import postgres_docs
from rag_pipeline.local.publishing import message_for

# `deployment` and `ledger_e2e` (tests/conftest.py): module-scoped, a deployment of its own.
from tests.e2e_deployment import _wait, crawl, wait_terminal
from tests.helpers import job_id_base, json_log_lines, produce

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus"
EXPORTER_PORT = 19108
PROMETHEUS_PORT = 19090


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, (f"{name} is missing: make test needs Prometheus (Debian: apt-get install "
                  "prometheus; scripts/require-tools test says so before it starts)")
    return path


def test_alert_rules_are_valid_and_pass_their_unit_tests():
    check = subprocess.run([tool("promtool"), "check", "rules", "alerts.yml"], cwd=RULES,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 13 rules found" in check.stdout
    # Every alert links its runbook section, and the section exists.
    import re

    import yaml
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {heading.lower() for heading in re.findall(r"^## (\w+)$", runbook, flags=re.M)}
    for rule in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"][0]["rules"]:
        url = rule["annotations"]["runbook_url"]
        assert url.endswith(f"docs/runbook.md#{rule['alert'].lower()}"), url
        assert rule["alert"].lower() in anchors, rule["alert"]
    # An exporter that is down, or not scraped at all, alerts.
    exprs = " ".join(r["expr"] for r in yaml.safe_load((RULES / "alerts.yml").read_text())[
        "groups"][0]["rules"])
    assert 'up{job="rag-pipeline"} == 0' in exprs and 'absent(up{job="rag-pipeline"})' in exprs
    tested = subprocess.run([tool("promtool"), "test", "rules", "alerts_test.yml"], cwd=RULES,
                            capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    config = subprocess.run([tool("promtool"), "check", "config", "prometheus.yml"], cwd=RULES,
                            capture_output=True, text=True, timeout=60)
    assert config.returncode == 0, config.stdout + config.stderr


class Exporter:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{EXPORTER_PORT}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "rag-pipeline-exporter")], env=self.env,
                stdout=out, stderr=subprocess.STDOUT)
        _wait("the exporter", lambda: self._answers("/healthz"), 60, every=0.5)

    def _answers(self, path: str) -> bool:
        try:
            return httpx.get(self.url + path, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def readyz(self) -> tuple[int, dict]:
        response = httpx.get(self.url + "/readyz", timeout=30)
        return response.status_code, response.json()


@pytest.fixture(scope="module")
def exporter(deployment, tmp_path_factory) -> Iterator[Exporter]:
    # The daemon counts as down after 45 s without a heartbeat (it beats every 30 s), not
    # the default 120 s: the outage test waits that long once.
    env = {**deployment.env, "METRICS_PORT": str(EXPORTER_PORT), "LOG_FORMAT": "json",
           "DAEMON_HEARTBEAT_TOLERANCE_SECONDS": "45"}
    running = Exporter(env, tmp_path_factory.mktemp("exporter") / "exporter.log")
    running.start()
    yield running
    if running.process and running.process.poll() is None:
        running.process.terminate()
        running.process.wait(30)


@pytest.fixture(scope="module")
def prometheus(exporter, tmp_path_factory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("prometheus")
    config = folder / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "rag-pipeline", "scrape_interval": "1s",
                            "static_configs": [{"targets": [f"127.0.0.1:{EXPORTER_PORT}"]}]}],
    }))
    with (folder / "prometheus.log").open("ab") as out:
        server = subprocess.Popen(
            [tool("prometheus"), f"--config.file={config}",
             f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"],
            stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{PROMETHEUS_PORT}"
    try:
        _wait("Prometheus", lambda: ready(url), 60, every=0.5)
        yield url
    finally:
        server.terminate()
        server.wait(30)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def query(prometheus: str, promql: str) -> dict[tuple, float]:
    """An instant query through Prometheus's HTTP API: {label values: value}."""
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=30).json()
    assert body["status"] == "success", body
    return {tuple(sorted((k, v) for k, v in r["metric"].items() if k not in ("job", "instance")
                         and k != "__name__")): float(r["value"][1])
            for r in body["data"]["result"]}


def fresh(prometheus: str, promql: str, expected, timeout: float = 60):
    """Wait until Prometheus has scraped the value the ledger holds now."""
    return _wait(f"{promql} == {expected}", lambda: query(prometheus, promql) == expected or None,
                 timeout, every=1)


def test_prometheus_sees_what_the_ledger_and_kafka_say(deployment, ledger_e2e, exporter,
                                                      prometheus):
    s = deployment.settings
    collections = {f"m-{os.urandom(3).hex()}": corpus_pages(postgres_docs(), limit=10,
                                                           offset=950)}
    messages, owner = crawl(collections, job_id_base(), request_id=77)
    bad = message_for({**json.loads(messages[0].value), "job_id": max(owner) + 1,
                       "content": {"html": "***", "encoding": "gzip+base64"}})
    produce(s, s.kafka_topic, [*messages, bad])
    # While the crawl is indexed, Prometheus scrapes every second.
    _wait("jobs being indexed", lambda: query(prometheus, 'rag_pipeline_jobs{state="running"}'
                                              ) != {(("state", "running"),): 0.0}, 300)
    wait_terminal(ledger_e2e, [*owner, max(owner) + 1])
    _wait("no pending status", lambda: ledger_e2e.outbox_counts().get("pending", 0) == 0, 300)

    states = ledger_e2e.job_states()
    fresh(prometheus, 'rag_pipeline_jobs{state="completed"}',
          {(("state", "completed"),): float(states["completed"])})
    fresh(prometheus, 'rag_pipeline_jobs{state="failed"}',
          {(("state", "failed"),): float(states.get("failed", 0))})
    letters = {labels: value for (name, labels), value in ledger_e2e.counters().items()
               if name == "dead_letters"}
    assert letters.get("reason=bad_base64", 0) >= 1
    fresh(prometheus, "rag_pipeline_dead_letters_total",
          {(("reason", label.split("=", 1)[1]),): value for label, value in letters.items()})
    fresh(prometheus, "rag_pipeline_outbox_pending", {(): 0.0})
    # This crawl never said it is complete (no crawl_completed message): it counts.
    assert ledger_e2e.crawls_incomplete() >= 1
    fresh(prometheus, "rag_pipeline_crawls_incomplete",
          {(): float(ledger_e2e.crawls_incomplete())})
    consumer = Consumer(consumer_config(KafkaOptions.from_settings(s)))
    try:
        topic = consumer.list_topics(s.kafka_topic, timeout=10).topics[s.kafka_topic]
        high = {p: consumer.get_watermark_offsets(TopicPartition(s.kafka_topic, p),
                                                  timeout=10)[1] for p in topic.partitions}
    finally:
        consumer.close()
    stored = ledger_e2e.stored_offsets(s.kafka_topic)
    fresh(prometheus, "rag_pipeline_kafka_consumer_lag_messages",
          {(("partition", str(p)), ("topic", s.kafka_topic)): float(max(0, h - stored.get(p, 0)))
           for p, h in high.items()})
    assert query(prometheus, 'rag_pipeline_exporter_source_up') == {
        (("source", "dagster"),): 1.0, (("source", "kafka"),): 1.0, (("source", "ledger"),): 1.0}

    # A restarted exporter continues every counter where it was: no reset in Prometheus.
    exporter.kill()
    exporter.start()
    before = query(prometheus, "rag_pipeline_jobs_finished_total")
    time.sleep(5)
    # On a loaded machine the restarted exporter's first scrapes can miss Prometheus's 1 s
    # timeout (the series is stale meanwhile): wait for a successful one.
    after = _wait("a scrape of the restarted exporter",
                  lambda: query(prometheus, "rag_pipeline_jobs_finished_total"), 120)
    assert all(after[k] >= v for k, v in before.items())
    for counter in ("jobs_staged_total", "jobs_finished_total", "dead_letters_total",
                    "outbox_delivered_total", "outbox_attempts_total", "model_requests_total",
                    "job_latency_seconds_count"):
        resets = query(prometheus, f"resets(rag_pipeline_{counter}[10m])")
        assert resets and set(resets.values()) == {0.0}, (counter, resets)


def test_the_exporter_speaks_prometheus_conventions(exporter):
    text = httpx.get(exporter.url + "/metrics", timeout=30).text
    check = subprocess.run([tool("promtool"), "check", "metrics"], input=text,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr
    assert 'outcome=""' not in text and 'reason=""' not in text
    # Fixed buckets from the first scrape, whether or not anything was observed.
    for bound in ("1.0", "1800.0", "+Inf"):
        assert f'rag_pipeline_page_indexing_seconds_bucket{{le="{bound}"}}' in text
    assert "rag_pipeline_dagster_daemon_heartbeat_timestamp_seconds" in text
    assert "_age_seconds{daemon" not in text
    # prometheus_client's handler: OpenMetrics when asked, and a query string is fine.
    open_metrics = httpx.get(exporter.url + "/metrics", timeout=30,
                             headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.rstrip().endswith("# EOF")
    only = httpx.get(exporter.url + "/metrics", params={"name[]": "rag_pipeline_jobs"},
                     timeout=30)
    assert only.status_code == 200 and "rag_pipeline_jobs{" in only.text
    assert "rag_pipeline_outbox_pending" not in only.text


def test_readiness_holds_through_outages_while_the_health_series_say_down(
        deployment, exporter, prometheus, stack):
    """The only exporter stays in its Service during an outage (readiness means "can
    serve"), so Prometheus keeps scraping it and the health series carry the outage."""
    status, body = exporter.readyz()
    assert status == 200 and body["ready"] and body["checks"]["postgres"]["ok"], body

    def healthy_series(source: str) -> float | None:
        """The exporter's own answer (a scrape during an outage takes longer than the
        test Prometheus's 1 s timeout, so its series there would only go stale)."""
        text = httpx.get(exporter.url + "/metrics", timeout=30).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "rag_pipeline_source_healthy" and \
                        sample.labels["source"] == source:
                    return sample.value
        return None

    def down_in_prometheus(source: str) -> None:
        _wait(f"{source} reported down", lambda: healthy_series(source) == 0.0, 180, every=1)
        code, answer = exporter.readyz()
        assert code == 200 and not answer["checks"][source]["ok"], answer

    def up_again(source: str) -> None:
        fresh(prometheus, f'rag_pipeline_source_healthy{{source="{source}"}}',
              {(("source", source),): 1.0}, timeout=240)

    deployment.dagster.kill("daemon", signal.SIGTERM)
    try:
        down_in_prometheus("dagster_daemon")
        assert "heartbeat" in exporter.readyz()[1]["checks"]["dagster_daemon"]["why"]
    finally:
        deployment.dagster.start_daemon()
    up_again("dagster_daemon")

    stack.postgres.stop()
    try:
        down_in_prometheus("postgres")
    finally:
        stack.postgres.start()
        # This process's LightRAG pool held connections to the stopped server.
        close_shared_pool()
    up_again("postgres")

    stack.kafka.stop()
    try:
        down_in_prometheus("kafka")
    finally:
        stack.kafka.start()
    up_again("kafka")


def test_a_second_exporter_on_a_taken_port_says_what_to_do(exporter):
    second = subprocess.run([str(Path(sys.executable).parent / "rag-pipeline-exporter")],
                            env=exporter.env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    assert f"cannot listen on 127.0.0.1:{EXPORTER_PORT}" in second.stderr
    assert "METRICS_PORT" in second.stderr
    assert "Traceback" not in second.stderr


def test_every_process_writes_one_json_object_per_line(deployment, exporter):
    """After a crawl and the outages above: the code server with the run workers it started,
    the daemon, the webserver and the exporter, each line one object with the same fields
    (Dagster's own lines, ours, LightRAG's, librdkafka's and Python warnings alike)."""
    home = deployment.dagster.home
    lines = {name: json_log_lines(home / f"{name}.log")
             for name in ("code_server", "daemon", "webserver")}
    lines["exporter"] = json_log_lines(exporter.log)
    assert all(lines.values()), {name: len(found) for name, found in lines.items()}
    code_server = lines["code_server"]
    # Run workers write to the code server's output: their run events carry the run.
    assert any(e.get("run_id") and e.get("job_name") for e in code_server)
    assert any(e["logger"].startswith("lightrag") for e in code_server)
    # The sensor's context.log, through our handler rather than Dagster's colored console.
    assert any(e["event"] == "sensor_tick" for e in code_server)
    # Kafka was stopped under the exporter: librdkafka's complaints are objects too.
    assert any(e["logger"] == "rag_pipeline.kafka.librdkafka" for e in lines["exporter"])
