"""Every benchmark, on one bench stack, then the report (docs/benchmarks.md) and its plot.

    make bench        # = python -m bench.run_all

Each benchmark also runs alone: python -m bench.cleaning | staging | cost | pipeline |
latency | fairness | profile | scrape | footprint | start | renewal | drop | serving;
`python -m bench.report`
rebuilds the report from bench/results/*.json.
"""

from __future__ import annotations

import time

from bench import (
    cleaning,
    cost,
    drop,
    fairness,
    footprint,
    latency,
    pipeline,
    profile,
    renewal,
    report,
    scrape,
    serving,
    staging,
    start,
)
from bench.harness import shared_bench_stack


def main() -> None:
    started = time.monotonic()
    cleaning.main([])
    with shared_bench_stack():
        staging.main([])
        cost.main([])
        # 300 ms and 2,000 ms side by side (0 ms and the scaling runs: python -m bench.pipeline)
        pipeline.main(["--latencies", "300,2000", "--slow-pages", "90", "--scaling-pages", "0"])
        profile.main([])
        latency.main(["--seconds", "180"])
        fairness.main([])
        renewal.main([])
        drop.main([])
        serving.main([])
        scrape.main([])
        # Its cold page waits 10 minutes on a deployment with nothing else running (an idle
        # deployment still ticks its sensors: it would slow the others down).
        start.main([])
        # Last: it rewrites the resource blocks of deploy/helm (tracked files), which would
        # mark every later benchmark's commit dirty.
        footprint.main([])
    report.main()
    print(f"\nAll benchmarks: {(time.monotonic() - started) / 60:.1f} minutes")


if __name__ == "__main__":
    main()
