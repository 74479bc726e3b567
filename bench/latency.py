"""Latency under steady load: produce -> the 'completed' PATCH at the Go API stand-in.

    python -m bench.latency [--rate 0.5] [--seconds 240] [--warmup-seconds 40] [--latency-ms 300]

Pages are published at a steady rate (three collections, round robin) to a pipeline run
by dagster-daemon with its default settings; each job's latency is the time from its
produce to the moment the Go API stand-in received its `completed` status. Pages produced
during the warm-up (the first runs' start) are reported apart: the percentiles are warm.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench.common import machine, print_table, write_results
from bench.harness import (
    RESULTS,
    Model,
    bench_stack,
    collection_messages,
    corpus,
    job_id_base,
    pipeline,
    split,
    unique_name,
    wait_terminal,
)
from bench.pipeline import runs_per_collection
from bench.start import completed_at
from rag_pipeline.kafka_io import KafkaOptions, producer_config


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=0.5, help="pages per second")
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--warmup-seconds", type=float, default=40.0)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "latency.json")
    args = parser.parse_args(argv)
    count = int(args.rate * args.seconds)
    with bench_stack() as settings:
        model = Model(settings)
        model.set(latency_ms=args.latency_ms)
        names = [unique_name(f"l{i}").replace("_", "-") for i in range(3)]
        collections = split(corpus(count, offset=100), names)
        messages, owner = collection_messages(collections, job_id_base())
        # Round robin over the collections, as concurrent crawls would arrive.
        order = [m for group in zip(*[messages[i::3] for i in range(3)], strict=False)
                 for m in group]
        produced: dict[int, float] = {}
        with pipeline(settings) as run:
            time.sleep(8)
            producer = Producer(producer_config(KafkaOptions.from_settings(run.settings)))
            started = time.monotonic()
            started_at = time.time()
            for n, message in enumerate(order):
                target = started + n / args.rate
                time.sleep(max(0.0, target - time.monotonic()))
                producer.produce(run.settings.kafka_topic, key=message.key, value=message.value)
                producer.flush(10)
                produced[int(message.value.split(b'"job_id": ')[1].split(b",")[0])] = time.time()
            wait_terminal(run.ledger, list(owner))
            time.sleep(3)  # the last statuses' delivery
            done = completed_at(settings, list(produced))
            runs = runs_per_collection(run)
        warm_from = started_at + args.warmup_seconds
        latencies = [done[j] - produced[j] for j in produced if j in done
                     and produced[j] >= warm_from]
        warmup = [done[j] - produced[j] for j in produced if j in done
                  and produced[j] < warm_from]
    results = {
        "machine": machine(), "rate_pages_per_s": args.rate, "seconds": args.seconds,
        "warmup_seconds": args.warmup_seconds, "model_latency_ms": args.latency_ms,
        "pages": count, "completed": len(latencies) + len(warmup),
        "runs_per_collection": runs,
        "p50_s": round(percentile(latencies, 0.5), 2),
        "p95_s": round(percentile(latencies, 0.95), 2),
        "max_s": round(max(latencies), 2), "mean_s": round(statistics.mean(latencies), 2),
        "warmup_max_s": round(max(warmup), 2) if warmup else None,
    }
    print_table(f"Latency at {args.rate} pages/s for {args.seconds:.0f} s "
                f"(model latency {args.latency_ms:.0f} ms)",
                ["pages", "completed", "p50 s", "p95 s", "max s"],
                [[count, len(latencies), results["p50_s"], results["p95_s"], results["max_s"]]])
    write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
