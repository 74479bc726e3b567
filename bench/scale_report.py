"""The "Cost as the work grows" section of docs/benchmarks.md and docs/images/scale.png, from
bench/results/scale.json and retention.json (written by `make scale`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "docs" / "images" / "scale.png"
# (result key, what it is, True when a larger figure is better)
FIGURES = [
    ("staging_messages_per_s", "staging (messages/s)", True),
    ("sensor_tick_s", "a sensor tick (s)", False),
    ("claim_s", "a run's claim of 48 jobs (s)", False),
    ("reconcile_s", "reconciliation (s)", False),
    ("inspect_s", "`rag-pipeline inspect` (s)", False),
]


def origin(m: dict[str, Any]) -> str:
    return f"{str(m.get('commit', '?'))[:7]}{' (dirty)' if m.get('dirty') else ''}"


def cost_ratio(base: float, value: float, higher_is_better: bool) -> float:
    """How many times the empty ledger's cost this is (throughput: inverted)."""
    if higher_is_better:
        return base / value if value else float("inf")
    return value / base if base else float("inf")


def plot_scale(scale: dict[str, Any]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    results = scale["results"]
    base = results[0]
    sizes = [r["jobs"] for r in results]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, label, better in FIGURES:
        ax.plot(sizes, [cost_ratio(base[key], r[key], better) for r in results], marker="o",
                label=label)
    ax.axhline(scale.get("target_ratio", 1.5), color="red", linestyle="--", label="target")
    ax.set_xscale("symlog", linthresh=100_000)
    ax.set_xlabel("jobs in the ledger (finished history)")
    ax.set_ylabel("cost / cost on the empty ledger")
    ax.set_title(f"Cost as the work grows ({origin(scale['machine'])})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    IMAGE.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(IMAGE, dpi=100)
    plt.close(fig)
    return True


def scale_section(scale: dict[str, Any] | None, retention: dict[str, Any] | None) -> list[str]:
    lines = ["## Cost as the work grows", ""]
    if scale:
        results, s = scale["results"], scale["settings"]
        base, target = results[0], scale.get("target_ratio", 1.5)
        lines += [
            f"`make scale` (`python -m bench.scale`), commit {origin(scale['machine'])}: the "
            f"same live work ({s['live_messages']} new messages over {s['live_collections']} "
            f"collections) on a ledger holding a finished history over {s['collections']:,} "
            "collections, with one Dagster dynamic partition per collection and one finished "
            f"run per {s['jobs_per_run']} jobs. Medians of {s['repeat']} calls.",
            "",
            "| operation | " + " | ".join(f"{r['jobs']:,} jobs" for r in results)
            + f" | largest / empty | target <= {target} |",
            "|---|" + "---:|" * len(results) + "---:|---|",
        ]
        for key, label, better in FIGURES:
            worst = cost_ratio(base[key], results[-1][key], better)
            lines.append(f"| {label} | " + " | ".join(str(r[key]) for r in results)
                         + f" | {worst:.2f} | {'met' if worst <= target else 'missed'} |")
        lines += ["", "Dagster partitions at each size: "
                  + ", ".join(f"{r['partitions']:,}" for r in results)
                  + "; seconds to fill each size: "
                  + ", ".join(str(r["fill_seconds"]) for r in results) + ".", ""]
        if plot_scale(scale):
            lines += ["![Cost as the ledger grows](images/scale.png)", ""]
    if retention:
        r, m = retention, retention["machine"]
        lines += [
            f"Bytes per page (`python -m bench.retention`, commit {origin(m)}, {r['pages']} "
            f"pages over {r['collections']} collections through the Dagster deployment, "
            "relation sizes with indexes and TOAST, after VACUUM FULL):",
            "",
            "| where | before pruning | after pruning |",
            "|---|---:|---:|",
        ]
        for name, before in r["bytes_per_page_before"].items():
            lines.append(f"| {name} | {before:,} | {r['bytes_per_page_after'][name]:,} |")
        lines += ["", f"Dagster's event log: {r['event_log_bytes_per_run']:,} bytes per run "
                  f"({r['runs']} runs, {r['event_log_rows_per_run']} events each on average), "
                  f"{r['event_log_bytes_per_page']:,} bytes per page.", ""]
    return lines
