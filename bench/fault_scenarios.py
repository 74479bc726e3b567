"""The faults of `bench.faults`, one function per scenario, and what they share.

Each fault starts mid-stream, ends by itself and records when it ended (and which
collections it blocked) in its `Context`, so that recovery can be timed from that moment.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from bench.fault_accounting import takeover
from bench.harness import Model, PipelineRun
from bench.toxiproxy import Toxiproxy
from rag_pipeline.dagster_runs import COLLECTION_TAG
from rag_pipeline.ledger import JobLedger
from rag_pipeline.local.stack import LocalStack
from rag_pipeline.local.stack.dagster_dev import processes_with_dagster_home
from rag_pipeline.settings import Settings

# How long the Go API misbehaves in go_api_hang and go_api_slow.
GO_API_FAULT_SECONDS = 180.0
# When (share of the stream published) the host, or the code server, crashes.
HOST_CRASHES_AT = (0.25, 0.5, 0.75)
CODE_SERVER_CRASHES_AT = (0.3, 0.6)
# How long the host stays frozen in frozen_host (past the 60 s heartbeat timeout), and how
# long its woken processes live before they are killed.
FROZEN_SECONDS = 150.0
WOKEN_SECONDS = 60.0
# How long call_hang blocks LightRAG's statements: past their deadline (120 s).
CALL_HANG_SECONDS = 150.0


@dataclass
class Context:
    settings: Settings
    stack: LocalStack
    model: Model
    run: PipelineRun
    progress: Callable[[], float]  # share of the stream published so far
    notes: list[str]
    injected: bool = True
    # (epoch time a fault ended, collections it blocked: None means every collection)
    fault_ends: list[tuple[float, set[str] | None]] = field(default_factory=list)
    # Per fault (index into fault_ends): collection -> the takeover steps, as observed live
    # (the ledger's and LightRAG's timestamps are overwritten when a later crash hits the
    # run that took over, so they cannot be read back afterwards).
    takeovers: dict[int, dict[str, dict[str, float | None]]] = field(default_factory=dict)

    def wait_for_stream(self, share: float) -> None:
        while self.progress() < share:
            time.sleep(0.2)

    def ended(self, blocked: set[str] | None = None) -> None:
        self.fault_ends.append((time.time(), blocked))

    def running_collections(self) -> set[str]:
        """Collections that a crash now would block: with jobs running, or with a run that
        Dagster is starting or has started (a run killed while starting blocks too)."""
        with self.run.ledger.pool.connection() as conn:
            running = {r[0] for r in conn.execute("SELECT DISTINCT collection_id FROM "
                                                  "rag_pipeline.jobs WHERE state = 'running'")}
        with psycopg.connect(self.settings.postgres_conninfo(self.run.dagster_db),
                             **self.settings.postgres_kwargs()) as conn:
            running |= {r[0] for r in conn.execute(
                "SELECT t.value FROM runs r JOIN run_tags t ON t.run_id = r.run_id "
                "AND t.key = %s WHERE r.status IN ('STARTING', 'STARTED')", (COLLECTION_TAG,))}
        return running



# --- faults ------------------------------------------------------------------------------
def no_fault(ctx: Context) -> None:
    """Nothing breaks: the reference for the other scenarios' pages per second."""
    ctx.wait_for_stream(1.0)
    ctx.ended()


def daemon_kills(ctx: Context) -> None:
    """dagster-daemon SIGKILLed five times during the stream, restarted each time."""
    for share in (0.15, 0.3, 0.45, 0.6, 0.75):
        ctx.wait_for_stream(share)
        ctx.run.deployment.kill("daemon")
        time.sleep(3)
        ctx.run.deployment.start_daemon()
        ctx.ended()


def host_crash(ctx: Context) -> None:
    """The host dies three times: the daemon, the code server and every run worker
    SIGKILLed together (as a container restart, an OOM kill of the cgroup or a lost node
    does), then the code server and the daemon restarted at once (as an orchestrator
    would)."""
    for share in HOST_CRASHES_AT:
        ctx.wait_for_stream(share)
        _wait_for_live_inserts(ctx, 300)
        blocked = ctx.running_collections()
        killed = _kill_everything(ctx.run.deployment.home)
        ctx.notes.append(f"crash at {share:.0%}: killed {killed} processes, "
                         f"{len(blocked)} collections had runs")
        ctx.run.deployment.start_code_server()
        ctx.run.deployment.start_daemon()
        ctx.ended(blocked)
        _wait_until_resumed(ctx, blocked, 600)


def code_server_crash(ctx: Context) -> None:
    """The code server's container dies twice: the code server and the run workers it
    launched SIGKILLed together while the daemon lives; the code server is restarted at once
    (as Compose's restart policy or a Kubernetes Deployment does)."""
    for share in CODE_SERVER_CRASHES_AT:
        ctx.wait_for_stream(share)
        _wait_for_live_inserts(ctx, 300)
        blocked = ctx.running_collections()
        killed = ctx.run.deployment.crash("code_server")
        ctx.notes.append(f"crash at {share:.0%}: killed the code server and run workers "
                         f"({killed} processes), {len(blocked)} collections had runs")
        ctx.run.deployment.start_code_server()
        ctx.ended(blocked)
        _wait_until_resumed(ctx, blocked, 600)


def frozen_host(ctx: Context) -> None:
    """The host freezes (a VM paused, a long stop-the-world pause, a partition): the daemon,
    the code server and every run worker SIGSTOPped together, their sockets still open; a
    replacement host (code server and daemon) starts at once; the frozen tree is woken after
    FROZEN_SECONDS and killed WOKEN_SECONDS later. Its runs were declared dead meanwhile
    (silent): woken, they must write nothing (FaultResult.zombie_writes)."""
    ctx.wait_for_stream(0.3)
    _wait_for_live_inserts(ctx, 300)
    blocked = ctx.running_collections()
    frozen = processes_with_dagster_home(ctx.run.deployment.home)
    for process in frozen:
        with contextlib.suppress(psutil.Error):
            process.suspend()
    ctx.notes.append(f"froze {len(frozen)} processes, {len(blocked)} collections had runs")
    ctx.run.deployment.relocate_code_server()
    ctx.run.deployment.start_code_server()
    ctx.run.deployment.start_daemon()
    ctx.ended(blocked)
    time.sleep(FROZEN_SECONDS)
    for process in frozen:
        with contextlib.suppress(psutil.Error):
            process.resume()
    time.sleep(WOKEN_SECONDS)
    for process in frozen:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(frozen, timeout=30)
    _wait_until_resumed(ctx, blocked, 600)


def worker_kill(ctx: Context) -> None:
    """The run worker that is inserting into LightRAG SIGKILLed mid-insert."""
    ctx.model.set(latency_ms=300)  # inserts that last long enough to be caught in the act
    ctx.wait_for_stream(0.3)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        inserting = _inserting_run_workers(ctx.run.ledger)
        if inserting:
            collection, pid = inserting[0]
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
                ctx.notes.append(f"killed run worker {pid} while it inserted into {collection}")
                ctx.ended({collection})
                break
        time.sleep(0.2)
    else:
        ctx.notes.append("no run worker was caught mid-insert")
        ctx.injected = False
    ctx.model.set(latency_ms=0)


def _inserting_run_workers(ledger: JobLedger) -> list[tuple[str, int]]:
    """(collection, pid) of runs whose workspace has documents being processed, from the
    process name each run records with its heartbeat (rag-pipeline:host:pid:token)."""
    with ledger.pool.connection() as conn:
        if not conn.execute("SELECT to_regclass('public.lightrag_doc_status')").fetchone()[0]:
            return []
        rows = conn.execute(
            "SELECT r.collection_id, r.process FROM rag_pipeline.runs r WHERE "
            "r.finished_at IS NULL AND r.declared_dead_at IS NULL AND r.process IS NOT NULL "
            "AND EXISTS (SELECT 1 FROM lightrag_doc_status s WHERE s.workspace = "
            "r.collection_id AND s.status = 'processing')").fetchall()
    return [(collection, int(process.split(":")[2])) for collection, process in rows]


def _wait_for_live_inserts(ctx: Context, seconds: float) -> None:
    """Until a live run worker is inserting (a crash right after a restart would only hit
    the daemon); noted when none came."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(psutil.pid_exists(pid) for _, pid in _inserting_run_workers(ctx.run.ledger)):
            return
        time.sleep(0.5)
    ctx.notes.append(f"no run worker was inserting within {seconds:.0f} s; crashed anyway")


def _wait_until_resumed(ctx: Context, blocked: set[str], seconds: float) -> None:
    """Until LightRAG took up a document of each blocked collection again, so that the next
    crash does not fall into this one's recovery (each recovery is measured alone). Records
    each collection's takeover steps the first time each is seen."""
    since = ctx.fault_ends[-1][0]
    seen = ctx.takeovers.setdefault(len(ctx.fault_ends) - 1, {})
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.Error):
            for collection in sorted(blocked):
                steps = seen.setdefault(collection, {})
                if steps.get("model_work_s") is not None:
                    continue
                for name, value in takeover(ctx.run.ledger, collection, since).items():
                    if steps.get(name) is None:
                        steps[name] = value
            if all(seen[c].get("model_work_s") is not None for c in blocked):
                return
        time.sleep(0.5)
    ctx.notes.append(f"blocked collections had not resumed {seconds:.0f} s after a crash")


def _kill_everything(home: Path) -> int:
    """SIGKILL every process of this deployment at once, as a dying host does."""
    victims = processes_with_dagster_home(home)
    for victim in victims:
        with contextlib.suppress(psutil.Error):
            victim.kill()
    psutil.wait_procs(victims, timeout=30)
    return len(victims)


def _documents_in_progress(ledger: JobLedger) -> int:
    with ledger.pool.connection() as conn:
        exists = conn.execute("SELECT to_regclass('public.lightrag_doc_status')").fetchone()[0]
        if not exists:
            return 0
        return conn.execute("SELECT count(*) FROM lightrag_doc_status WHERE status IN "
                            "('processing', 'pending', 'parsing')").fetchone()[0]


def call_hang(ctx: Context) -> None:
    """LightRAG's statements hang mid-run: a lock held on its document-status table (which
    every insert and every status read touches) for CALL_HANG_SECONDS, past the statements'
    deadline, while the runs' connections stay open. No collection may stay blocked: calls
    end at their deadline, pages are tried again, runs that stop progressing are replaced."""
    ctx.model.set(latency_ms=300)  # inserts that last long enough to be caught in the act
    ctx.wait_for_stream(0.3)
    _wait_for_live_inserts(ctx, 300)
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
    while time.monotonic() < deadline and not _documents_in_progress(ctx.run.ledger):
        time.sleep(0.2)
    if time.monotonic() >= deadline:
        ctx.notes.append("no run was caught writing")
        ctx.injected = False
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
    for name in ("kafka", "postgres"):
        proxy.toxic(name, "reset_peer", {"timeout": 500}, toxicity=0.3)
    time.sleep(15)
    proxy.clear()
    ctx.ended()


SCENARIOS: dict[str, Callable[[Context], None]] = {
    "no_fault": no_fault,
    "daemon_kills": daemon_kills,
    "host_crash": host_crash,
    "code_server_crash": code_server_crash,
    "frozen_host": frozen_host,
    "worker_kill": worker_kill,
    "call_hang": call_hang,
    "kafka_outage": kafka_outage,
    "postgres_restart": postgres_restart,
    "go_api_outage": go_api_outage,
    "go_api_hang": go_api_hang,
    "go_api_slow": go_api_slow,
    "model_rate_limits": model_rate_limits,
    "network_faults": network_faults,
}

