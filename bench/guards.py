"""What the run model's guards cost in pages/s, each switched off in turn.

    python -m bench.guards [--pages 60] [--repeats 3]

One collection of real pages at a time, staged and indexed in this process (the indexing
assets materialized as a run worker does; the stand-in model at 0 ms, so the machine is the
limit and a guard's cost shows most), with every guard in place (`all`) and with one of them
switched off in this process only:

- `no_fencing`: `fence_run`, the locking read of the run's row in each of its write
  transactions (claims, page texts, outcomes, taking work), replaced by nothing;
- `no_call_slices`: a call into LightRAG's loop waited for at once, instead of in slices of
  CALL_SLICE_SECONDS with the lease, the lock and the stall rule checked between them;
- `no_statement_deadline`: psycopg connections opened without `statement_timeout`.

The pooler check runs once per process when it opens the ledger; its time is reported
apart (milliseconds, not per page). Variants alternate, each on a fresh collection; the
table gives the median pages/s of each and its difference from `all` (positive: what the
guard costs). Written to bench/results/guards.json.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import dagster as dg
import psycopg
from confluent_kafka import Consumer, Producer

from bench.common import machine, print_table, write_results
from bench.harness import (
    RESULTS,
    ROOT,
    Model,
    bench_stack,
    collection_messages,
    corpus,
    job_id_base,
    send,
    unique_name,
)
from rag_pipeline.indexing import run as indexing_run
from rag_pipeline.kafka_io import KafkaOptions, consumer_config, producer_config
from rag_pipeline.ledger import JobLedger, liveness, runs
from rag_pipeline.ledger import connection as ledger_connection
from rag_pipeline.ledger.pooler import check_sessions
from rag_pipeline.settings import Settings
from rag_pipeline.staging import StagingConfig, TickBudget, stage_messages

DOC = ROOT / "docs" / "reliability.md"
VARIANTS = ("all", "no_fencing", "no_call_slices", "no_statement_deadline")


@contextlib.contextmanager
def switched_off(variant: str) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        if variant == "no_fencing":
            for module in (runs, liveness, ledger_connection):
                if hasattr(module, "fence_run"):
                    stack.enter_context(mock.patch.object(module, "fence_run",
                                                          lambda conn, run_id: None))
        elif variant == "no_call_slices":
            stack.enter_context(mock.patch.object(
                indexing_run.CollectionRun, "_call",
                lambda self, coro: self.pool.submit(coro).result()))
        elif variant == "no_statement_deadline":
            without = {k: v for k, v in ledger_connection.DEADLINES.items() if k != "options"}
            stack.enter_context(mock.patch.dict(ledger_connection.DEADLINES, clear=True))
            ledger_connection.DEADLINES.update(without)
        yield


def stage_all(settings: Settings, ledger: JobLedger, count: int) -> None:
    options = KafkaOptions.from_settings(settings)
    consumer, producer = Consumer(consumer_config(options)), Producer(producer_config(options))
    budget = TickBudget(max_messages=10_000, max_bytes=1 << 30, seconds=60)
    staged = 0
    try:
        while staged < count:
            staged += stage_messages(consumer=consumer, producer=producer, ledger=ledger,
                                     config=StagingConfig.from_settings(settings, settings),
                                     budget=budget).staged
    finally:
        consumer.close()


def index_once(settings: Settings, ledger: JobLedger, pages: list[Path], variant: str,
               instance: dg.DagsterInstance) -> float:
    # Imported here: the code location builds its definitions from the environment, which
    # bench_stack() sets up first.
    from rag_pipeline.assets.indexing import indexing_assets
    from rag_pipeline.definitions import build_definitions

    collection = unique_name("guard").replace("_", "-")
    messages, _ = collection_messages({collection: pages}, job_id_base())
    send(settings, messages)
    stage_all(settings, ledger, len(messages))
    instance.add_dynamic_partitions("collections", [collection])
    with switched_off(variant):
        resources = build_definitions(settings).resources
        started = time.monotonic()
        result = dg.materialize(indexing_assets, partition_key=collection, instance=instance,
                                resources=resources)
        seconds = time.monotonic() - started
    if not result.success:
        raise RuntimeError(f"the {variant} run of {collection} failed")
    return len(pages) / seconds


def pooler_check_ms(settings: Settings, times: int = 20) -> float:
    password = settings.postgres_password.get_secret_value()
    started = time.monotonic()
    for _ in range(times):
        check_sessions(lambda: psycopg.connect(settings.postgres_conninfo(), password=password,
                                               autocommit=True,
                                               **ledger_connection.DEADLINES), "bench")
    return (time.monotonic() - started) / times * 1000


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "guards.json")
    args = parser.parse_args(argv)
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with bench_stack() as settings:
        Model(settings).set(latency_ms=0)
        with JobLedger(settings.postgres_conninfo(),
                       settings.postgres_password.get_secret_value()) as ledger, \
                dg.instance_for_test() as instance:
            ledger.migrate()
            for n in range(args.repeats):
                for variant in VARIANTS:
                    pages = corpus(args.pages, offset=(n * len(VARIANTS) + VARIANTS.index(
                        variant)) * args.pages % 600)
                    rate = index_once(settings, ledger, pages, variant, instance)
                    print(f"[{n + 1}/{args.repeats}] {variant}: {rate:.2f} pages/s", flush=True)
                    rates[variant].append(rate)
            check_ms = pooler_check_ms(settings)
    reference = statistics.median(rates["all"])
    results = {
        "machine": machine(), "pages": args.pages, "repeats": args.repeats,
        "settings": "stand-in model at 0 ms; defaults otherwise",
        "variants": {v: {"pages_per_s": [round(r, 3) for r in rs],
                         "median": round(statistics.median(rs), 3),
                         "guard_cost_pages_per_s": round(statistics.median(rs) - reference, 3)}
                     for v, rs in rates.items()},
        "pooler_check_ms_per_process": round(check_ms, 1),
    }
    print_table("Guards (pages/s, median)", ["variant", "median", "runs", "guard costs"],
                [[v, r["median"], ", ".join(f"{x:.2f}" for x in r["pages_per_s"]),
                  r["guard_cost_pages_per_s"]] for v, r in results["variants"].items()])
    print(f"pooler check: {check_ms:.1f} ms per process start")
    write_results(args.out, results)
    if args.out == RESULTS / "guards.json":
        write_doc(results)
    return results


def write_doc(results: dict[str, Any]) -> None:
    """The guards table of docs/reliability.md (between its markers), from the results."""
    begin, end = "<!-- guards:begin -->", "<!-- guards:end -->"
    text = DOC.read_text()
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    m = results["machine"]
    commit = m["commit"][:7] + (" (dirty)" if m.get("dirty") else "")
    rows = [f"| `{v}` | {r['median']:.2f} | {', '.join(f'{x:.2f}' for x in r['pages_per_s'])} "
            f"| {r['guard_cost_pages_per_s']:+.2f} |" for v, r in results["variants"].items()]
    table = "\n".join([
        "", f"{results['pages']} pages per run, {results['repeats']} runs per variant, "
        f"{results['settings']}; {m['date'][:10]}, {commit}, {m['cpus']} cores, load "
        f"{m.get('load_average_1m', '?')}. The pooler check: "
        f"{results['pooler_check_ms_per_process']:.1f} ms per process start.", "",
        "| variant | pages/s (median) | each run | the guard's cost: median minus `all`'s |",
        "|---|---:|---|---:|", *rows, ""])
    DOC.write_text(head + begin + "\n" + table + "\n" + end + tail)


if __name__ == "__main__":
    main()
