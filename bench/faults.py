"""Fault scenarios: a stream of real pages through a running pipeline while something
breaks, then the counts that the invariants promise are zero.

    make reliability       # = python -m bench.faults (>= 1,000 pages per scenario)
    python -m bench.faults --pages 200 --only host_crash,go_api_hang

For each scenario: pages are published at a steady rate to a pipeline run by a code server
and dagster-daemon (the production topology) on fresh databases and topics; the fault
(`bench/fault_scenarios.py`) starts mid-stream and ends by itself; then the scenario waits
until every job is terminal and every status delivered, and counts (strictly,
`bench/fault_accounting.py`) pages lost, pages duplicated or leaving leftovers, statuses
undelivered; and the time from each fault's end to the model work of the collections it
blocked (recovery) and to the last page indexed (convergence).

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
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Producer

from bench.common import machine, print_table, write_results
from bench.fault_accounting import (
    count,
    first_model_call_after,
    last_page_indexed_after,
    pages_per_second,
    repeats,
    takeover,
)
from bench.fault_scenarios import POOLED, SCENARIOS, Context
from bench.harness import (
    RESULTS,
    ROOT,
    Model,
    bench_stack,
    collection_messages,
    corpus,
    job_id_base,
    pipeline,
    split,
    unique_name,
)
from bench.pgbouncer import pooled
from bench.toxiproxy import proxied
from rag_pipeline.kafka_io import KafkaOptions, producer_config
from rag_pipeline.ledger import JobLedger
from rag_pipeline.local.publishing import OutgoingMessage
from rag_pipeline.local.stack import LocalStack
from rag_pipeline.settings import Settings

# Repairs at a pace a scenario can wait for: reconcile every minute, queued jobs without a
# run are nudged after 30 s. Liveness keeps its defaults (a run silent for 60 s is dead):
# the recovery times measured are those a deployment gets.
FAST_REPAIRS = {"RECONCILE_CRON": "* * * * *", "QUEUED_JOB_GRACE_SECONDS": "30",
                "SENSOR_INTERVAL_SECONDS": "3", "LLM_MAX_CONCURRENCY": "8"}

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
    # Job rows a run changed after it was declared dead (fencing, invariant 11): always 0.
    zombie_writes: int = 0
    # Pages whose model work was paid twice, the extra extractions, and statuses the Go API
    # accepted twice under one idempotency key (bench/fault_accounting.py, `repeats`).
    processed_twice: int = 0
    repaid_extractions: int = 0
    duplicate_patches: int = 0
    # Jobs whose statuses the Go API accepted out of the ledger's order (always 0).
    out_of_order: int = 0
    # Of repaid_extractions: those repaying an answer no live process got (its asker killed,
    # frozen or timed out, or its cache write lost with PostgreSQL): the fault's cost.
    lost_in_flight: int = 0



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
    model.reset()  # extractions are counted per scenario (the corpus is the same each time)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    with _connections(name, settings, stack) as effective, pipeline(
            effective, extra_env=_env(effective),
            deadline_on_database=name.startswith(POOLED)) as run:
        time.sleep(8)
        sent = [0]
        notes: list[str] = []
        ctx = Context(settings, stack, model, run, lambda: sent[0] / len(messages), notes,
                      names, len(messages))
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
        if ctx.left_behind is not None:
            counts.details["dropped_rows_left"] = ctx.left_behind
            counts.duplicated += ctx.left_behind
        breakdown: list[dict[str, Any]] = []
        recovery = recovery_seconds(ctx, breakdown)
        last_end = ctx.fault_ends[-1][0] if ctx.fault_ends else time.time()
        converge = last_page_indexed_after(run.ledger, list(owner), last_end)
        rate = pages_per_second(run.ledger, list(owner))
        states = run.ledger.job_states()
        zombies = zombie_writes(run.ledger)
        again = repeats(run.ledger, names, model.repeated_extractions(), set(owner),
                        settings.go_backend_url, ctx.struck)
        notes.append("jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
        with run.ledger.pool.connection() as conn:
            for job_id, error in conn.execute(
                    "SELECT job_id, error_msg FROM rag_pipeline.jobs WHERE state <> 'completed' "
                    "ORDER BY job_id LIMIT 5").fetchall():
                notes.append(f"job {job_id}: {(error or '')[:300]}")
    return FaultResult(
        name, len(owner), counts.lost, counts.duplicated, counts.undelivered,
        None if recovery is None else round(recovery, 1),
        None if converge is None else round(converge, 1), round(fault_seconds, 1),
        ctx.injected, rate, started_at, datetime.now(UTC).isoformat(timespec="seconds"),
        counts.details, breakdown, notes, zombies, again.processed_twice,
        again.repaid_extractions, again.duplicate_patches, counts.out_of_order,
        again.lost_in_flight)


def zombie_writes(ledger: JobLedger) -> int:
    """Job rows still owned by a run declared dead and changed after its declaration: what
    a woken or cut-off run wrote past its fence (requeued jobs lose their run_id)."""
    with ledger.pool.connection() as conn:
        return conn.execute(
            "SELECT count(*) FROM rag_pipeline.jobs j JOIN rag_pipeline.runs r "
            "ON r.run_id = j.run_id WHERE r.declared_dead_at IS NOT NULL "
            # (a repair that makes a job dead after its last attempt keeps its run_id)
            "AND j.updated_at > r.declared_dead_at AND j.state <> 'dead'").fetchone()[0]


def recovery_seconds(ctx: Context, breakdown: list[dict[str, Any]]) -> float | None:
    """The worst, over the faults, of the time from a fault's end to the next model work:
    for a fault that blocked collections, the first document of each of them LightRAG
    took up again (with the steps before it in `breakdown`); otherwise the first model
    answer at all, or, when no model work was left (a Go API fault that indexing outran),
    the time to the last page indexed after the fault (0 if none was)."""
    worst: float | None = None
    timeline = ctx.model.timeline()
    for n, (ended, blocked) in enumerate(ctx.fault_ends, 1):
        if blocked:
            observed = ctx.takeovers.get(n - 1, {})
            steps = {c: observed.get(c) or takeover(ctx.run.ledger, c, ended)
                     for c in sorted(blocked)}
            breakdown.append({"fault": n, "collections": steps})
            seconds = [s["model_work_s"] for s in steps.values()]
            if None in seconds:
                ctx.notes.append(f"a collection blocked by fault {n} never resumed")
                return None
            value = max(s for s in seconds if s is not None)
        else:
            after = first_model_call_after(timeline, ended)
            if after is None:  # no model work left after this fault
                with ctx.run.ledger.pool.connection() as conn:
                    last = conn.execute("SELECT extract(epoch FROM max(finished_at))::float8 "
                                        "FROM rag_pipeline.jobs").fetchone()[0]
                after = max(0.0, (last or ended) - ended)
            value = after
        worst = value if worst is None else max(worst, value)
    return worst


def _connections(name: str, settings: Settings, stack: LocalStack
                 ) -> contextlib.AbstractContextManager[Settings]:
    """What stands between the pipeline and Kafka/PostgreSQL in this scenario: the settings
    that go through it."""
    if name == "network_faults":
        return proxied(settings, stack)
    if name.startswith(POOLED):
        return pooled(settings, "session")
    return contextlib.nullcontext(settings)


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
                                    "undelivered", "twice", "zombie", "recovery s",
                                    "converge s"],
                [[r.scenario, r.messages, r.lost, r.duplicated, r.undelivered,
                  r.processed_twice, r.zombie_writes, r.recovery_s, r.converge_s]
                 for r in results])
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
            rows.append(f"| `{name}` | not run with this accounting yet |" + " |" * 16)
            continue
        m = r["machine"]
        commit = m["commit"][:7] + (" (dirty)" if m.get("dirty") else "")
        rows.append(
            f"| `{name}` | {r['messages']} | {r['lost']} | {r['duplicated']} | "
            f"{r['undelivered']} | {r.get('processed_twice', '-')} | "
            f"{r.get('repaid_extractions', '-')} ({r.get('lost_in_flight', '-')}) | "
            f"{r.get('zombie_writes', '-')} | {r.get('out_of_order', '-')} | "
            f"{r.get('duplicate_patches', '-')} | "
            f"{_seconds(r['recovery_s'])} | {_seconds(r['converge_s'])} | "
            f"{r['fault_s']:.0f} | {_rate(r.get('pages_per_s'), reference)} | "
            f"{_minutes(r)} | {m['date'][:10]} | {commit}, {m['cpus']} cores, "
            f"load {m.get('load_average_1m', '?')} |")
    table = "\n".join([
        "", "| scenario | messages | lost | duplicated | undelivered | processed twice "
        "| extractions repaid (lost in flight) | zombie writes | out of order "
        "| duplicate PATCHes | recovery s | converge s | fault s | pages/s (x no_fault) "
        "| minutes | date | commit, machine |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        *rows,
        "",
        *_takeover_table(merged)])
    DOC.write_text(head + begin + "\n" + table + "\n" + end + tail)


def _takeover_table(merged: dict[str, Any]) -> list[str]:
    """Per crash and blocked collection: seconds from the restart until its dead run was
    declared dead, a new run claimed its jobs, and LightRAG took up one of its documents."""
    rows = []
    for name in SCENARIOS:
        for fault in merged["scenarios"].get(name, {}).get("recovery_breakdown", []):
            for collection, steps in fault["collections"].items():
                rows.append(f"| `{name}` | {fault['fault']} | `{collection}` | "
                            f"{_seconds(steps.get('declared_s'))} | "
                            f"{_seconds(steps.get('claimed_s'))} | "
                            f"{_seconds(steps.get('model_work_s'))} |")
    if not rows:
        return []
    return ["Takeovers after each crash (seconds from the restart, same runs as above):", "",
            "| scenario | crash | blocked collection | declared dead | jobs claimed again "
            "| model work again |", "|---|---:|---|---:|---:|---:|", *rows, ""]


def _rate(value: float | None, reference: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" + (f" ({value / reference:.2f})" if reference else "")


def _minutes(row: dict[str, Any]) -> str:
    """How long the scenario took, set-up to accounting."""
    if not row.get("started_at") or not row.get("ended_at"):
        return "-"
    taken = datetime.fromisoformat(row["ended_at"]) - datetime.fromisoformat(row["started_at"])
    return f"{taken.total_seconds() / 60:.1f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


if __name__ == "__main__":
    main()
