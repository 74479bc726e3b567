"""What each process of the deployment uses (memory and CPU), measured while a crawl streams
through the production topology; sizes the Kubernetes requests and limits from it.

    python -m bench.footprint [--pages 300] [--latency-ms 300] [--no-write-helm]

The code server, daemon, webserver and exporter run as in a deployment
(`DagsterDeployment`), the runs as subprocesses of the code server; every second each
process tree's resident memory and CPU time are sampled. A run worker is one tree (its
executor's step processes included), as one Kubernetes Job's pod would hold it. Writes
bench/results/footprint.json and the `resources` blocks of deploy/helm/values.yaml and
deploy/helm/rag-pipeline/values.yaml (between their `footprint:` markers), with the commit
the figures came from.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench.common import machine, print_table, provenance, write_results
from bench.harness import (
    RESULTS,
    Model,
    bench_stack,
    collection_messages,
    corpus,
    job_id_base,
    pipeline,
    send,
    split,
    wait_terminal,
)
from rag_pipeline.local.stack.dagster_dev import processes_with_dagster_home
from rag_pipeline.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
HELM = ROOT / "deploy" / "helm"
HELM_FILES = (HELM / "values.yaml", HELM / "rag-pipeline" / "values.yaml")
WEBSERVER_PORT = 28300
ROLES = ("code_server", "daemon", "webserver", "exporter", "run_worker")
MIB = 1024 * 1024


def role_of(cmdline: str) -> str | None:
    # The code server starts each run in a spawned interpreter (multiprocessing), the CLI
    # launchers as `dagster api execute_run`.
    if "multiprocessing-fork" in cmdline or "execute_run" in cmdline:
        return "run_worker"
    for role, mark in (("daemon", "dagster-daemon"), ("webserver", "dagster-webserver"),
                       ("exporter", "rag-pipeline-exporter"), ("code_server", "api grpc")):
        if mark in cmdline:
            return role
    return None


class TreeSampler:
    """Every second: each root process of a role with its descendants (resident memory
    summed, CPU seconds summed, the dead's last CPU time kept)."""

    def __init__(self, home: Path, settings: Settings) -> None:
        self.home = home
        self.settings = settings
        # PostgreSQL client sessions at their peak: all, and those of run processes (named
        # rag-pipeline:<host>:<pid>:<token>: ledger pool, lock, model slots, LightRAG).
        self.peak_connections = {"all": 0, "run_processes": 0, "runs_at_peak": 0}
        self.peak_rss: dict[str, float] = defaultdict(float)  # role -> MiB, one tree
        self.cores: dict[str, list[float]] = defaultdict(list)  # role -> cores per second
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        previous: dict[str, float] = {}
        with psycopg.connect(self.settings.postgres_conninfo("postgres"),
                             **self.settings.postgres_kwargs(), autocommit=True) as conn:
            while not self._stop.wait(1.0):
                self._sample_connections(conn)
                previous = self._sample_trees(previous)

    def _sample_connections(self, conn: psycopg.Connection) -> None:
        total, runs, processes = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE application_name LIKE 'rag-pipeline:%'), "
            "count(DISTINCT application_name) FILTER (WHERE application_name LIKE "
            "'rag-pipeline:%') FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND pid <> pg_backend_pid()").fetchone()
        peak = self.peak_connections
        if total > peak["all"]:
            peak["all"] = total
        if runs > peak["run_processes"]:
            peak["run_processes"], peak["runs_at_peak"] = runs, processes

    def _sample_trees(self, previous: dict[str, float]) -> dict[str, float]:
        cpu_now: dict[str, float] = defaultdict(float)
        for root, role, tree in self._trees():
            rss = 0.0
            for process in tree:
                with contextlib.suppress(psutil.Error):
                    rss += process.memory_info().rss / MIB
                    times = process.cpu_times()
                    self._cpu[process.pid] = times.user + times.system
            # The largest single tree: one pod holds one of them.
            self.peak_rss[role] = max(self.peak_rss[role], rss)
            cpu_now[f"{role}:{root.pid}"] = sum(self._cpu.get(p.pid, 0.0) for p in tree)
        for key, total in cpu_now.items():
            if key in previous:
                self.cores[key.split(":")[0]].append(max(0.0, total - previous[key]))
        return cpu_now

    def _trees(self) -> list[tuple[psutil.Process, str, list[psutil.Process]]]:
        """(root, role, its processes): each process belongs to its nearest ancestor that is
        a role's root (the code server's tree stops where a run worker's begins)."""
        members = {p.pid: p for p in processes_with_dagster_home(self.home)}
        roles: dict[int, str | None] = {}
        parents: dict[int, int] = {}
        for pid, process in members.items():
            with contextlib.suppress(psutil.Error):
                roles[pid] = role_of(" ".join(process.cmdline()))
                parents[pid] = process.ppid()
        roots = {pid: role for pid, role in roles.items() if role is not None
                 and roles.get(parents.get(pid, 0)) != role}
        trees: dict[int, list[psutil.Process]] = defaultdict(list)
        for pid in roles:
            owner = pid
            while owner not in roots and owner in parents:
                owner = parents[owner]
            if owner in roots:
                trees[owner].append(members[pid])
        return [(members[pid], roots[pid], tree) for pid, tree in trees.items()]


def max_connections(settings: Settings) -> int:
    with psycopg.connect(settings.postgres_conninfo("postgres"), **settings.postgres_kwargs()
                         ) as conn:
        return int(conn.execute("SHOW max_connections").fetchone()[0])


def figures(sampler: TreeSampler) -> dict[str, dict[str, float]]:
    out = {}
    for role in ROLES:
        cores = sorted(sampler.cores.get(role, [])) or [0.0]
        out[role] = {"peak_rss_mib": round(sampler.peak_rss.get(role, 0.0), 1),
                     "mean_cores": round(sum(cores) / len(cores), 3),
                     "p95_cores": round(cores[min(len(cores) - 1, int(len(cores) * 0.95))], 3),
                     "samples": len(sampler.cores.get(role, []))}
    return out


def resources(figure: dict[str, float]) -> dict[str, dict[str, str]]:
    """Requests: what the process used (memory at its peak, CPU on average while it lived);
    limits: twice the peak memory (a larger page or a longer run must not be OOM-killed)
    and the CPU of its busiest seconds (95th percentile), at least half a core."""
    peak = max(figure["peak_rss_mib"], 64.0)
    return {
        "requests": {"cpu": f"{max(100, _up(figure['mean_cores'] * 1000, 50))}m",
                     "memory": f"{_up(peak, 64)}Mi"},
        "limits": {"cpu": f"{max(500, _up(figure['p95_cores'] * 1000, 250))}m",
                   "memory": f"{_up(peak * 2, 128)}Mi"},
    }


def _up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def write_helm(sized: dict[str, dict[str, dict[str, str]]], stamp: str) -> None:
    """Replace each `# footprint:begin <role>` ... `# footprint:end` block of the two
    charts' values."""
    texts = {path: path.read_text() for path in HELM_FILES}
    for role, spec in sized.items():
        pattern = re.compile(rf"( *)# footprint:begin {role}\n.*?\1# footprint:end\n", re.S)
        path = next((p for p, t in texts.items() if pattern.search(t)), None)
        if path is None:
            raise SystemExit(f"no footprint block for {role} in {HELM_FILES}")
        match = pattern.search(texts[path])
        assert match is not None
        pad = match.group(1)
        block = [f"{pad}# footprint:begin {role}", f"{pad}# {stamp}", f"{pad}resources:"]
        for kind in ("requests", "limits"):
            block.append(f"{pad}  {kind}:")
            block += [f"{pad}    {k}: {v}" for k, v in spec[kind].items()]
        block.append(f"{pad}# footprint:end")
        text = texts[path]
        texts[path] = text[:match.start()] + "\n".join(block) + "\n" + text[match.end():]
    for path, text in texts.items():
        path.write_text(text)
    print(f"wrote the resources of {', '.join(sized)} into {', '.join(map(str, HELM_FILES))}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--latency-ms", type=float, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS / "footprint.json")
    parser.add_argument("--no-write-helm", action="store_true")
    args = parser.parse_args(argv)
    collections = split(corpus(args.pages), ["fp-a", "fp-b", "fp-c"])
    messages, owner = collection_messages(collections, job_id_base())
    with bench_stack() as settings:
        model = Model(settings)
        model.set(latency_ms=args.latency_ms)
        with pipeline(settings, 4, {"SENSOR_INTERVAL_SECONDS": "2"}) as run:
            run.deployment.start_webserver(WEBSERVER_PORT)
            run.deployment.start_exporter(run.settings.metrics_port)
            with TreeSampler(run.deployment.home, run.settings) as sampler:
                send(run.settings, messages)
                seconds = wait_terminal(run.ledger, list(owner))
        model.set(latency_ms=0)
        connection_limit = max_connections(settings)
    measured = figures(sampler)
    results = {"machine": machine(), "settings": {
        "pages": len(owner), "collections": len(collections), "latency_ms": args.latency_ms,
        "max_concurrent_runs": 4, "llm_max_concurrency": settings.llm_max_concurrency,
        "ledger_pool_size": settings.ledger_pool_size,
        "lightrag_pool_size": settings.lightrag_pool_size},
        "seconds": round(seconds, 1), "roles": measured,
        "postgres_connections_at_peak": {**sampler.peak_connections,
                                         "max_connections": connection_limit}}
    sized = {role: resources(measured[role]) for role in ROLES}
    results["kubernetes_resources"] = sized
    print_table(f"Footprint per process tree ({len(owner)} pages, {args.latency_ms:.0f} ms)",
                ["role", "peak RSS MiB", "mean cores", "p95 cores", "request", "limit"],
                [[role, f["peak_rss_mib"], f["mean_cores"], f["p95_cores"],
                  f"{sized[role]['requests']['cpu']}/{sized[role]['requests']['memory']}",
                  f"{sized[role]['limits']['cpu']}/{sized[role]['limits']['memory']}"]
                 for role, f in measured.items()])
    peak = results["postgres_connections_at_peak"]
    print(f"PostgreSQL client sessions at their peak: {peak['all']} of max_connections "
          f"{peak['max_connections']}; of run processes: {peak['run_processes']} "
          f"({peak['runs_at_peak']} processes)")
    write_results(args.out, results)
    if not args.no_write_helm:
        origin = provenance()
        write_helm(sized, f"python -m bench.footprint, commit {origin['commit'][:12]}"
                   f"{' (dirty)' if origin['dirty'] else ''}, {len(owner)} pages, "
                   f"{args.latency_ms:.0f} ms model latency")
    return results


if __name__ == "__main__":
    main()
