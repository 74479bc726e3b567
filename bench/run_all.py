"""Every benchmark, on one bench stack, then the report (docs/benchmarks.md) and its plot.

    make bench        # = python -m bench.run_all

Each benchmark also runs alone: python -m bench.cleaning | staging | cost | pipeline |
latency | fairness | scrape | footprint | start; `python -m bench.report` rebuilds the report from
bench/results/*.json.
"""

from __future__ import annotations

import time

from bench import (
    cleaning,
    cost,
    fairness,
    footprint,
    latency,
    pipeline,
    report,
    scrape,
    staging,
    start,
)
from bench.harness import shared_bench_stack


def main() -> None:
    started = time.monotonic()
    cleaning.main([])
    with shared_bench_stack() as settings, start.cold_probe(settings) as probe:
        # The probe's deployment sits idle from here; its cold page is measured last.
        staging.main([])
        cost.main([])
        pipeline.main([])
        latency.main([])
        fairness.main([])
        scrape.main([])
        footprint.main([])
        start.main([], probe=probe)
    report.main()
    print(f"\nAll benchmarks: {(time.monotonic() - started) / 60:.1f} minutes")


if __name__ == "__main__":
    main()
