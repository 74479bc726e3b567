"""Fault scenarios: a stream of real pages through a running pipeline while something
breaks, then the counts that the invariants promise are zero.

    make reliability       # = python -m bench.faults (>= 1,000 pages per scenario)
    python -m bench.faults --pages 200 --only host_crash,go_api_hang

For each scenario: pages are published at a steady rate to a pipeline run by
dagster-daemon on fresh databases and topics; the fault starts mid-stream and ends by
itself; then the scenario waits until every job is terminal and every status delivered,
and counts (strictly, `bench/fault_accounting.py`) pages lost, pages duplicated or leaving
leftovers, statuses undelivered; and the time from each fault's end to the first model call
of the collections it blocked (recovery) and to the last page indexed (convergence).

Each scenario's result is merged into bench/results/faults.json by name as soon as it ends,
with its own commit, dirty flag, machine and times; docs/reliability.md's table is generated
from that file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from confluent_kafka import Producer

from bench.common import machine, print_table, write_results
from bench.fault_accounting import (
    count,
    first_model_call_after,
    last_page_indexed_after,
    pages_per_second,
    takeover,
)
from bench.harness import (
    RESULTS,
    ROOT,
    Model,
    PipelineRun,
    bench_stack,
    collection_messages,
    corpus,
    job_id_base,
    pipeline,
    split,
    unique_name,
)
from bench.toxiproxy import Toxiproxy, proxied
from rag_pipeline.kafka_io import KafkaOptions, producer_config
from rag_pipeline.ledger import JobLedger
from rag_pipeline.local.publishing import OutgoingMessage
from rag_pipeline.local.stack import LocalStack
from rag_pipeline.local.stack.dagster_dev import processes_with_dagster_home
from rag_pipeline.settings import Settings

# Repairs at a pace a scenario can wait for: reconcile every minute, queued jobs without a
# run are nudged after 30 s. Liveness keeps its defaults (a run silent for 60 s is dead):
# the recovery times measured are those a deployment gets.
FAST_REPAIRS = {"RECONCILE_CRON": "* * * * *", "QUEUED_JOB_GRACE_SECONDS": "30",
                "SENSOR_INTERVAL_SECONDS": "3", "LLM_MAX_CONCURRENCY": "8"}
# How long the Go API misbehaves in go_api_hang and go_api_slow.
GO_API_FAULT_SECONDS = 180.0
# When (share of the stream published) the host, or the code server, crashes.
HOST_CRASHES_AT = (0.25, 0.5, 0.75)
CODE_SERVER_CRASHES_AT = (0.3, 0.6)

DOC = ROOT / "docs" / "reliability.md"
OUT = RESULTS / "faults.json"


@dataclass
class FaultResult:
    scenario: str
    messages: int
    lost: int
    duplicated: int
    undelivered: int
    recovery_s: float | None  # worst, from a fault's end to its collections' next model call
    converge_s: float | None  # from the last fault's end to the last page indexed
    fault_s: float
    injected: bool  # False: the fault found no moment to strike (see notes)
    # Pages indexed per second, first claim to last completion (compare with no_fault).
    pages_per_s: float | None = None
    started_at: str = ""
    ended_at: str = ""
    leftovers: dict[str, int] = field(default_factory=dict)
    # Per fault that blocked collections: seconds from its end to the dead run declared
    # dead, a new run claiming the jobs, and model work, per collection.
    recovery_breakdown: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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

    def wait_for_stream(self, share: float) -> None:
        while self.progress() < share:
            time.sleep(0.2)

    def ended(self, blocked: set[str] | None = None) -> None:
        self.fault_ends.append((time.time(), blocked))

    def running_collections(self) -> set[str]:
        with self.run.ledger.pool.connection() as conn:
            return {r[0] for r in conn.execute("SELECT DISTINCT collection_id FROM "
                                               "rag_pipeline.jobs WHERE state = 'running'")}


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
    """The host dies three times: the daemon, its code server and every run worker
    SIGKILLed together (as a container restart, an OOM kill of the cgroup or a lost node
    does), then the daemon restarted at once."""
    for share in HOST_CRASHES_AT:
        ctx.wait_for_stream(share)
        _wait_for_live_inserts(ctx, 300)
        blocked = ctx.running_collections()
        killed = _kill_everything(ctx.run.deployment.home)
        ctx.notes.append(f"crash at {share:.0%}: killed {killed} processes, "
                         f"{len(blocked)} collections had runs")
        ctx.run.deployment.start_daemon()
        ctx.ended(blocked)
        _wait_until_resumed(ctx, blocked, 600)


def code_server_crash(ctx: Context) -> None:
    """The code server and the run workers it launched SIGKILLed twice; the daemon lives
    (and starts a new code server)."""
    for share in CODE_SERVER_CRASHES_AT:
        ctx.wait_for_stream(share)
        _wait_for_live_inserts(ctx, 300)
        blocked = ctx.running_collections()
        victims = [p for p in processes_with_dagster_home(ctx.run.deployment.home)
                   if p.pid != ctx.run.deployment.processes["daemon"].pid]
        for victim in victims:
            with contextlib.suppress(psutil.Error):
                victim.kill()
        ctx.notes.append(f"crash at {share:.0%}: killed the code server and run workers "
                         f"({len(victims)} processes), {len(blocked)} collections had runs")
        ctx.ended(blocked)
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
    crash does not fall into this one's recovery (each recovery is measured alone)."""
    since = ctx.fault_ends[-1][0]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.Error), ctx.run.ledger.pool.connection() as conn:
            resumed = {r[0] for r in conn.execute(
                "SELECT DISTINCT workspace FROM lightrag_doc_status WHERE workspace = ANY(%s) "
                "AND updated_at AT TIME ZONE 'UTC' > to_timestamp(%s)",
                (sorted(blocked), since)).fetchall()}
            if resumed >= blocked:
                return
        time.sleep(1)
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
    "worker_kill": worker_kill,
    "kafka_outage": kafka_outage,
    "postgres_restart": postgres_restart,
    "go_api_outage": go_api_outage,
    "go_api_hang": go_api_hang,
    "go_api_slow": go_api_slow,
    "model_rate_limits": model_rate_limits,
    "network_faults": network_faults,
}


# --- one scenario --------------------------------------------------------------------------
def publish_stream(settings: Settings, messages: list[OutgoingMessage], seconds: float,
                   sent: list[int]) -> None:
    producer = Producer({**producer_config(KafkaOptions.from_settings(settings)),
                         "message.timeout.ms": 600000})
    started = time.monotonic()
    for n, message in enumerate(messages):
        time.sleep(max(0.0, started + n * seconds / len(messages) - time.monotonic()))
        while True:
            try:
                producer.produce(settings.kafka_topic, key=message.key, value=message.value)
                break
            except BufferError:
                producer.poll(0.5)
        producer.poll(0)
        sent[0] = n + 1
    if producer.flush(600) != 0:
        raise RuntimeError("the stream's messages were not all delivered to Kafka")


def run_scenario(name: str, settings: Settings, stack: LocalStack, model: Model, pages: int,
                 stream_seconds: float, timeout_s: float = 1800) -> FaultResult:
    fault = SCENARIOS[name]
    names = [unique_name(f"{name[:6]}{i}").replace("_", "-") for i in range(4)]
    collections = split(corpus(pages, offset=0), names)
    messages, owner = collection_messages(collections, job_id_base())
    model.set(latency_ms=0)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    scope = proxied(settings, stack) if name == "network_faults" else contextlib.nullcontext(
        settings)
    with scope as effective, pipeline(effective, extra_env=_env(effective)) as run:
        time.sleep(8)
        sent = [0]
        notes: list[str] = []
        ctx = Context(settings, stack, model, run, lambda: sent[0] / len(messages), notes)
        streamer = threading.Thread(target=publish_stream,
                                    args=(run.settings, messages, stream_seconds, sent))
        streamer.start()
        fault_started = time.monotonic()
        fault(ctx)
        fault_seconds = time.monotonic() - fault_started
        streamer.join()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.OperationalError):  # PostgreSQL may be restarting
                if count(run.ledger, owner, settings.go_backend_url).settled:
                    break
            time.sleep(2)
        counts = count(run.ledger, owner, settings.go_backend_url)
        breakdown: list[dict[str, Any]] = []
        recovery = recovery_seconds(ctx, breakdown)
        last_end = ctx.fault_ends[-1][0] if ctx.fault_ends else time.time()
        converge = last_page_indexed_after(run.ledger, list(owner), last_end)
        rate = pages_per_second(run.ledger, list(owner))
        states = run.ledger.job_states()
        notes.append("jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
        with run.ledger.pool.connection() as conn:
            for job_id, error in conn.execute(
                    "SELECT job_id, last_error FROM rag_pipeline.jobs WHERE state <> 'completed' "
                    "ORDER BY job_id LIMIT 5").fetchall():
                notes.append(f"job {job_id}: {(error or '')[:300]}")
    return FaultResult(
        name, len(owner), counts.lost, counts.duplicated, counts.undelivered,
        None if recovery is None else round(recovery, 1),
        None if converge is None else round(converge, 1), round(fault_seconds, 1),
        ctx.injected, rate, started_at, datetime.now(UTC).isoformat(timespec="seconds"),
        counts.details, breakdown, notes)


def recovery_seconds(ctx: Context, breakdown: list[dict[str, Any]]) -> float | None:
    """The worst, over the faults, of the time from a fault's end to the next model work:
    for a fault that blocked collections, the first document of each of them LightRAG
    took up again (with the steps before it in `breakdown`); otherwise the first model
    answer at all."""
    worst: float | None = None
    timeline = ctx.model.timeline()
    for n, (ended, blocked) in enumerate(ctx.fault_ends, 1):
        if blocked:
            steps = {c: takeover(ctx.run.ledger, c, ended) for c in sorted(blocked)}
            breakdown.append({"fault": n, "collections": steps})
            seconds = [s["model_work_s"] for s in steps.values()]
            if None in seconds:
                ctx.notes.append(f"a collection blocked by fault {n} never resumed")
                return None
            value = max(s for s in seconds if s is not None)
        else:
            after = first_model_call_after(timeline, ended)
            if after is None:
                continue  # nothing left to index after this fault
            value = after
        worst = value if worst is None else max(worst, value)
    return worst


def _env(settings: Settings) -> dict[str, str]:
    env = dict(FAST_REPAIRS)
    env.update({"KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
                "POSTGRES_PORT": str(settings.postgres_port)})
    return env


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--stream-seconds", type=float, default=None,
                        help="how long the stream lasts (default: pages / 8)")
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    names = args.only.split(",")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from "
                     f"{', '.join(SCENARIOS)}")
    stream_seconds = args.stream_seconds or args.pages / 8
    results = []
    with bench_stack() as settings:
        stack, model = LocalStack(settings), Model(settings)
        for n, name in enumerate(names, 1):
            print(f"\n== [{n}/{len(names)}] {name}: {SCENARIOS[name].__doc__}", flush=True)
            result = run_scenario(name, settings, stack, model, args.pages, stream_seconds)
            print(asdict(result), flush=True)
            results.append(result)
            merged = merge_result(args.out, result, args.pages, stream_seconds)
            if args.out == OUT:
                write_doc(merged)
    print_table("Fault scenarios", ["scenario", "messages", "lost", "duplicated",
                                    "undelivered", "recovery s", "converge s"],
                [[r.scenario, r.messages, r.lost, r.duplicated, r.undelivered, r.recovery_s,
                  r.converge_s] for r in results])
    return json.loads(args.out.read_text())


def merge_result(path: Path, result: FaultResult, pages: int,
                 stream_seconds: float) -> dict[str, Any]:
    """Put one scenario's row into the results file by name, with its own provenance."""
    merged: dict[str, Any] = {"scenarios": {}}
    if path.exists():
        with contextlib.suppress(ValueError):
            loaded = json.loads(path.read_text())
            if isinstance(loaded.get("scenarios"), dict):  # older files had another shape
                merged = loaded
    merged["scenarios"][result.scenario] = {
        **asdict(result), "pages": pages, "stream_seconds": stream_seconds,
        "machine": machine()}
    write_results(path, merged)
    return merged


def write_doc(merged: dict[str, Any]) -> None:
    """The results table of docs/reliability.md (between its markers), generated from the
    results file: every row with the commit and date it came from."""
    begin, end = "<!-- faults:begin -->", "<!-- faults:end -->"
    text = DOC.read_text()
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    rows = []
    reference = merged["scenarios"].get("no_fault", {}).get("pages_per_s")
    for name in SCENARIOS:
        r = merged["scenarios"].get(name)
        if r is None:
            rows.append(f"| `{name}` | not run with this accounting yet | | | | | | | | | |")
            continue
        m = r["machine"]
        commit = m["commit"][:7] + (" (dirty)" if m.get("dirty") else "")
        rows.append(
            f"| `{name}` | {r['messages']} | {r['lost']} | {r['duplicated']} | "
            f"{r['undelivered']} | {_seconds(r['recovery_s'])} | {_seconds(r['converge_s'])} | "
            f"{r['fault_s']:.0f} | {_rate(r.get('pages_per_s'), reference)} | "
            f"{m['date'][:10]} | {commit}, {m['cpus']} cores, "
            f"load {m.get('load_average_1m', '?')} |")
    table = "\n".join([
        "", "| scenario | messages | lost | duplicated | undelivered | recovery s | converge s "
        "| fault s | pages/s (x no_fault) | date | commit, machine |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|", *rows, ""])
    DOC.write_text(head + begin + "\n" + table + "\n" + end + tail)


def _rate(value: float | None, reference: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" + (f" ({value / reference:.2f})" if reference else "")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


if __name__ == "__main__":
    main()
