"""The capacity model of docs/deployment.md, computed from benchmark results.

    python -m bench.capacity    (also run by python -m bench.report)

Every input is read from bench/results/*.json (file, key and commit printed beside it);
the only figures not measured are the assumptions listed first (model latency, peak
factor, retention), which a user replaces with theirs. Writes the section between the
`capacity` markers of docs/deployment.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "deployment.md"
START, END = "<!-- capacity:start -->", "<!-- capacity:end -->"
DAY = 86_400
RATES = (10_000, 100_000, 1_000_000)  # pages a day

# Assumptions: not measured here; replace them with yours.
MODEL_LATENCY_S = 2.0  # seconds per model request (the 2,000 ms benchmark case)
PEAK_FACTOR = 3.0  # the day's pages arrive within 8 hours
RETENTION_DAYS = 30  # the default
RECRAWL_DAYS = 7  # each alias crawled again weekly (its pages are the day's pages)
RETIRE_DAYS = 1  # RETIRE_SUPERSEDED_AFTER_SECONDS default: a superseded collection's grace
DEFAULT_LLM_SLOTS = 8  # LLM_MAX_CONCURRENCY default
DEFAULT_RUN_SLOTS = 4  # max_concurrent_runs of dagster.yaml
MACHINE_CORES = 2  # the benchmark machine's cores (for PostgreSQL's share)


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def origin(result: dict[str, Any]) -> str:
    m = result["machine"]
    return f"{m['commit'][:7]}{' (dirty)' if m.get('dirty') else ''}"


@dataclass
class Inputs:
    """Per page unless named otherwise; `sources` says where each came from."""

    run_worker_cpu_s: float
    postgres_cpu_s: float
    kafka_cpu_s: float
    llm_calls: float
    llm_tokens: float  # prompt + completion
    embedding_tokens: float
    fixed_cores: float  # daemon + code server + webserver + exporter, mean while crawling
    connections_per_run: float
    connections_fixed: float
    staging_per_s: float
    ledger_bytes: float  # before pruning
    ledger_bytes_pruned: float
    lightrag_bytes: float
    event_log_bytes: float
    sources: list[str]


def inputs() -> Inputs | None:
    pipeline, cost, footprint = load("pipeline"), load("cost"), load("footprint")
    staging, retention = load("staging"), load("retention")
    if not all((pipeline, cost, footprint, staging, retention)):
        return None
    # The backlog at 300 ms: the run workers never wait for pages, so their CPU per page is
    # what a loaded deployment pays (polling while idle spread over the most pages).
    run = pipeline["compare"]["by_latency"]["300"]["pipeline"]
    cpu, pages = run["cpu_seconds"], run["pages"]
    text = cost["pre_extracted_get_text"]
    roles = footprint["roles"]
    peak = footprint["postgres_connections_at_peak"]
    per_run = peak["run_processes"] / max(1, peak["runs_at_peak"])
    small = staging["small"]
    before, after = retention["bytes_per_page_before"], retention["bytes_per_page_after"]
    return Inputs(
        run_worker_cpu_s=cpu.get("run workers", 0.0) / pages,
        postgres_cpu_s=cpu.get("postgres", 0.0) / pages,
        kafka_cpu_s=cpu.get("kafka", 0.0) / pages,
        llm_calls=text["llm_calls_per_page"],
        llm_tokens=text["prompt_tokens_per_page"] + text["completion_tokens_per_page"],
        embedding_tokens=text["embedding_tokens_per_page"],
        fixed_cores=sum(roles[r]["mean_cores"] for r in ("daemon", "code_server", "webserver",
                                                           "exporter")),
        connections_per_run=per_run,
        connections_fixed=peak["all"] - peak["run_processes"],
        staging_per_s=small["messages_per_s"],
        ledger_bytes=before["**ledger total**"],
        ledger_bytes_pruned=after["**ledger total**"],
        lightrag_bytes=before["**LightRAG total**"],
        event_log_bytes=retention["event_log_bytes_per_page"],
        sources=[
            f"CPU-seconds per page of run workers, PostgreSQL and Kafka: `pipeline.json`, "
            f"the 300 ms backlog ({pages} pages, the workers always busy), commit "
            f"{origin(pipeline)}",
            f"model calls and tokens per page: `cost.json` (pre-extracted text, the default "
            f"TEXT_SOURCE), commit {origin(cost)}",
            f"fixed cores (daemon, code server, webserver, exporter, mean while crawling) and "
            f"PostgreSQL sessions per run: `footprint.json`, commit {origin(footprint)}",
            f"staging throughput ({small['message_bytes']:,}-byte messages): `staging.json`, "
            f"commit {origin(staging)}",
            f"bytes per page (ledger before/after pruning, LightRAG, Dagster event log): "
            f"`retention.json`, commit {origin(retention)}",
        ])


def fmt(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def gib(x: float) -> str:
    return f"{x / 2**30:,.1f} GiB"


def table(i: Inputs) -> list[str]:
    rows: list[tuple[str, list[str]]] = []
    per_day = list(RATES)
    peak = [d / DAY * PEAK_FACTOR for d in per_day]

    def row(label: str, values: list[str]) -> None:
        rows.append((label, values))

    row("pages/s at peak (average x peak factor)", [fmt(p) for p in peak])
    in_flight = [p * i.llm_calls * MODEL_LATENCY_S for p in peak]
    row("model requests in flight at peak = LLM_MAX_CONCURRENCY needed",
        [str(math.ceil(x)) for x in in_flight])
    row("LLM tokens per minute at peak (rate limit needed)",
        [f"{p * 60 * i.llm_tokens:,.0f}" for p in peak])
    row("embedding tokens per minute at peak", [f"{p * 60 * i.embedding_tokens:,.0f}"
                                                for p in peak])
    row("LLM tokens per day (what the model bills)",
        [f"{d * i.llm_tokens / 1e6:,.1f} M" for d in per_day])
    workers = [p * i.run_worker_cpu_s for p in peak]
    row("run-worker cores at peak", [fmt(w) for w in workers])
    slots = [max(1, math.ceil(w)) for w in workers]
    row("run slots at least (max_concurrent_runs; each run is one process, at most one "
        "core), or more for more collections crawled at once", [str(s) for s in slots])
    row("PostgreSQL cores at peak", [fmt(p * i.postgres_cpu_s) for p in peak])
    row("PostgreSQL sessions (runs x per run + the services)",
        [f"{math.ceil(s * i.connections_per_run + i.connections_fixed)}" for s in slots])
    row("share of one sensor's staging capacity at peak",
        [f"{p / i.staging_per_s:.2%}" for p in peak])
    row(f"ledger: payloads within RETENTION_DAYS={RETENTION_DAYS}",
        [gib(d * RETENTION_DAYS * (i.ledger_bytes - i.ledger_bytes_pruned)) for d in per_day])
    row("ledger: what stays per year (job rows, outcomes, documents)",
        [gib(d * 365 * i.ledger_bytes_pruned) for d in per_day])
    row("LightRAG: per year, collections never dropped (growth for ever)",
        [gib(d * 365 * i.lightrag_bytes) for d in per_day])
    row(f"LightRAG at steady state: aliases crawled again every {RECRAWL_DAYS} days, "
        f"superseded collections retired after {RETIRE_DAYS} day (RECRAWL_DAYS + RETIRE_DAYS "
        "days of pages)",
        [gib(d * (RECRAWL_DAYS + RETIRE_DAYS) * i.lightrag_bytes) for d in per_day])
    row(f"Dagster event log within RETENTION_DAYS={RETENTION_DAYS}",
        [gib(d * RETENTION_DAYS * i.event_log_bytes) for d in per_day])
    header = "| per day | " + " | ".join(f"{d:,} pages" for d in per_day) + " |"
    return [header, "|---|" + "---:|" * len(per_day),
            *(f"| {label} | " + " | ".join(values) + " |" for label, values in rows)]


def ceilings(i: Inputs) -> list[tuple[str, float]]:
    """Pages/s each part sustains with the defaults on the benchmark machine, lowest first."""
    parts = [
        (f"the model, LLM_MAX_CONCURRENCY={DEFAULT_LLM_SLOTS} at {MODEL_LATENCY_S:.0f} s a "
         "request", DEFAULT_LLM_SLOTS / (i.llm_calls * MODEL_LATENCY_S)),
        ("one collection (one run: one process, at most one core)",
         1 / i.run_worker_cpu_s if i.run_worker_cpu_s else math.inf),
        (f"{DEFAULT_RUN_SLOTS} run slots (max_concurrent_runs)",
         DEFAULT_RUN_SLOTS / i.run_worker_cpu_s if i.run_worker_cpu_s else math.inf),
        (f"PostgreSQL on {MACHINE_CORES} cores",
         MACHINE_CORES / i.postgres_cpu_s if i.postgres_cpu_s else math.inf),
        ("staging (the sensor, one consumer)", i.staging_per_s),
    ]
    return sorted(parts, key=lambda p: p[1])


def section() -> list[str]:
    i = inputs()
    if i is None:
        return ["The capacity model needs `make bench` and `make scale` results "
                "(bench/results/*.json); run them, then `python -m bench.capacity`."]
    lines = [
        "Generated by `python -m bench.capacity` from benchmark results; inputs and their "
        "sources first, then what 10k, 100k and 1M pages a day need.",
        "",
        "Assumptions (not measured; put in yours): a model request takes "
        f"{MODEL_LATENCY_S:.0f} s; a day's pages arrive within {24 / PEAK_FACTOR:.0f} hours "
        f"(peak = {PEAK_FACTOR:.0f} x the average); RETENTION_DAYS = {RETENTION_DAYS}; "
        f"for the steady state, every page belongs to an alias crawled again every "
        f"{RECRAWL_DAYS} days and superseded collections are retired after {RETIRE_DAYS} day "
        "(RETIRE_SUPERSEDED_AFTER_SECONDS), so LightRAG holds each alias's current "
        "collection plus those still in their grace period.",
        "",
        "| input, per page | value |",
        "|---|---:|",
        f"| run-worker CPU-seconds | {i.run_worker_cpu_s:.3f} |",
        f"| PostgreSQL CPU-seconds | {i.postgres_cpu_s:.3f} |",
        f"| Kafka CPU-seconds | {i.kafka_cpu_s:.3f} |",
        f"| LLM calls | {i.llm_calls:.2f} |",
        f"| LLM tokens (prompt + completion) | {i.llm_tokens:,.0f} |",
        f"| embedding tokens | {i.embedding_tokens:,.0f} |",
        f"| ledger bytes, before / after pruning | {i.ledger_bytes:,.0f} / "
        f"{i.ledger_bytes_pruned:,.0f} |",
        f"| LightRAG bytes | {i.lightrag_bytes:,.0f} |",
        f"| Dagster event-log bytes | {i.event_log_bytes:,.0f} |",
        f"| fixed: daemon + code server + webserver + exporter (cores) | {i.fixed_cores:.2f} |",
        f"| PostgreSQL sessions per run / of the services | {i.connections_per_run:.1f} / "
        f"{i.connections_fixed:.0f} |",
        f"| staging, messages/s (one sensor) | {i.staging_per_s:,.0f} |",
        "",
        "Sources: " + "; ".join(i.sources) + ".",
        "",
        *table(i),
        "",
        "What saturates first, with the defaults on the benchmark machine (pages/s each part "
        "sustains, lowest first):",
        "",
        *(f"{n}. {name}: {fmt(rate)} pages/s ({rate * DAY:,.0f} a day)"
          for n, (name, rate) in enumerate(ceilings(i), start=1)),
        "",
        *queries_paragraph(load("serving")),
    ]
    return lines


def queries_paragraph(serving: dict[str, Any] | None) -> list[str]:
    """What queries cost the query service, per core (bench.serving)."""
    if not serving:
        return []
    tp, fp = serving["throughput"], serving["footprint"]
    per_core = tp["queries_per_cpu_second"]
    return [
        f"Queries: the query service answers {per_core:g} `{tp['mode']}` queries (with "
        f"answers) per CPU-second of its own process, with the stand-in model at 0 ms so that "
        f"only the service's work counts (`serving.json`, commit {origin(serving)}): a peak "
        f"of Q queries/s needs Q / {per_core:g} cores of `rag-pipeline api` replicas "
        f"(10 queries/s: {10 / per_core:.1f} cores), each holding up to "
        f"{fp['peak_rss_mib']:.0f} MiB resident as measured. The model sets the rest: a "
        "`mix` query makes two LLM requests (keywords, answer) and one embedding, so "
        "QUERY_LLM_MAX_CONCURRENCY per replica must reach Q x 2 x (seconds per request) / "
        "replicas.", ""]


def write() -> None:
    doc = DOC.read_text()
    if START not in doc or END not in doc:
        raise SystemExit(f"{DOC} has no {START} ... {END} markers")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(head + START + "\n" + "\n".join(section()) + "\n" + END + tail)
    print(f"wrote the capacity model into {DOC}")


if __name__ == "__main__":
    write()
