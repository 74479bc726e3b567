"""The "Where the cost per page goes" section of docs/benchmarks.md, from
bench/results/profile.json (python -m bench.profile)."""

from __future__ import annotations

from typing import Any

SHOWN_STATEMENTS = 10
# The target: CPU-seconds per page, all processes, pipeline / direct.
CPU_RATIO_TARGET = 1.3


def profile_section(results: dict[str, Any] | None) -> list[str]:
    if not results:
        return []
    m, r = results["machine"], results["profile"]
    total = sum(r["cpu_seconds"].values())
    direct = r["direct"]
    direct_total = sum(direct["cpu_seconds"].values())
    ratio = round(total / direct_total, 2)
    lines = [
        "## Where the cost per page goes", "",
        f"`python -m bench.profile`: the pipeline of the comparison above ({r['pages']} pages, "
        f"3 collections, stand-in at {r['latency_ms']:.0f} ms; settings "
        + ", ".join(f"{k}={v}" for k, v in results["settings"].items())
        + f"), every process's CPU sampled each second and every statement counted by "
        f"PostgreSQL's `pg_stat_statements`. Commit {m['commit'][:10]}"
        f"{' (dirty)' if m['dirty'] else ''}, {m['date']}, {m['cpus']} cores; "
        f"{r['seconds']} s for the pages, {round(total, 1)} CPU-seconds in all processes, "
        f"{round(total / r['pages'], 3)} per page; then the same pages inserted by LightRAG "
        f"directly: {direct['seconds']} s, {round(direct_total, 1)} CPU-seconds, "
        f"{round(direct_total / r['pages'], 3)} per page. CPU per page, pipeline / direct: "
        f"**{ratio}** (target <= {CPU_RATIO_TARGET}: "
        f"{'met' if ratio <= CPU_RATIO_TARGET else 'MISSED'}).", "",
        "| process | pipeline CPU s | per page | direct CPU s | per page |",
        "|---|---|---|---|---|",
        *(f"| {k} | {r['cpu_seconds'].get(k, 0)} | {r['cpu_seconds_per_page'].get(k, 0)} | "
          f"{direct['cpu_seconds'].get(k, 0)} | {direct['cpu_seconds_per_page'].get(k, 0)} |"
          for k in {**r["cpu_seconds"], **direct["cpu_seconds"]}), ""]
    for database, found in {**r["statements"],
                            "direct LightRAG's database": direct["statements"]}.items():
        lines += [f"**Statements of {database}**: {found['calls_per_page']} per page, "
                  f"{found['ms_per_page']} ms of execution per page.", "",
                  "| touches | statements per page | ms per page |", "|---|---|---|",
                  *(f"| {area} | {t['calls_per_page']} | {t['ms_per_page']} |"
                    for area, t in found["by_area"].items()), "",
                  "| most frequent | per page | touches |", "|---|---|---|",
                  *(f"| `{s['query'][:100].replace('|', '/')}` | {s['calls_per_page']} | "
                    f"{s['area']} |" for s in found["top"][:SHOWN_STATEMENTS]), ""]
    return lines
