"""The faults of services around the runs: a LightRAG statement that hangs, Kafka, PostgreSQL,
the Go API and the model misbehaving, the network, and statuses that change after a
reindex (`bench.fault_scenarios` registers them)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import psycopg

from bench.dagster_graphql import launch_backfill, wait_for_backfill
from bench.fault_context import Context, documents_in_progress, wait_for_live_inserts
from bench.toxiproxy import Toxiproxy
from rag_pipeline.local.stack.deployment import free_port

# How long the Go API misbehaves in go_api_hang and go_api_slow.
GO_API_FAULT_SECONDS = 180.0
# How long call_hang blocks LightRAG's statements: past their deadline (120 s).
CALL_HANG_SECONDS = 150.0


def call_hang(ctx: Context) -> None:
    """LightRAG's statements hang mid-run: a lock held on its document-status table (which
    every insert and every status read touches) for CALL_HANG_SECONDS, past the statements'
    deadline, while the runs' connections stay open. No collection may stay blocked: calls
    end at their deadline, pages are tried again, runs that stop progressing are replaced."""
    ctx.model.set(latency_ms=300)  # inserts that last long enough to be caught in the act
    ctx.wait_for_stream(0.3)
    wait_for_live_inserts(ctx, 300)
    with psycopg.connect(ctx.settings.postgres_conninfo(ctx.run.pipeline_db),
                         **ctx.settings.postgres_kwargs()) as conn:
        conn.execute("LOCK TABLE lightrag_doc_status IN ACCESS EXCLUSIVE MODE")
        time.sleep(CALL_HANG_SECONDS)
        conn.rollback()
    ctx.ended()
    ctx.model.set(latency_ms=0)


def kafka_outage(ctx: Context) -> None:
    """The Kafka broker stopped for 60 s mid-stream, then started again."""
    ctx.wait_for_stream(0.4)
    ctx.stack.kafka.stop()
    time.sleep(60)
    ctx.stack.kafka.start()
    ctx.ended()


def postgres_restart(ctx: Context) -> None:
    """PostgreSQL restarted (fast shutdown) while runs are writing."""
    ctx.model.set(latency_ms=300)  # inserts that last long enough to be caught in the act
    ctx.wait_for_stream(0.3)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not documents_in_progress(ctx.run.ledger):
        time.sleep(0.2)
    if time.monotonic() >= deadline:
        ctx.notes.append("no run was caught writing")
        ctx.injected = False
    ctx.strike()  # an answer LightRAG has not cached yet cannot be cached while it is down
    ctx.stack.postgres.stop()
    ctx.stack.postgres.start()
    ctx.ended()
    ctx.model.set(latency_ms=0)


def go_api_outage(ctx: Context, down_s: float = 120, errors_s: float = 60) -> None:
    """The Go API stand-in down for 2 minutes, then answering 500 for another minute."""
    ctx.wait_for_stream(0.2)
    ctx.stack.go_api.stop()
    time.sleep(down_s)
    ctx.stack.go_api.start()
    _go_api_control(ctx, fail_status=500, fail_seconds=errors_s)
    time.sleep(errors_s)
    ctx.ended()


def go_api_hang(ctx: Context) -> None:
    """The Go API accepts connections and answers nothing for 3 minutes, then recovers."""
    ctx.wait_for_stream(0.2)
    _go_api_control(ctx, hang_seconds=GO_API_FAULT_SECONDS)
    time.sleep(GO_API_FAULT_SECONDS)
    ctx.ended()


def go_api_slow(ctx: Context) -> None:
    """Every status PATCH takes 5 s for 3 minutes."""
    ctx.wait_for_stream(0.2)
    _go_api_control(ctx, delay_ms=5000)
    time.sleep(GO_API_FAULT_SECONDS)
    _go_api_control(ctx, delay_ms=0)
    ctx.ended()


def _go_api_control(ctx: Context, **knobs: Any) -> None:
    httpx.post(f"{ctx.settings.go_backend_url}/control", json=knobs, timeout=10)


def model_rate_limits(ctx: Context) -> None:
    """The model answering 429 to 30% of requests, with latency spikes, all stream long."""
    ctx.model.set(latency_ms=100, fail_rate=0.3, fail_status=429, spike_rate=0.05,
                  spike_ms=3000)
    ctx.wait_for_stream(1.0)
    time.sleep(20)
    ctx.model.set(latency_ms=0)  # every other knob back to its default (spikes off)
    ctx.ended()


def network_faults(ctx: Context) -> None:
    """Through Toxiproxy: latency on Kafka and PostgreSQL, then connection resets."""
    ctx.wait_for_stream(0.25)
    proxy = Toxiproxy()
    for name in ("kafka", "postgres"):
        proxy.toxic(name, "latency", {"latency": 150, "jitter": 100})
    time.sleep(30)
    proxy.clear()
    ctx.strike()  # a reset connection can lose LightRAG's write of an answer to its cache
    for name in ("kafka", "postgres"):
        proxy.toxic(name, "reset_peer", {"timeout": 500}, toxicity=0.3)
    time.sleep(15)
    proxy.clear()
    ctx.ended()


def reindex_order(ctx: Context) -> None:
    """Statuses that change after a reindex arrive in order: every page fails (the model
    refuses its extraction) while the Go API is down; the model is fixed and every
    collection reindexed by a backfill of `reindex_collection` launched as the UI does;
    then the Go API comes back. Each job has `failed` then `completed` waiting in the
    outbox: the Go API must end on `completed`, having accepted them in that order."""
    ctx.model.set(refuse_text=REFUSED_TEXT)
    ctx.stack.go_api.stop()
    ctx.wait_for_stream(1.0)
    wait_until_settled(ctx, 600)
    ctx.notes.append("before the reindex: " + ", ".join(
        f"{n} {s}" for s, n in sorted(ctx.run.ledger.job_states().items())))
    ctx.model.set(latency_ms=0)  # refusals off
    ctx.ended()
    graphql = ctx.run.deployment.start_webserver(free_port()) + "/graphql"
    backfill = launch_backfill(graphql, "reindex_collection", ctx.collections)
    ctx.notes.append(f"backfill {backfill}: {wait_for_backfill(graphql, backfill, 900)}")
    ctx.stack.go_api.start()


# Every extraction prompt of LightRAG has it: the stand-in model refuses every page.
REFUSED_TEXT = "---Input Text---"


def wait_until_settled(ctx: Context, seconds: float) -> None:
    """Until every published page's job is terminal."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        states = ctx.run.ledger.job_states()
        if sum(states.values()) >= ctx.pages and not {"queued", "running"} & set(states):
            return
        time.sleep(2)
    ctx.notes.append(f"pages not all terminal after {seconds:.0f} s")
