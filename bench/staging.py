"""Staging throughput and the sensor process's memory.

    python -m bench.staging [--messages 10000] [--large 50]

1. 10,000 messages of ~20 KB: messages/s staged by `stage_messages` (the sensor's tick)
   with the default budgets, and the peak RSS of the process doing it;
2. 50 messages of ~10 MB: the peak RSS while draining them, against the per-tick byte
   budget (SENSOR_MAX_BYTES).

Each measurement runs in a fresh process (`python -m bench.staging worker`), whose idle RSS
(imports done, the ledger migrated once) is reported beside its peak.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import machine, print_table, write_results
from bench.harness import RESULTS, bench_stack, job_id_base, open_ledger, unique_name
from rag_pipeline.local.publishing import OutgoingMessage, publish
from rag_pipeline.settings import Settings

MIB = 1024 * 1024


def message(job_id: int, collection: str, html_bytes: int) -> OutgoingMessage:
    # Random words compress poorly, as real page payloads do once gzip+base64'd.
    words = base64.b64encode(os.urandom(html_bytes * 3 // 4)).decode()
    html = f"<html><body><p>{words}</p></body></html>".encode()
    value = {
        "job_id": job_id, "request_id": 1, "project_id": 1, "user_id": "bench",
        "collection_id": collection, "url": f"https://bench.test/{job_id}.html", "depth": 1,
        "parent_url": None, "discovered_at": "2025-12-24T10:30:00Z",
        "content": {"html": base64.b64encode(gzip.compress(html, 1)).decode(), "text": "",
                    "title": "", "content_type": "text/html", "encoding": "gzip+base64"},
        "metadata": {"base_url": "https://bench.test", "crawl_session_id": "bench"},
    }
    return OutgoingMessage(key=collection.encode(), value=json.dumps(value).encode())


def produce(settings: Settings, topic: str, count: int, html_bytes: int) -> int:
    base = job_id_base()
    size = 0

    def messages():
        nonlocal size
        for i in range(count):
            m = message(base + i, f"stage-{i % 8}", html_bytes)
            size = len(m.value)
            yield m

    publish(settings, messages(), topic=topic)
    return size


def stage_topic(settings: Settings) -> tuple[int, int, float]:
    """Stage everything in settings.kafka_topic tick after tick, as the sensor does:
    (staged, ticks, seconds)."""
    from confluent_kafka import Consumer, Producer

    from rag_pipeline.kafka_io import KafkaOptions, consumer_config, producer_config
    from rag_pipeline.staging import StagingConfig, TickBudget, stage_messages

    ledger = open_ledger(settings)
    options = KafkaOptions.from_settings(settings)
    budget = TickBudget(settings.sensor_max_messages, settings.sensor_max_bytes,
                        settings.sensor_time_budget_seconds)
    config = StagingConfig(settings.kafka_topic, settings.kafka_dlq_topic,
                           settings.kafka_auto_offset_reset, settings.content_limits)
    staged = ticks = 0
    started = time.monotonic()
    try:
        while True:
            consumer = Consumer(consumer_config(options))
            producer = Producer(producer_config(options))
            report = stage_messages(consumer=consumer, producer=producer, ledger=ledger,
                                    config=config, budget=budget)
            consumer.close()
            ticks += 1
            staged += report.staged
            if report.read == 0:
                return staged, ticks, time.monotonic() - started
    finally:
        ledger.close()


def worker(topic: str) -> None:
    """Stage everything in `topic`; print figures as JSON."""
    from rag_pipeline.settings import load_settings

    settings = load_settings().model_copy(update={"kafka_topic": topic})
    open_ledger(settings).close()  # imports done, migrated: what an idle sensor process holds
    idle = rss_now()
    staged, ticks, seconds = stage_topic(settings)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"staged": staged, "ticks": ticks, "seconds": seconds,
                      "idle_rss": idle, "peak_rss": peak,
                      "tick_budget_bytes": settings.sensor_max_bytes}))


def rss_now() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(settings: Settings, count: int, html_bytes: int) -> dict[str, Any]:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = unique_name("bench_stage")
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for future in admin.create_topics([NewTopic(topic, 12, 1, config={
            "max.message.bytes": str(settings.kafka_max_message_bytes)})]).values():
        future.result(timeout=30)
    size = produce(settings, topic, count, html_bytes)
    out = subprocess.run([sys.executable, "-m", "bench.staging", "worker", topic],
                         capture_output=True, text=True, timeout=1800, env=os.environ.copy())
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    admin.delete_topics([topic])
    return {"messages": count, "message_bytes": size,
            "messages_per_s": round(figures["staged"] / figures["seconds"], 1),
            "mb_per_s": round(figures["staged"] * size / MIB / figures["seconds"], 1),
            "ticks": figures["ticks"], "staged": figures["staged"],
            "idle_rss_mib": round(figures["idle_rss"] / MIB, 1),
            "peak_rss_mib": round(figures["peak_rss"] / MIB, 1),
            "peak_above_idle_mib": round((figures["peak_rss"] - figures["idle_rss"]) / MIB, 1),
            "tick_budget_mib": round(figures["tick_budget_bytes"] / MIB, 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "worker":
        worker(sys.argv[2])
        return {}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS / "staging.json")
    args = parser.parse_args(argv)
    with bench_stack() as settings:
        results = {"machine": machine(),
                   "small": measure(settings, args.messages, 20 * 1024),
                   "large": measure(settings, args.large, 10 * MIB)}
    print_table("Staging (the sensor's tick)",
                ["burst", "messages/s", "MB/s", "ticks", "idle RSS MiB", "peak RSS MiB",
                 "peak above idle", "tick budget MiB"],
                [[f"{r['messages']} x {r['message_bytes'] // 1024} KB", r["messages_per_s"],
                  r["mb_per_s"], r["ticks"], r["idle_rss_mib"], r["peak_rss_mib"],
                  r["peak_above_idle_mib"], r["tick_budget_mib"]]
                 for r in (results["small"], results["large"])])
    write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
