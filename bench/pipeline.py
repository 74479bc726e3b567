"""Throughput of the whole pipeline against LightRAG called directly, on the same pages.

    python -m bench.pipeline [--pages 300] [--latencies 0,300]

- pipeline: pages published to Kafka, staged by the sensor, indexed by runs launched by
  dagster-daemon (3 collections, max_concurrent_runs 4, LLM_MAX_CONCURRENCY = 8 shared);
- direct: the same cleaned texts inserted by one plain process calling LightRAG `ainsert`
  collection after collection into fresh workspaces, llm_model_max_async = 8, the same model
  client, same PostgreSQL, same stand-in.

Reports pages/s, the ratio pipeline/direct (time), and model utilisation: the ideal time
(LLM calls x latency / C) over the time taken.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.common import CpuSampler, machine, print_table, write_results
from bench.harness import (
    RESULTS,
    Model,
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
from rag_pipeline.cleaning import clean_html
from rag_pipeline.identity import doc_id, file_path, normalize_url
from rag_pipeline.settings import Settings
from rag_pipeline.workspaces import LightRAGOptions, WorkspacePool

CONCURRENCY = 8


def run_pipeline(settings: Settings, model: Model, collections: dict[str, list[Path]],
                 latency_ms: float, max_concurrent_runs: int = 4) -> dict[str, Any]:
    model.set(latency_ms=latency_ms)
    messages, owner = collection_messages(collections, job_id_base())
    env = {"LLM_MAX_CONCURRENCY": str(CONCURRENCY), "EMBEDDING_MAX_CONCURRENCY": str(CONCURRENCY),
           "SENSOR_INTERVAL_SECONDS": "2"}
    with pipeline(settings, max_concurrent_runs, env) as run:
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
    return summarize("pipeline", len(owner), seconds, stats, latency_ms, states=states,
                     completions=[t - started_at for t in finished], timeline=timeline,
                     started_at=started_at, max_concurrent_runs=max_concurrent_runs,
                     collections=len(collections), cpu_seconds=cpu.by_class(),
                     cpu_unclassified=cpu.unclassified())


def run_direct(settings: Settings, model: Model, collections: dict[str, list[Path]],
               latency_ms: float) -> dict[str, Any]:
    """A plain consumer would do this: LightRAG with its own limits, one process."""
    model.set(latency_ms=latency_ms)
    texts = {name: [(normalize_url(f"https://{name}.bench.test/{p.name}"),
                     clean_html(p.read_text(errors="replace")).text) for p in paths]
             for name, paths in collections.items()}
    options = LightRAGOptions.from_settings(settings, shared_slots=False)
    pool = WorkspacePool(options)
    workspaces = {name: unique_name("direct") for name in collections}

    async def insert_all() -> None:
        for name, pages in texts.items():
            rag = await pool.workspace(workspaces[name])
            pages = [(url, text) for url, text in pages if text.strip()]
            await rag.ainsert([t for _, t in pages],
                              ids=[doc_id(workspaces[name], u) for u, _ in pages],
                              file_paths=[file_path(u) for u, _ in pages])

    model.reset()
    started = time.monotonic()
    try:
        with CpuSampler() as cpu:
            pool.run(insert_all(), timeout=3600)
    finally:
        pool.close()
    seconds = time.monotonic() - started
    pages = sum(len(v) for v in texts.values())
    return summarize("direct", pages, seconds, model.stats(), latency_ms,
                     collections=len(collections), cpu_seconds=cpu.by_class())


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


def compare(settings: Settings, model: Model, pages: int, latencies: list[float]
            ) -> dict[str, Any]:
    files = corpus(pages, offset=0)
    results: dict[str, Any] = {"by_latency": {}}
    for latency in latencies:
        names = [unique_name(f"c{i}") .replace("_", "-") for i in range(3)]
        collections = split(files, names)
        print(f"\n== {pages} pages, 3 collections, model latency {latency:.0f} ms")
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
    parser.add_argument("--latencies", default="0,300")
    parser.add_argument("--scaling-pages", type=int, default=120,
                        help="pages of the scaling runs (0: skip them)")
    parser.add_argument("--out", type=Path, default=RESULTS / "pipeline.json")
    args = parser.parse_args(argv)
    with bench_stack() as settings:
        model = Model(settings)
        results: dict[str, Any] = {"machine": machine()}
        results["compare"] = compare(settings, model, args.pages,
                                     [float(x) for x in args.latencies.split(",")])
        if args.scaling_pages:
            results["scaling"] = scaling(settings, model, args.scaling_pages, 300.0)
    report(results)
    write_results(args.out, results)
    return results


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
