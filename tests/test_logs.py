"""Log lines (observability/logs.py): one JSON object per line in the shape of Dagster's own
`--log-format json` lines, whatever wrote them. Every process's output is parsed whole in
tests/test_metrics.py; here, the shapes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import datetime

from rag_pipeline.observability.logs import JsonFormatter, RunEventFormatter


def record(msg: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("rag_pipeline.test", logging.INFO, __file__, 1, msg, (), None)
    made.__dict__.update(extra)
    return made


def test_our_event_and_a_library_message_share_dagsters_fields():
    ours = json.loads(JsonFormatter().format(record('{"event": "job_staged", "job_id": 7}')))
    theirs = json.loads(JsonFormatter().format(record("setup plugin x")))
    for line in (ours, theirs):
        assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
        assert line["timestamp"].endswith("Z") and datetime.fromisoformat(line["timestamp"])
        assert line["level"] == "info" and line["logger"] == "rag_pipeline.test"
    assert (ours["event"], ours["job_id"]) == ("job_staged", 7)
    assert theirs["event"] == "setup plugin x"
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("it failed", exc_info=sys.exc_info())
    line = json.loads(JsonFormatter().format(failed))
    assert "ValueError: boom" in line["exc_info"] and line["event"] == "it failed"


def test_dagsters_metadata_becomes_fields_beside_our_event():
    """A sensor's context.log prefixes the message with the repository and sensor names and
    keeps the original in its metadata; a run's carries the run's ids."""
    sensor = record("__repository__ - indexing_jobs_sensor - {\"event\": \"sensor_tick\"}",
                    dagster_meta={"repository_name": "__repository__",
                                  "name": "indexing_jobs_sensor",
                                  "orig_message": '{"event": "sensor_tick", "staged": 3}'})
    line = json.loads(RunEventFormatter().format(sensor))
    assert (line["event"], line["staged"], line["instigator"]) == (
        "sensor_tick", 3, "indexing_jobs_sensor")
    run = record("index_collection - r1 - {...}", dagster_meta={
        "run_id": "r1", "job_name": "index_collection", "step_key": "index_pages",
        "orig_message": '{"event": "page_indexed", "job_id": 9}'})
    line = json.loads(RunEventFormatter().format(run))
    assert (line["event"], line["job_id"], line["run_id"], line["job_name"],
            line["step_key"]) == ("page_indexed", 9, "r1", "index_collection", "index_pages")


def test_dagster_process_names_the_commands_it_starts():
    refused = subprocess.run([sys.executable, "-m", "rag_pipeline.observability.dagster_process",
                              "rm", "-rf"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "dagster|dagster-daemon|dagster-webserver" in refused.stderr


def test_an_uncaught_exception_is_a_json_line_not_a_bare_traceback():
    script = ("import threading\n"
              "from rag_pipeline.observability.logs import configure_logging\n"
              "configure_logging('json')\n"
              "def fail(): raise ConnectionError('in a thread')\n"
              "t = threading.Thread(target=fail, name='poller'); t.start(); t.join()\n"
              "raise RuntimeError('in the main thread')\n")
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 1
    lines = [json.loads(line) for line in ran.stderr.splitlines()]
    assert [(e["level"], e["event"]) for e in lines] == [
        ("error", "uncaught ConnectionError in thread poller: in a thread"),
        ("critical", "uncaught RuntimeError: in the main thread")]
    assert all("Traceback" in e["exc_info"] for e in lines)


# What Dagster's code server does for a run (multiprocessing's spawn) and what a run worker
# does before it imports the code location (Dagster's storage retrying through root).
RUN_WORKER_STANDIN = '''
import sqlalchemy
from dagster_postgres.utils import DagsterPostgresException, retry_pg_connection_fn


def open_storage_during_an_outage():
    def refused():
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, OSError("Connection refused"))
    try:
        retry_pg_connection_fn(refused, retry_limit=0, retry_wait=0)
    except DagsterPostgresException:
        pass
'''

SPAWNING_DEFINITIONS = '''
import multiprocessing

import dagster as dg
import run_worker_standin

worker = multiprocessing.get_context("spawn").Process(
    target=run_worker_standin.open_storage_during_an_outage)
worker.start()
worker.join()
defs = dg.Definitions()
'''


def test_a_process_spawned_by_a_dagster_process_writes_json_from_its_first_line(tmp_path):
    """A run worker's first lines (Dagster's storage retrying through the root logger before
    the code location, with its logging, is imported) are JSON too."""
    (tmp_path / "run_worker_standin.py").write_text(RUN_WORKER_STANDIN)
    (tmp_path / "spawning.py").write_text(SPAWNING_DEFINITIONS)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "LOG_FORMAT": "json"}
    ran = subprocess.run(
        [sys.executable, "-m", "rag_pipeline.observability.dagster_process", "dagster",
         "definitions", "validate", "-f", str(tmp_path / "spawning.py"), "--log-format",
         "json"], capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    not_json = [line for line in lines if not line.startswith("{")]
    assert not not_json, not_json
    retries = [e for e in map(json.loads, lines)
               if e["event"].startswith("Retrying failed database connection")]
    assert [(e["level"], e["logger"]) for e in retries] == [("warning", "root")]
