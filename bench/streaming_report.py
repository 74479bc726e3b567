"""The streaming-runs section of docs/benchmarks.md (issue 15's figures) and its plot of
model requests in flight, from bench/results/{pipeline,start,latency,fairness}.json."""

from __future__ import annotations

from typing import Any

from bench.harness import ROOT

IN_FLIGHT_PLOT = ROOT / "docs" / "images" / "in-flight.png"
SMOOTH_SECONDS = 5


def _commit(result: dict[str, Any] | None) -> str:
    if not result:
        return "-"
    m = result.get("machine", {})
    return f"{str(m.get('commit', '?'))[:7]}{' (dirty)' if m.get('dirty') else ''}"


def _verdict(value: float | None, target: float, higher_is_better: bool = False) -> str:
    if value is None:
        return "not measured"
    met = value >= target if higher_is_better else value <= target
    return "met" if met else "missed"


def streaming_section(pipeline: dict[str, Any] | None, start: dict[str, Any] | None,
                      latency: dict[str, Any] | None, fairness: dict[str, Any] | None,
                      has_plot: bool) -> list[str]:
    rows: list[list[str]] = []
    by_latency = (pipeline or {}).get("compare", {}).get("by_latency", {})
    r300, r2000 = by_latency.get("300"), by_latency.get("2000")
    if r300:
        ratio = r300["ratio_time_pipeline_over_direct"]
        rows.append([f"pipeline time / direct time, {r300['pipeline']['pages']} pages, "
                     "3 collections, 300 ms", f"{ratio:.2f}", "<= 1.15",
                     _verdict(ratio, 1.15), _commit(pipeline)])
    if r2000:
        p, d = r2000["pipeline"], r2000["direct"]
        rows.append([f"model utilisation at 2,000 ms ({p['pages']} pages)",
                     f"{p['utilisation']:.3f} (direct {d['utilisation']:.3f})", ">= 0.95",
                     _verdict(p["utilisation"], 0.95, higher_is_better=True),
                     _commit(pipeline)])
    if start:
        launch = start["launch_to_first_model_request_s"]
        rows.append(["run launch -> first model request, one run alone (median of "
                     f"{len(start['starts'])}; max)", f"{launch['median']:.1f} s; "
                     f"{launch['max']:.1f} s", "<= 8 s", _verdict(launch["median"], 8),
                     _commit(start)])
    if latency:
        rows.append([f"produce -> completed PATCH, {latency['rate_pages_per_s']} pages/s, "
                     f"{latency['model_latency_ms']:.0f} ms, warm (p50 / p95)",
                     f"{latency['p50_s']:.1f} s / {latency['p95_s']:.1f} s",
                     "p50 <= 10 s, p95 <= 20 s",
                     "met" if latency["p50_s"] <= 10 and latency["p95_s"] <= 20 else "missed",
                     _commit(latency)])
    if start and start.get("cold"):
        cold = start["cold"]
        value = cold["produce_to_completed_patch_s"]
        rows.append([f"first page after {cold['idle_minutes']} idle minutes (cold), produce "
                     "-> completed PATCH", f"{value:.1f} s" if value is not None else "-",
                     "<= 45 s", _verdict(value, 45), _commit(start)])
    if fairness:
        f = fairness["settings"]
        rows.append([f"{f['collections']} collections x {f['pages_per_collection']} pages, "
                     f"{f['max_concurrent_runs']} run slots: longest wait for a first page / "
                     "mean", f"{fairness['longest_over_mean']:.2f} "
                     f"({fairness['longest_wait_s']:.0f} s / {fairness['mean_wait_s']:.0f} s)",
                     "<= 3", _verdict(fairness["longest_over_mean"], 3), _commit(fairness)])
    if not rows:
        return []
    lines = ["## Streaming runs", "",
             "Runs drain their collection (docs/design.md, invariant 10). Each figure from "
             "one run of its benchmark, commit of that run:", "",
             "| figure | value | target | | commit |", "|---|---|---|---|---|",
             *("| " + " | ".join(r) + " |" for r in rows), ""]
    if has_plot:
        lines += ["![Model requests in flight, pipeline and direct](images/in-flight.png)", ""]
    if start:
        lines += start_table(start)
    if pipeline and r300:
        runs = r300["pipeline"].get("runs_per_collection")
        if runs:
            lines += [f"Runs per collection in the 300 ms backlog: {sorted(runs.values())}; "
                      f"settings: {pipeline.get('settings')}.", ""]
    return lines


def start_table(start: dict[str, Any]) -> list[str]:
    starts = start["starts"]
    steps = list(starts[0]["steps_s"])
    lines = ["Where a run's start goes (seconds, one run alone, "
             f"{start['settings']['pages_per_start']} pages, read from Dagster's event log "
             "and the stand-in's first request):", "",
             "| step | " + " | ".join(f"start {i + 1}" for i in range(len(starts))) + " |",
             "|---|" + "---:|" * len(starts)]
    for step in steps:
        lines.append(f"| {step} | " + " | ".join(f"{s['steps_s'].get(step, '-')}"
                                                   for s in starts) + " |")
    lines.append("| **launch -> first model request** | " + " | ".join(
        f"**{s['launch_to_first_model_request_s']}**" for s in starts) + " |")
    return [*lines, ""]


def _in_flight(run: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Seconds since the start, and model requests in flight (seconds of requests per
    second, averaged over SMOOTH_SECONDS)."""
    timeline = run.get("timeline") or []
    if not timeline:
        return [], []
    start = run["started_at"]
    busy = {int(row["t"] - start): row.get("chat_busy_seconds", 0.0) for row in timeline}
    end = max(busy)
    xs, ys = [], []
    for second in range(0, end + 1):
        window = [busy.get(s, 0.0) for s in range(second - SMOOTH_SECONDS + 1, second + 1)]
        xs.append(second)
        ys.append(sum(window) / SMOOTH_SECONDS)
    return xs, ys


def plot_in_flight(pipeline: dict[str, Any] | None) -> bool:
    by_latency = (pipeline or {}).get("compare", {}).get("by_latency", {})
    cases = [(k, v) for k, v in by_latency.items() if k != "0"
             and v["pipeline"].get("timeline") and v["direct"].get("timeline")]
    if not cases:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bound = int(pipeline["settings"]["LLM_MAX_CONCURRENCY"]) if pipeline.get("settings") else 8
    fig, axes = plt.subplots(len(cases), 1, figsize=(10, 3.6 * len(cases)), squeeze=False)
    for ax, (latency, r) in zip(axes[:, 0], cases, strict=True):
        for kind, colour in (("pipeline", "#6c8ebf"), ("direct", "#d79b00")):
            xs, ys = _in_flight(r[kind])
            ax.plot(xs, ys, color=colour, linewidth=1.3,
                    label=f"{kind} ({r[kind]['seconds']:.0f} s)")
        ax.axhline(bound, color="grey", linestyle="--", linewidth=0.8,
                   label=f"LLM_MAX_CONCURRENCY = {bound}")
        ax.set_ylim(0, bound * 1.15)
        ax.set_ylabel("model requests in flight")
        ax.set_title(f"{r['pipeline']['pages']} pages, 3 collections, model latency "
                     f"{latency} ms ({SMOOTH_SECONDS} s average)", fontsize=10)
        ax.legend(loc="lower center", fontsize=8)
    axes[-1, 0].set_xlabel("seconds since the pages were published (pipeline) / handed to "
                           "LightRAG (direct)")
    fig.tight_layout()
    IN_FLIGHT_PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(IN_FLIGHT_PLOT, dpi=110)
    plt.close(fig)
    return True
