"""Run start: from a page's produce to its run's first model request, step by step; and the
first page after the pipeline sat idle (cold).

    python -m bench.start [--runs 3] [--idle-minutes 10]

One collection at a time, on a deployment with no other work (production topology: code
server, daemon). Each start is read from Dagster's own event log (its PostgreSQL storage)
and the stand-in model's first request:

  produce -> run requested (sensor tick) -> run launched (run queue) -> run worker up
  (process start, code location loaded) -> step started (resources) -> first model request
  (lease, claim, LightRAG workspace opened, page decoded, cleaned, enqueued, chunked)

The cold case starts a deployment with the production settings, leaves it without work for
`--idle-minutes`, publishes one page and times produce -> its `completed` PATCH at the Go
API stand-in.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.common import machine, print_table, write_results
from bench.harness import (
    RESULTS,
    Model,
    PipelineRun,
    bench_stack,
    collection_messages,
    corpus,
    job_id_base,
    pipeline,
    send,
    unique_name,
    wait_terminal,
)
from rag_pipeline.dagster_runs import COLLECTION_TAG
from rag_pipeline.settings import Settings

# Dagster's event types, in the order a run passes them.
PHASES = [("run requested", None), ("run launched", "PIPELINE_STARTING"),
          ("run worker up", "PIPELINE_START"), ("step started", "STEP_START")]
LATENCY_MS = 300.0
PAGES_PER_START = 10
# Runs end soon after their pages (the next start must be a start, not a lingering run).
ENV = {"RUN_IDLE_SECONDS": "2", "SENSOR_INTERVAL_SECONDS": "5"}


def dagster_times(run: PipelineRun, collection: str) -> dict[str, float]:
    """When the collection's (first) run was created and passed each event, epoch seconds."""
    s = run.settings
    with psycopg.connect(host=s.postgres_host, port=s.postgres_port, user=s.postgres_user,
                         password=s.postgres_password.get_secret_value(),
                         dbname=run.dagster_db) as conn:
        row = conn.execute(
            "SELECT r.run_id, extract(epoch FROM r.create_timestamp) FROM runs r "
            "JOIN run_tags t ON t.run_id = r.run_id WHERE t.key = %s AND t.value = %s "
            "ORDER BY r.create_timestamp LIMIT 1", (COLLECTION_TAG, collection)).fetchone()
        if row is None:
            raise RuntimeError(f"no Dagster run for collection {collection}")
        run_id, created = row
        events = dict(conn.execute(
            "SELECT dagster_event_type, extract(epoch FROM min(timestamp)) FROM event_logs "
            "WHERE run_id = %s AND dagster_event_type IS NOT NULL GROUP BY 1",
            (run_id,)).fetchall())
    times = {"run requested": float(created)}
    for phase, event in PHASES[1:]:
        if event in events:
            times[phase] = float(events[event])
    return times


def completed_at(settings: Settings, job_ids: list[int]) -> dict[int, float]:
    """When the Go API stand-in received each job's `completed` status."""
    calls = httpx.get(f"{settings.go_backend_url}/calls", timeout=30).json()
    wanted = set(job_ids)
    done: dict[int, float] = {}
    for call in calls:
        if call["job_id"] in wanted and call["status"] == "completed" and call["answered"] == 200:
            done.setdefault(call["job_id"], call["received_at"])
    return done


def one_start(run: PipelineRun, model: Model, offset: int) -> dict[str, Any]:
    collection = unique_name("start").replace("_", "-")
    messages, owner = collection_messages({collection: corpus(PAGES_PER_START, offset)},
                                          job_id_base())
    model.reset()
    produced = time.time()
    send(run.settings, messages)
    wait_terminal(run.ledger, list(owner))
    first_request = model.stats()["first_chat_at"]
    times = {"produced": produced, **dagster_times(run, collection),
             "first model request": first_request}
    order = ["produced", *[p for p, _ in PHASES], "first model request"]
    steps = {f"{a} -> {b}": round(times[b] - times[a], 2)
             for a, b in itertools.pairwise(order) if a in times and b in times}
    time.sleep(float(ENV["RUN_IDLE_SECONDS"]) + 3)  # the run ends before the next start
    return {"collection": collection, "steps_s": steps,
            "launch_to_first_model_request_s": round(first_request - times["run launched"], 2),
            "produce_to_first_model_request_s": round(first_request - produced, 2)}


@contextlib.contextmanager
def idle_deployment(settings: Settings) -> Iterator[PipelineRun]:
    with pipeline(settings, extra_env=ENV) as run:
        time.sleep(8)  # the daemon's first ticks
        yield run


def cold_page(run: PipelineRun, model: Model, idle_minutes: float, offset: int
              ) -> dict[str, Any]:
    """One page after `idle_minutes` without work on a deployment: produce -> its
    `completed` PATCH at the Go API stand-in."""
    idle_since = time.time()
    time.sleep(idle_minutes * 60)
    collection = unique_name("cold").replace("_", "-")
    messages, owner = collection_messages({collection: corpus(1, offset)}, job_id_base())
    model.set(latency_ms=LATENCY_MS)
    produced = time.time()
    send(run.settings, messages)
    wait_terminal(run.ledger, list(owner))
    deadline = time.monotonic() + 60
    done: dict[int, float] = {}
    while time.monotonic() < deadline and not done:
        done = completed_at(run.settings, list(owner))
        time.sleep(0.5)
    return {"idle_minutes": round((produced - idle_since) / 60, 1),
            "produce_to_completed_patch_s": round(next(iter(done.values())) - produced, 2)
            if done else None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle-minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "start.json")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"machine": machine(), "settings": {
        "model_latency_ms": LATENCY_MS, "pages_per_start": PAGES_PER_START, **ENV}}
    with bench_stack() as settings:
        model = Model(settings)
        with idle_deployment(settings) as run:
            model.set(latency_ms=LATENCY_MS)
            starts = [one_start(run, model, offset=700 + 20 * i) for i in range(args.runs)]
        # The cold page: a deployment with production settings, idle since it started.
        with pipeline(settings) as run:
            cold = cold_page(run, model, args.idle_minutes, offset=780)
    launch = [s["launch_to_first_model_request_s"] for s in starts]
    results.update(starts=starts, cold=cold,
                   launch_to_first_model_request_s={"median": statistics.median(launch),
                                                    "max": max(launch)})
    report(results)
    write_results(args.out, results)
    return results


def report(results: dict[str, Any]) -> None:
    starts = results["starts"]
    steps = list(starts[0]["steps_s"])
    print_table("Run start (one run alone, seconds)", ["step", *[f"start {i + 1}" for i in
                                                                 range(len(starts))]],
                [[step, *[s["steps_s"].get(step) for s in starts]] for step in steps]
                + [["launch -> first model request",
                    *[s["launch_to_first_model_request_s"] for s in starts]]])
    cold = results["cold"]
    print(f"cold page after {cold['idle_minutes']} idle minutes: produce -> completed PATCH "
          f"{cold['produce_to_completed_patch_s']} s")


if __name__ == "__main__":
    main()
