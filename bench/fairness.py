"""Fairness: many collections at once, fewer run slots than collections.

    python -m bench.fairness [--collections 12] [--pages 30] [--runs 4]

All pages are published at once (round robin over the collections, as concurrent crawls
arrive); each collection's wait is the time from the publish to its first page completed.
The figure is the longest wait over the mean: a collection that waits for others to drain
completely would push it up (with 12 collections and 4 slots, a strict first-come order
gives about 2).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import machine, print_table, write_results
from bench.harness import (
    RESULTS,
    Model,
    bench_stack,
    collection_messages,
    corpus,
    job_id_base,
    pipeline,
    send,
    split,
    unique_name,
    wait_terminal,
)
from bench.pipeline import runs_per_collection

LATENCY_MS = 300.0


def first_and_last(run: Any, owner: dict[int, str]) -> dict[str, tuple[float, float]]:
    with run.ledger.pool.connection() as conn:
        rows = conn.execute(
            "SELECT collection_id, extract(epoch FROM min(finished_at)), "
            "extract(epoch FROM max(finished_at)) FROM rag_pipeline.jobs "
            "WHERE job_id = ANY(%s) GROUP BY collection_id", (list(owner),)).fetchall()
    return {c: (float(first), float(last)) for c, first, last in rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collections", type=int, default=12)
    parser.add_argument("--pages", type=int, default=30, help="pages per collection")
    parser.add_argument("--runs", type=int, default=4, help="max_concurrent_runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "fairness.json")
    args = parser.parse_args(argv)
    with bench_stack() as settings:
        model = Model(settings)
        model.set(latency_ms=LATENCY_MS)
        names = [unique_name(f"f{i}").replace("_", "-") for i in range(args.collections)]
        collections = split(corpus(args.collections * args.pages, offset=800), names)
        messages, owner = collection_messages(collections, job_id_base())
        order = [m for group in zip(*[messages[i::args.pages] for i in range(args.pages)],
                                    strict=False) for m in group]
        with pipeline(settings, args.runs) as run:
            time.sleep(8)  # the daemon's first ticks
            published = time.time()
            send(run.settings, order)
            seconds = wait_terminal(run.ledger, list(owner))
            times = first_and_last(run, owner)
            runs = runs_per_collection(run)
    waits = {c: round(first - published, 2) for c, (first, _) in times.items()}
    drained = {c: round(last - published, 2) for c, (_, last) in times.items()}
    mean = statistics.mean(waits.values())
    results = {
        "machine": machine(),
        "settings": {"collections": args.collections, "pages_per_collection": args.pages,
                     "max_concurrent_runs": args.runs, "model_latency_ms": LATENCY_MS},
        "seconds": round(seconds, 2), "first_page_wait_s": waits, "drained_s": drained,
        "runs_per_collection": runs,
        "longest_wait_s": max(waits.values()), "mean_wait_s": round(mean, 2),
        "longest_over_mean": round(max(waits.values()) / mean, 2),
    }
    print_table(f"{args.collections} collections x {args.pages} pages, {args.runs} run slots",
                ["collection", "first page s", "drained s", "runs"],
                [[c, waits[c], drained[c], runs.get(c)] for c in sorted(waits, key=waits.get)])
    print(f"longest wait / mean: {results['longest_over_mean']}")
    write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
