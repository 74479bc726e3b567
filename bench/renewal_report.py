"""The "Renewing a collection" section of docs/benchmarks.md, from bench/results/renewal.json
(python -m bench.renewal)."""

from __future__ import annotations

from typing import Any

# The targets for re-crawling an unchanged site, against its first crawl.
TARGETS = {"chat_calls_ratio": 0.01, "seconds_ratio": 0.2}
NAMES = {"first_crawl": "first crawl (alias answers from it)",
         "blue_green_unchanged": "blue/green re-crawl, nothing changed",
         "blue_green_changed": "blue/green re-crawl, pages changed",
         "in_place_unchanged": "in-place re-crawl, nothing changed",
         "in_place_changed": "in-place re-crawl, pages changed"}


def renewal_section(results: dict[str, Any] | None) -> list[str]:
    if not results:
        return []
    m = results["machine"]
    crawls = results["crawls"]
    lines = [
        "## Renewing a collection", "",
        f"`python -m bench.renewal`: {results['pages']} postgresql-doc-15 pages, "
        f"{results['changed']} of them changed in the re-crawls that change pages; model "
        f"stand-in at {results['latency_ms']:.0f} ms (the other settings are the defaults). "
        f"Commit {m['commit'][:10]}{' (dirty)' if m['dirty'] else ''}, {m['date']}. Seconds: "
        "from the first produce to the alias answering from the new collection (blue/green) "
        "or to the last job's end (in place). Queries: a loop asking for "
        f"{results['probes']} changed pages by a passage of their own text during the "
        "re-crawl (at rest for the first crawl), by alias or in the collection; a miss is an "
        "answer without the page.", "",
        "| crawl | pages | changed | seconds | / first | chat calls | / first | queries | "
        "missed | empty |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in crawls.items():
        q = r.get("queries", {})
        lines.append(f"| {NAMES.get(key, key)} | {r['pages']} | {r['changed']} | "
                     f"{r['seconds']} | {r['seconds_ratio']} | {r['chat_calls']} | "
                     f"{r['chat_calls_ratio']} | {q.get('queries', '-')} | "
                     f"{q.get('probe_missed', '-')} | {q.get('empty_answers', '-')} |")
    unchanged = crawls.get("blue_green_unchanged", {})
    verdicts = [f"{name.replace('_', ' ')} {unchanged.get(name)} (target <= {target}: "
                f"{'met' if unchanged.get(name, 1e9) <= target else 'missed'})"
                for name, target in TARGETS.items()]
    lines += ["", "Blue/green re-crawl of the unchanged site against its first crawl: "
              + "; ".join(verdicts) + ".", ""]
    return lines


def drop_section(results: dict[str, Any] | None) -> list[str]:
    """The "Dropping a collection" section, from bench/results/drop.json (bench.drop)."""
    if not results:
        return []
    m = results["machine"]
    mib = 2 ** 20

    def size(key: str) -> str:
        return f"{results[key] / mib:,.1f} MiB"

    return [
        "## Dropping a collection", "",
        f"`python -m bench.drop`: a collection of {results['pages']} postgresql-doc-15 pages "
        f"(and a neighbour of a tenth of that) indexed by the pipeline, then dropped as "
        f"`rag-pipeline drop` does ({results['batch_rows']} rows per statement); "
        f"{results['settings']}. Commit {m['commit'][:10]}{' (dirty)' if m['dirty'] else ''}, "
        f"{m['date']}. Sizes on disk are LightRAG's tables with their indexes and TOAST.", "",
        "| figure | value |", "|---|---|",
        f"| LightRAG rows of the collection (every table) | {results['rows']:,} |",
        f"| their bytes (stored row size) | {size('row_bytes')} |",
        f"| drop, seconds | {results['drop_seconds']} |",
        f"| rows left after the drop | {results['rows_left']} |",
        f"| the neighbour's rows unchanged | {results['neighbour_unchanged']} |",
        f"| on disk before the drop | {size('disk_bytes_before')} |",
        f"| on disk after the drop | {size('disk_bytes_after_drop')} |",
        f"| after VACUUM (given back to the OS; the rest is reused for new rows) | "
        f"{size('disk_bytes_after_vacuum')} ({results['vacuum_seconds']} s) |",
        f"| after VACUUM FULL (tables rewritten, each locked meanwhile) | "
        f"{size('disk_bytes_after_vacuum_full')} ({results['vacuum_full_seconds']} s) |",
        "",
    ]
