"""Fault scenarios: a stream of real pages through a running pipeline while something
breaks, then the counts that the invariants promise are zero.

    make reliability       # = python -m bench.faults (>= 1,000 pages per scenario)
    python -m bench.faults --pages 200 --only daemon_kills,postgres_restart

For each scenario: pages are published at a steady rate to a pipeline run by
dagster-daemon on fresh databases and topics; the fault starts mid-stream and ends by
itself; then the scenario waits until every job is terminal and every status delivered,
and counts:

- lost: valid jobs published that never reached a terminal state;
- duplicated: LightRAG documents beyond one per (collection, url), plus chunks of no
  processed document (leftovers of an interrupted insert);
- undelivered: terminal jobs without an accepted status at the Go API stand-in;
- converge_s: from the end of the fault to the moment all of the above settled.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from confluent_kafka import Producer

from bench.common import machine, print_table, write_results
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
from rag_pipeline.kafka_io import KafkaOptions, producer_config
from rag_pipeline.ledger import JobLedger
from rag_pipeline.local.publishing import OutgoingMessage
from rag_pipeline.local.stack import LocalStack
from rag_pipeline.settings import Settings

TOXIPROXY_VERSION = "v2.12.0"
TOXIPROXY_API = "http://127.0.0.1:28474"
# Repairs at a pace a scenario can wait for: reconcile every minute, queued jobs without a
# run are nudged after 30 s. Liveness keeps its defaults (a run silent for 60 s is dead):
# the recovery times measured are those a deployment gets.
FAST_REPAIRS = {"RECONCILE_CRON": "* * * * *", "QUEUED_JOB_GRACE_SECONDS": "30",
                "SENSOR_INTERVAL_SECONDS": "3", "LLM_MAX_CONCURRENCY": "8"}

DOC = ROOT / "docs" / "reliability.md"


@dataclass
class FaultResult:
    scenario: str
    messages: int
    lost: int
    duplicated: int
    undelivered: int
    converge_s: float
    fault_s: float
    injected: bool  # False: the fault found no moment to strike (see notes)
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

    def wait_for_stream(self, share: float) -> None:
        while self.progress() < share:
            time.sleep(0.2)


# --- faults ------------------------------------------------------------------------------
def daemon_kills(ctx: Context) -> None:
    """dagster-daemon SIGKILLed five times during the stream, restarted each time."""
    for share in (0.15, 0.3, 0.45, 0.6, 0.75):
        ctx.wait_for_stream(share)
        ctx.run.deployment.kill("daemon")
        time.sleep(3)
        ctx.run.deployment.start_daemon()


def worker_kill(ctx: Context) -> None:
    """A run's worker process SIGKILLed in the middle of LightRAG insertion."""
    ctx.model.set(latency_ms=300)  # inserts that last long enough to be caught in the act
    ctx.wait_for_stream(0.3)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        workers = _run_workers(ctx.run.deployment.home)
        inserting = _documents_in_progress(ctx.run.ledger)
        if workers and inserting:
            workers[0].kill()
            ctx.notes.append(f"killed run worker {workers[0].pid} with {inserting} documents "
                             "being processed")
            break
        time.sleep(0.2)
    else:
        ctx.notes.append("no run worker was caught mid-insert")
        ctx.injected = False
    ctx.model.set(latency_ms=0)


def _run_workers(home: Path) -> list[psutil.Process]:
    """Run worker processes: the code server starts each run in a spawned child
    (`multiprocessing-fork`); other launchers use `dagster api execute_run`."""
    return [p for p in psutil.process_iter(["cmdline"])
            if any(mark in " ".join(p.info["cmdline"] or [])
                   for mark in ("multiprocessing-fork", "execute_run"))
            and "resource_tracker" not in " ".join(p.info["cmdline"] or [])
            and _owned_by(p, home)]


def _owned_by(process: psutil.Process, home: Path) -> bool:
    with contextlib.suppress(psutil.Error):
        return process.environ().get("DAGSTER_HOME") == str(home)
    return False


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
    ctx.model.set(latency_ms=0)


def go_api_outage(ctx: Context, down_s: float = 120, errors_s: float = 60) -> None:
    """The Go API stand-in down for 2 minutes, then answering 500 for another minute."""
    ctx.wait_for_stream(0.2)
    ctx.stack.go_api.stop()
    time.sleep(down_s)
    ctx.stack.go_api.start()
    httpx.post(f"{ctx.settings.go_backend_url}/control",
               json={"fail_status": 500, "fail_seconds": errors_s})
    time.sleep(errors_s)


def model_rate_limits(ctx: Context) -> None:
    """The model answering 429 to 30% of requests, with latency spikes, all stream long."""
    ctx.model.set(latency_ms=100, fail_rate=0.3, fail_status=429, spike_rate=0.05,
                  spike_ms=3000)
    ctx.wait_for_stream(1.0)
    time.sleep(20)
    ctx.model.set(latency_ms=0)


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


SCENARIOS: dict[str, Callable[[Context], None]] = {
    "daemon_kills": daemon_kills,
    "worker_kill": worker_kill,
    "kafka_outage": kafka_outage,
    "postgres_restart": postgres_restart,
    "go_api_outage": go_api_outage,
    "model_rate_limits": model_rate_limits,
    "network_faults": network_faults,
}


# --- Toxiproxy ---------------------------------------------------------------------------
def toxiproxy_binary() -> Path:
    """Toxiproxy's server, built with the Go toolchain once (cached in .stack-bench)."""
    target = ROOT / ".stack-bench" / "toxiproxy" / "toxiproxy-server"
    if target.exists():
        return target
    if shutil.which("go") is None:
        raise SystemExit("network_faults needs Go to build Toxiproxy (go install)")
    gobin = target.parent
    gobin.mkdir(parents=True, exist_ok=True)
    subprocess.run(["go", "install",
                    f"github.com/Shopify/toxiproxy/v2/cmd/server@{TOXIPROXY_VERSION}"],
                   env={**os.environ, "GOBIN": str(gobin)}, check=True, timeout=900)
    (gobin / "server").rename(target)
    return target


class Toxiproxy:
    def __init__(self) -> None:
        self.http = httpx.Client(base_url=TOXIPROXY_API, timeout=10)

    def proxy(self, name: str, listen: str, upstream: str) -> None:
        self.http.post("/proxies", json={"name": name, "listen": listen, "upstream": upstream,
                                         "enabled": True}).raise_for_status()

    def toxic(self, proxy: str, kind: str, attributes: dict[str, Any],
              toxicity: float = 1.0) -> None:
        for stream in ("upstream", "downstream"):
            self.http.post(f"/proxies/{proxy}/toxics", json={
                "name": f"{kind}_{stream}", "type": kind, "stream": stream,
                "toxicity": toxicity, "attributes": attributes}).raise_for_status()

    def clear(self) -> None:
        for name in self.http.get("/proxies").json():
            for toxic in self.http.get(f"/proxies/{name}/toxics").json():
                self.http.delete(f"/proxies/{name}/toxics/{toxic['name']}")


@contextlib.contextmanager
def proxied(settings: Settings, stack: LocalStack) -> Iterator[Settings]:
    """Kafka and PostgreSQL behind Toxiproxy: the settings the pipeline then uses."""
    server = subprocess.Popen([str(toxiproxy_binary()), "-host", "127.0.0.1", "-port",
                               "28474"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    kafka_proxy, pg_proxy = 29192, 25532
    try:
        time.sleep(1)
        proxy = Toxiproxy()
        proxy.proxy("kafka", f"127.0.0.1:{kafka_proxy}", settings.kafka_bootstrap_servers)
        proxy.proxy("postgres", f"127.0.0.1:{pg_proxy}",
                     f"{settings.postgres_host}:{settings.postgres_port}")
        # The broker must send clients back through the proxy.
        advertised = settings.model_copy(update={"kafka_advertised_port": kafka_proxy})
        stack.kafka.stop()
        LocalStack(advertised).kafka.start()
        yield settings.model_copy(update={
            "kafka_bootstrap_servers": f"127.0.0.1:{kafka_proxy}", "postgres_port": pg_proxy,
            "kafka_advertised_port": kafka_proxy})
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        stack.kafka.stop()
        stack.kafka.start()


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


def count(ledger: JobLedger, owner: dict[int, str], go_api: str) -> tuple[int, int, int]:
    job_ids = list(owner)
    with ledger.pool.connection() as conn:
        terminal = conn.execute("SELECT count(*) FROM rag_pipeline.jobs WHERE job_id = ANY(%s) "
                                "AND state IN ('completed', 'failed', 'dead')",
                                (job_ids,)).fetchone()[0]
        collections = sorted(set(owner.values()))
        if not conn.execute("SELECT to_regclass('public.lightrag_doc_chunks')").fetchone()[0]:
            extra_docs = orphans = 0  # LightRAG has not created its tables yet
        else:
            extra_docs, orphans = _duplicates(conn, collections)
    accepted = {c["job_id"] for c in httpx.get(f"{go_api}/calls", timeout=60).json()
                if c["answered"] == 200}
    undelivered = terminal - len(accepted & set(job_ids))
    return len(job_ids) - terminal, extra_docs + orphans, undelivered


def _duplicates(conn: Any, collections: list[str]) -> tuple[int, int]:
    """Documents beyond one per (collection, url), and chunks of no processed document."""
    extra_docs = conn.execute(
        "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) n FROM lightrag_doc_status "
        "WHERE workspace = ANY(%s) AND status = 'processed' GROUP BY workspace, file_path) d "
        "WHERE n > 1", (collections,)).fetchone()[0]
    orphans = conn.execute(
        "SELECT count(*) FROM lightrag_doc_chunks c WHERE c.workspace = ANY(%s) AND NOT "
        "EXISTS (SELECT 1 FROM lightrag_doc_status s WHERE s.workspace = c.workspace AND "
        "s.id = c.full_doc_id AND s.status = 'processed')", (collections,)).fetchone()[0]
    return int(extra_docs), int(orphans)


def run_scenario(name: str, settings: Settings, stack: LocalStack, model: Model, pages: int,
                 stream_seconds: float, timeout_s: float = 1800) -> FaultResult:
    fault = SCENARIOS[name]
    names = [unique_name(f"{name[:6]}{i}").replace("_", "-") for i in range(4)]
    collections = split(corpus(pages, offset=0), names)
    messages, owner = collection_messages(collections, job_id_base())
    model.set(latency_ms=0)
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
        fault_ended = time.monotonic()
        streamer.join()
        deadline = fault_ended + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.OperationalError):  # PostgreSQL may be restarting
                lost, duplicated, undelivered = count(run.ledger, owner, settings.go_backend_url)
                if lost == 0 and undelivered == 0:
                    break
            time.sleep(2)
        converge = time.monotonic() - fault_ended
        lost, duplicated, undelivered = count(run.ledger, owner, settings.go_backend_url)
        states = run.ledger.job_states()
        notes.append("jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
        with run.ledger.pool.connection() as conn:
            for job_id, error in conn.execute(
                    "SELECT job_id, last_error FROM rag_pipeline.jobs WHERE state <> 'completed' "
                    "ORDER BY job_id LIMIT 5").fetchall():
                notes.append(f"job {job_id}: {(error or '')[:300]}")
    return FaultResult(name, len(owner), lost, duplicated, undelivered, round(converge, 1),
                       round(fault_ended - fault_started, 1), ctx.injected, notes)


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
    parser.add_argument("--out", type=Path, default=RESULTS / "faults.json")
    args = parser.parse_args(argv)
    stream_seconds = args.stream_seconds or args.pages / 8
    results = []
    with bench_stack() as settings:
        stack, model = LocalStack(settings), Model(settings)
        for name in args.only.split(","):
            print(f"\n== {name}: {SCENARIOS[name].__doc__}")
            result = run_scenario(name, settings, stack, model, args.pages, stream_seconds)
            print(asdict(result))
            results.append(result)
    print_table("Fault scenarios", ["scenario", "messages", "lost", "duplicated",
                                    "undelivered", "converge s"],
                [[r.scenario, r.messages, r.lost, r.duplicated, r.undelivered, r.converge_s]
                 for r in results])
    out = {"machine": machine(), "pages": args.pages, "stream_seconds": stream_seconds,
           "results": [asdict(r) for r in results]}
    write_results(args.out, out)
    if args.out == RESULTS / "faults.json":
        write_doc(out)
    return out


def write_doc(out: dict[str, Any]) -> None:
    """The results table of docs/reliability.md (between its markers); rows of scenarios
    not run this time are kept."""
    begin, end = "<!-- faults:begin -->", "<!-- faults:end -->"
    text = DOC.read_text()
    head, _, rest = text.partition(begin)
    old, _, tail = rest.partition(end)
    rows = {line.split("|")[1].strip(" `"): line for line in old.splitlines()
            if line.startswith("| `")}
    for r in out["results"]:
        rows[r["scenario"]] = (
            f"| `{r['scenario']}` | {r['messages']} | {r['lost']} | {r['duplicated']} | "
            f"{r['undelivered']} | {r['converge_s']:.0f} | {r['fault_s']:.0f} |")
    ordered = [rows[name] for name in SCENARIOS if name in rows]
    when = out["machine"]["date"][:10]
    table = "\n".join([
        "", f"Last run: {when}, {out['machine']['cpus']} cores, model stand-in at 0 ms.", "",
        "| scenario | messages | lost | duplicated | undelivered | converge s | fault s |",
        "|---|---:|---:|---:|---:|---:|---:|", *ordered, ""])
    DOC.write_text(head + begin + "\n" + table + "\n" + end + tail)


if __name__ == "__main__":
    main()
