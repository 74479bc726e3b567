"""Every benchmark, on one bench stack, then the report (docs/benchmarks.md) and its plot.

    make bench        # = python -m bench.run_all

Each benchmark also runs alone: python -m bench.cleaning | staging | cost | pipeline |
latency | scrape | footprint; `python -m bench.report` rebuilds the report from
bench/results/*.json.
"""

from __future__ import annotations

import time

from bench import cleaning, cost, footprint, latency, pipeline, report, scrape, staging
from bench.harness import shared_bench_stack


def main() -> None:
    started = time.monotonic()
    cleaning.main([])
    with shared_bench_stack():
        staging.main([])
        cost.main([])
        pipeline.main([])
        latency.main([])
        scrape.main([])
        footprint.main([])
    report.main()
    print(f"\nAll benchmarks: {(time.monotonic() - started) / 60:.1f} minutes")


if __name__ == "__main__":
    main()
