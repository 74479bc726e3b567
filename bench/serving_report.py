"""The "Serving queries" section of docs/benchmarks.md, from bench/results/serving.json
(python -m bench.serving)."""

from __future__ import annotations

from typing import Any

# The targets: API p50 / direct p50, busy p50 / idle p50, recall@5 over get_text's.
TARGETS = {"p50_ratio": 1.1, "load_ratio": 1.2}


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def serving_section(results: dict[str, Any] | None) -> list[str]:
    if not results:
        return []
    m = results["machine"]
    lat, load, tp = results["latency"], results["under_load"], results["throughput"]
    lines = [
        "## Serving queries", "",
        f"`python -m bench.serving`: {results['pages']} postgresql-doc-15 pages indexed by "
        f"the pipeline (default settings) and the same pages inserted directly into LightRAG "
        f"as BeautifulSoup `get_text` output; `rag-pipeline api` serving the pipeline's "
        f"collection. Commit {m['commit'][:10]}{' (dirty)' if m['dirty'] else ''}, "
        f"{m['date']}, {m['cpus']} cores. Settings differing from the defaults: "
        + (", ".join(f"{k}={v}" for k, v in results.get("settings_differing_from_defaults",
                                                          {}).items()) or "none") + ".", "",
        f"**Retrieval quality** ({results['questions']} questions: every h1-h3 heading of two "
        "words or more that names one page only, asked as a question; references ranked by "
        f"their first retrieved chunk, top_k {results['top_k']}; stand-in model at 0 ms, its "
        "embeddings a hashed bag of words):", "",
        "| mode | pipeline recall@1 | get_text recall@1 | pipeline recall@5 | "
        "get_text recall@5 | recall@5 above get_text's |", "|---|---|---|---|---|---|"]
    for mode, r in results["recall"].items():
        ours, theirs = r["pipeline"], r["get_text"]
        lines.append(f"| {mode} | {ours['recall@1']} | {theirs['recall@1']} | "
                     f"{ours['recall@5']} | {theirs['recall@5']} | "
                     f"{met(ours['recall@5'] > theirs['recall@5'])} |")
    lines += [
        "", f"**Latency** ({results['clients']} concurrent clients, {lat['queries']} "
        f"`{lat['mode']}` queries with answers, stand-in at {results['latency_ms']:.0f} ms; "
        "direct: as many concurrent `aquery_llm` calls in one process with the service's "
        "options; both with the default QUERY_LLM_MAX_CONCURRENCY):", "",
        "| path | p50 s | p95 s |", "|---|---|---|",
        f"| through the API | {lat['api']['p50']} | {lat['api']['p95']} |",
        f"| direct LightRAG | {lat['direct']['p50']} | {lat['direct']['p95']} |", "",
        f"p50 ratio {lat['p50_ratio']} (target <= {TARGETS['p50_ratio']}: "
        f"{met(lat['p50_ratio'] <= TARGETS['p50_ratio'])}).", "",
        f"**Under an indexing backlog** (one client; {load['idle_queries']} queries at rest, "
        f"then {load['busy_queries']} while {results['backlog']} pages of another collection "
        f"index): p50 {load['idle_p50']} s at rest, {load['busy_p50']} s busy, ratio "
        f"{load['ratio']} (target <= {TARGETS['load_ratio']}: "
        f"{met(load['ratio'] <= TARGETS['load_ratio'])}).", "",
        f"**Queries per core** ({tp['queries']} `{tp['mode']}` queries with answers from "
        f"{results['clients']} clients, stand-in at 0 ms): {tp['queries_per_second']} "
        f"queries/s, the service spending {tp['service_cpu_seconds']} CPU-seconds: "
        f"{tp['queries_per_cpu_second']} queries per CPU-second; resident memory "
        f"{results['footprint']['peak_rss_mib']} MiB at its peak.", ""]
    return lines
