"""Throughput of the whole pipeline against LightRAG called directly, on the same pages.

    python -m bench.pipeline [--pages 300] [--latencies 0,300,2000] [--slow-pages 150]

- pipeline: pages published to Kafka, staged by the sensor, indexed by runs launched by
  dagster-daemon (3 collections, max_concurrent_runs 4, LLM_MAX_CONCURRENCY = 8 shared);
- direct: the same messages decoded and cleaned, then inserted by one plain process calling
  LightRAG `ainsert` for the three collections at once, into a database of its own (with
  the decoding and cleaning inside the timer, as for the pipeline); llm_model_max_async = 8
  and the same max_parallel_insert, the same model client, PostgreSQL server and stand-in.

Each side records the stand-in's per-second timeline (requests finished, seconds of
requests in flight); the pipeline also its runs per collection. `python -m bench.report`
draws the requests in flight of both on one figure (docs/images/in-flight.png).

Reports pages/s, the ratio pipeline/direct (time), and model utilisation: the ideal time
(LLM calls x latency / C) over the time taken.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import CpuSampler, machine, print_table, write_results
from bench.harness import (
    RESULTS,
    Model,
    PipelineRun,
    bench_settings,
    bench_stack,
    collection_messages,
    corpus,
    finish_times,
    job_id_base,
    pipeline,
    send,
    split,
    unique_name,
    wait_terminal,
)
from rag_pipeline.contract import IndexingJob
from rag_pipeline.decoding import decode_html
from rag_pipeline.identity import doc_id, file_path, normalize_url
from rag_pipeline.indexing.page_text import page_text
from rag_pipeline.indexing.pages import PageLimits
from rag_pipeline.knowledge.workspaces import LightRAGOptions, WorkspacePool
from rag_pipeline.local.stack.deployment import create_databases, drop_databases
from rag_pipeline.settings import Settings

CONCURRENCY = 8
# The deployment's settings besides the defaults (recorded with the results).
PIPELINE_ENV = {"LLM_MAX_CONCURRENCY": str(CONCURRENCY),
                "EMBEDDING_MAX_CONCURRENCY": str(CONCURRENCY), "SENSOR_INTERVAL_SECONDS": "2"}


def run_pipeline(settings: Settings, model: Model, collections: dict[str, list[Path]],
                 latency_ms: float, max_concurrent_runs: int = 4) -> dict[str, Any]:
    model.set(latency_ms=latency_ms)
    messages, owner = collection_messages(collections, job_id_base())
    with pipeline(settings, max_concurrent_runs, PIPELINE_ENV) as run:
        time.sleep(8)  # the daemon's first ticks (code server start) are not the pipeline's work
        model.reset()
        started_at = time.time()
        with CpuSampler() as cpu:
            send(run.settings, messages)
            seconds = wait_terminal(run.ledger, list(owner))
        finished = finish_times(run.ledger, list(owner))
        states = run.ledger.job_states()
        stats = model.stats()
        timeline = model.timeline()
        runs = runs_per_collection(run)
    return summarize("pipeline", len(owner), seconds, stats, latency_ms, states=states,
                     completions=[t - started_at for t in finished], timeline=timeline,
                     started_at=started_at, max_concurrent_runs=max_concurrent_runs,
                     collections=len(collections), runs_per_collection=runs,
                     cpu_seconds=cpu.by_class(), cpu_unclassified=cpu.unclassified())


def runs_per_collection(run: PipelineRun) -> dict[str, int]:
    with run.ledger.pool.connection() as conn:
        rows = conn.execute("SELECT collection_id, count(*) FROM rag_pipeline.runs "
                            "GROUP BY collection_id ORDER BY collection_id").fetchall()
    return dict(rows)


def run_direct(settings: Settings, model: Model, collections: dict[str, list[Path]],
               latency_ms: float, observe: Callable[[str], Any] | None = None
               ) -> dict[str, Any]:
    """What a plain consumer would do: one process calling LightRAG `ainsert` for every
    collection at once (as the pipeline's runs do), into a database of its own, with the
    same model bound (a semaphore of its process), the same texts and the same decoding and
    cleaning inside the timer. A fresh process each time: LightRAG's locks belong to the
    first event loop of their process. `observe(database)`, called once the pages are in,
    goes into the summary as "observed"."""
    model.set(latency_ms=latency_ms)
    messages, _ = collection_messages(collections, job_id_base())
    by_collection: dict[str, list[bytes]] = {}
    for message in messages:
        by_collection.setdefault(message.key.decode(), []).append(message.value)
    database = unique_name("bench_direct")
    create_databases(settings, database)
    try:
        with multiprocessing.get_context("spawn").Pool(1) as worker, CpuSampler() as cpu:
            seconds, started_at = worker.apply(direct_insert, (database, by_collection))
        observed = observe(database) if observe else None
    finally:
        drop_databases(settings, database)
    # The direct process is a multiprocessing child, which the sampler counts as a run
    # worker (no pipeline runs at the same time).
    cpu_seconds = cpu.by_class()
    cpu_seconds["direct process"] = cpu_seconds.pop("run workers", 0.0)
    summary = summarize("direct", len(messages), seconds, model.stats(), latency_ms,
                        collections=len(collections), timeline=model.timeline(),
                        started_at=started_at, cpu_seconds=cpu_seconds)
    if observe:
        summary["observed"] = observed
    return summary


def direct_insert(database: str, by_collection: dict[str, list[bytes]]) -> tuple[float, float]:
    """In the direct process: (seconds, epoch start) of inserting every collection at once."""
    settings = bench_settings().model_copy(update={"postgres_db": database})
    pool = WorkspacePool(LightRAGOptions.from_settings(settings, shared_slots=False))
    limits = PageLimits(settings.max_payload_bytes, settings.max_text_bytes, "prefer_extracted")

    async def insert(collection: str, values: list[bytes]) -> None:
        rag = await pool.workspace(collection)
        pages = await asyncio.to_thread(lambda: [text_of(v, limits) for v in values])
        pages = [(url, text) for url, text in pages if text.strip()]
        await rag.ainsert([t for _, t in pages], ids=[doc_id(collection, u) for u, _ in pages],
                          file_paths=[file_path(u) for u, _ in pages])

    async def insert_all() -> None:
        await asyncio.gather(*(insert(c, v) for c, v in by_collection.items()))

    Model(settings).reset()
    started_at, started = time.time(), time.monotonic()
    try:
        pool.run(insert_all(), timeout=3600)
        return time.monotonic() - started, started_at
    finally:
        pool.close()


def text_of(value: bytes, limits: PageLimits) -> tuple[str, str]:
    """(normalized url, text) of a message, decoded and cleaned as a run does it."""
    message = IndexingJob.model_validate_json(value)
    content = message.content
    html = decode_html(content.html, content.encoding, content.content_type,
                       limits.max_payload_bytes).html if content.html else None
    return normalize_url(message.url), page_text(content.text, content.title, html,
                                                 limits.text_source).text


def summarize(kind: str, pages: int, seconds: float, stats: dict[str, Any], latency_ms: float,
              **extra: Any) -> dict[str, Any]:
    calls = stats["chat_calls"]
    ideal = calls * latency_ms / 1000 / CONCURRENCY
    return {
        "kind": kind, "pages": pages, "seconds": round(seconds, 2),
        "pages_per_s": round(pages / seconds, 3), "latency_ms": latency_ms,
        "llm_calls": calls, "llm_calls_per_page": round(calls / pages, 2),
        "llm_peak_in_flight": stats["chat_peak_in_flight"],
        "ideal_seconds": round(ideal, 2),
        "utilisation": round(ideal / seconds, 3) if latency_ms else None,
        **extra,
    }


def compare(settings: Settings, model: Model, pages: int, latencies: list[float],
            slow_pages: int) -> dict[str, Any]:
    """Pipeline and direct side by side at each latency (`slow_pages` pages from 1,000 ms:
    the same ratio, in less time)."""
    results: dict[str, Any] = {"by_latency": {}}
    for latency in latencies:
        count = slow_pages if latency >= 1000 else pages
        files = corpus(count, offset=0)
        names = [unique_name(f"c{i}") .replace("_", "-") for i in range(3)]
        collections = split(files, names)
        print(f"\n== {count} pages, 3 collections, model latency {latency:.0f} ms")
        piped = run_pipeline(settings, model, collections, latency)
        print(f"pipeline: {piped['pages_per_s']} pages/s, utilisation {piped['utilisation']}, "
              f"cpu seconds {piped['cpu_seconds']}")
        direct = run_direct(settings, model, collections, latency)
        print(f"direct:   {direct['pages_per_s']} pages/s, utilisation {direct['utilisation']}, "
              f"cpu seconds {direct['cpu_seconds']}")
        results["by_latency"][str(int(latency))] = {
            "pipeline": piped, "direct": direct,
            "ratio_time_pipeline_over_direct": round(piped["seconds"] / direct["seconds"], 3),
        }
    return results


def scaling(settings: Settings, model: Model, pages: int, latency_ms: float) -> dict[str, Any]:
    """pages/s with 1 or 3 concurrent collections, and with 1, 2, 4 concurrent runs."""
    files = corpus(pages, offset=400)
    out: dict[str, Any] = {"latency_ms": latency_ms, "pages": pages}
    one = {unique_name("one").replace("_", "-"): files}
    out["one_collection"] = run_pipeline(settings, model, one, latency_ms)
    for runs in (1, 2, 4):
        names = [unique_name(f"s{i}").replace("_", "-") for i in range(3)]
        out[f"three_collections_runs_{runs}"] = run_pipeline(settings, model,
                                                             split(files, names), latency_ms,
                                                             max_concurrent_runs=runs)
        print(f"3 collections, {runs} concurrent runs: "
              f"{out[f'three_collections_runs_{runs}']['pages_per_s']} pages/s")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--latencies", default="0,300,2000")
    parser.add_argument("--slow-pages", type=int, default=150,
                        help="pages of the runs at 1,000 ms of latency or more")
    parser.add_argument("--scaling-pages", type=int, default=120,
                        help="pages of the scaling runs (0: skip them)")
    parser.add_argument("--out", type=Path, default=RESULTS / "pipeline.json")
    args = parser.parse_args(argv)
    with bench_stack() as settings:
        model = Model(settings)
        results: dict[str, Any] = {"machine": machine(), "settings": run_settings(settings)}
        results["compare"] = compare(settings, model, args.pages,
                                     [float(x) for x in args.latencies.split(",")],
                                     args.slow_pages)
        if args.scaling_pages:
            results["scaling"] = scaling(settings, model, args.scaling_pages, 300.0)
    report(results)
    write_results(args.out, results)
    return results


def run_settings(settings: Settings) -> dict[str, Any]:
    """What both sides ran with (the pipeline's deployment adds PIPELINE_ENV)."""
    effective = settings.model_copy(update={k.lower(): int(v) for k, v in PIPELINE_ENV.items()})
    options = LightRAGOptions.from_settings(effective)
    return {**PIPELINE_ENV, "max_parallel_insert": options.max_workers,
            "pages_in_flight_per_run": 2 * options.max_workers,
            "run_idle_seconds": settings.run_idle_seconds,
            "run_max_seconds": settings.run_max_seconds,
            "lightrag_pool_size": settings.lightrag_pool_size}


def report(results: dict[str, Any]) -> None:
    rows = []
    for latency, r in results["compare"]["by_latency"].items():
        for kind in ("pipeline", "direct"):
            x = r[kind]
            rows.append([latency, kind, x["pages"], x["seconds"], x["pages_per_s"],
                         x["llm_calls_per_page"], x["llm_peak_in_flight"], x["utilisation"]])
        rows.append([latency, "ratio (time)", "", r["ratio_time_pipeline_over_direct"], "", "",
                     "", ""])
    print_table("Pipeline vs direct LightRAG",
                ["latency ms", "kind", "pages", "seconds", "pages/s", "calls/page",
                 "peak in flight", "utilisation"], rows)
    s = results.get("scaling")
    if not s:
        return
    print_table(f"Scaling ({s['pages']} pages, latency {s['latency_ms']:.0f} ms)",
                ["setup", "pages/s", "utilisation"],
                [[k, v["pages_per_s"], v["utilisation"]] for k, v in s.items()
                 if isinstance(v, dict)])


if __name__ == "__main__":
    main()
