"""The faults of `bench.faults`, one function per scenario: this module's own are crashes
and freezes of the pipeline's processes; `bench.fault_outages` has the services'.

Each fault starts mid-stream, ends by itself and records when it ended (and which
collections it blocked) in its `Context` (`bench.fault_context`), so that recovery can be
timed from that moment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from bench.fault_context import (
    Context,
    inserting_run_workers,
    kill_everything,
    wait_for_live_inserts,
    wait_until_resumed,
)
from bench.fault_outages import (
    call_hang,
    go_api_hang,
    go_api_outage,
    go_api_slow,
    kafka_outage,
    model_rate_limits,
    network_faults,
    postgres_restart,
    reindex_order,
)
from bench.harness import collection_messages, corpus, job_id_base, unique_name
from rag_pipeline.knowledge.tables import workspace_rows
from rag_pipeline.local.publishing import publish
from rag_pipeline.local.stack.dagster_dev import processes_with_dagster_home

# When (share of the stream published) the host, or the code server, crashes.
HOST_CRASHES_AT = (0.25, 0.5, 0.75)
CODE_SERVER_CRASHES_AT = (0.3, 0.6)
# How long the host stays frozen in frozen_host (past the 60 s heartbeat timeout), and how
# long its woken processes live before they are killed.
FROZEN_SECONDS = 150.0
WOKEN_SECONDS = 60.0

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
        wait_for_live_inserts(ctx, 300)
        blocked = ctx.running_collections()
        ctx.strike()
        killed = kill_everything(ctx.run.deployment.home)
        ctx.notes.append(f"crash at {share:.0%}: killed {killed} processes, "
                         f"{len(blocked)} collections had runs")
        ctx.run.deployment.start_code_server()
        ctx.run.deployment.start_daemon()
        ctx.ended(blocked)
        wait_until_resumed(ctx, blocked, 600)


def code_server_crash(ctx: Context) -> None:
    """The code server's container dies twice: the code server and the run workers it
    launched SIGKILLed together while the daemon lives; the code server is restarted at once
    (as Compose's restart policy or a Kubernetes Deployment does)."""
    for share in CODE_SERVER_CRASHES_AT:
        ctx.wait_for_stream(share)
        wait_for_live_inserts(ctx, 300)
        blocked = ctx.running_collections()
        ctx.strike()
        killed = ctx.run.deployment.crash("code_server")
        ctx.notes.append(f"crash at {share:.0%}: killed the code server and run workers "
                         f"({killed} processes), {len(blocked)} collections had runs")
        ctx.run.deployment.start_code_server()
        ctx.ended(blocked)
        wait_until_resumed(ctx, blocked, 600)


def frozen_host(ctx: Context) -> None:
    """The host freezes (a VM paused, a long stop-the-world pause, a partition): the daemon,
    the code server and every run worker SIGSTOPped together, their sockets still open; a
    replacement host (code server and daemon) starts at once; the frozen tree is woken after
    FROZEN_SECONDS and killed WOKEN_SECONDS later. Its runs were declared dead meanwhile
    (silent): woken, they must write nothing (FaultResult.zombie_writes)."""
    ctx.wait_for_stream(0.3)
    wait_for_live_inserts(ctx, 300)
    blocked = ctx.running_collections()
    frozen = processes_with_dagster_home(ctx.run.deployment.home)
    ctx.strike()
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
    wait_until_resumed(ctx, blocked, 600)


def worker_kill(ctx: Context) -> None:
    """The run worker that is inserting into LightRAG SIGKILLed mid-insert."""
    ctx.model.set(latency_ms=300)  # inserts that last long enough to be caught in the act
    ctx.wait_for_stream(0.3)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        inserting = inserting_run_workers(ctx.run.ledger)
        if inserting:
            collection, pid = inserting[0]
            ctx.strike()
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
    "reindex_order": reindex_order,
}
# The same faults with every connection to PostgreSQL (the pipeline's, LightRAG's and
# Dagster's storage) through PgBouncer in session mode (bench/pgbouncer.py): no false death,
# one writer per collection, nothing lost (docs/deployment.md, "Connection poolers").
POOLED = "pgbouncer_"
SCENARIOS.update({POOLED + name: SCENARIOS[name]
                  for name in ("no_fault", "worker_kill", "host_crash")})



# drop_crash: the pages of the collection dropped (outside the stream's accounting) and the
# rows per delete statement, small enough for the kill to land midway.
VICTIM_PAGES = 60
DROP_BATCH_ROWS = 50


def drop_crash(ctx: Context) -> None:
    """A collection outside the stream (VICTIM_PAGES pages, indexed first) is dropped with
    `rag-pipeline drop` mid-stream; the drop's process group is SIGKILLed once it has
    removed some rows, and the drop is run again: it must finish with 0 rows of that
    workspace in every LightRAG table (else counted as duplicated), while the stream's
    collections are indexed beside it (the accounting counts those)."""
    victim = unique_name("victim").replace("_", "-")
    messages, _ = collection_messages({victim: corpus(VICTIM_PAGES, offset=ctx.pages)},
                                      job_id_base() + 10_000_000)
    publish(ctx.run.settings, messages)
    ledger = ctx.run.ledger
    deadline = time.monotonic() + 600
    while ledger.job_states(victim).get("completed", 0) < VICTIM_PAGES:
        if time.monotonic() > deadline:
            ctx.notes.append(f"{victim} not indexed in 600 s: {ledger.job_states(victim)}")
            ctx.injected = False
            return
        time.sleep(1)
    ctx.wait_for_stream(0.4)
    argv = [str(Path(sys.executable).with_name("rag-pipeline")), "drop", "--collection", victim,
            "--yes", "--batch-rows", str(DROP_BATCH_ROWS)]
    env = ctx.run.deployment.env
    drop = subprocess.Popen(argv, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    removed = 0
    while drop.poll() is None and not removed:
        with contextlib.suppress(LookupError):
            removed = sum(ledger.drop_of(victim).rows.values())
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(drop.pid, signal.SIGKILL)
    drop.wait(30)
    with ledger.pool.connection() as conn:
        left = sum(workspace_rows(conn, victim).values())
    ctx.notes.append(f"drop of {victim} killed with {removed} rows removed, {left} left "
                     f"(exit {drop.returncode})")
    ctx.injected = drop.returncode == -signal.SIGKILL and left > 0
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    with ledger.pool.connection() as conn:
        ctx.left_behind = sum(workspace_rows(conn, victim).values())
    ctx.notes.append(f"drop run again: exit {again.returncode}, {ctx.left_behind} rows left; "
                     + (again.stdout.strip().splitlines() or [""])[-1][:200])
    ctx.ended(set())


SCENARIOS["drop_crash"] = drop_crash
