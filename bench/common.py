"""What every benchmark shares: the machine description, tables and JSON results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import threading
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

PACKAGES = ("dagster", "lightrag-hku", "confluent-kafka", "psycopg", "trafilatura", "openai")


def machine() -> dict[str, Any]:
    memory = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) // 1024
    except OSError:
        pass
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True,
                              timeout=30).stderr.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        java = "unknown"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **provenance(),
        # What else ran: a benchmark that shared the machine says so.
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "memory_mib": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "java": java,
        "packages": {name: _version(name) for name in PACKAGES},
    }


def provenance() -> dict[str, Any]:
    """The commit the figures come from, and whether its code differed from it (what the
    benchmarks write themselves - results and the docs generated from them - does not count,
    or a run's second figure would call the first one's output a change)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD") or "unknown",
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", ".",
                              ":(exclude)bench/results", ":(exclude)docs"))}


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=False)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def write_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")


# --- where the CPU goes ----------------------------------------------------------------------
CPU_CLASSES = (  # first match wins: (class, marker in the command line)
    ("run workers", "multiprocessing-fork"),
    ("run workers", "execute_run"),
    ("dagster-daemon", "dagster-daemon"),
    ("code server", "dagster api grpc"),
    ("dagster-webserver", "dagster-webserver"),
    ("model stand-in", "devservers.llm"),
    ("go-api stand-in", "devservers.go_api"),
    ("postgres", "postgres"),
    ("kafka", "kafka.Kafka"),
)


class CpuSampler:
    """CPU seconds per kind of process while a benchmark runs (every process on the machine,
    sampled each second, so that short-lived run workers are counted too)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.totals: dict[int, tuple[str, float]] = {}
        self.commands: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._started = 0.0

    def __enter__(self) -> CpuSampler:
        self._sample()
        self._baseline = {pid: cpu for pid, (_, cpu) in self.totals.items()}
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.seconds = time.monotonic() - self._started

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        me = os.getpid()
        for process in psutil.process_iter(["cmdline", "cpu_times"]):
            try:
                times = process.info["cpu_times"]
                if times is None:
                    continue
                cmdline = " ".join(process.info["cmdline"] or [])
                known = self.totals.get(process.pid)
                if known and not cmdline:  # exited (a zombie has no command line): keep its kind
                    kind = known[0]
                else:
                    kind = "benchmark harness" if process.pid == me else next(
                        (k for k, mark in CPU_CLASSES if mark in cmdline), "other")
                    self.commands[process.pid] = cmdline[:100]
                self.totals[process.pid] = (kind, times.user + times.system)
            except psutil.Error:
                continue

    def by_class(self) -> dict[str, float]:
        """CPU seconds used during the sampling, per kind of process."""
        out: dict[str, float] = {}
        for pid, (kind, cpu) in self.totals.items():
            out[kind] = out.get(kind, 0.0) + cpu - self._baseline.get(pid, 0.0)
        return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}

    def unclassified(self, top: int = 5) -> list[tuple[str, float]]:
        """The command lines behind "other" that used the most CPU."""
        used: dict[str, float] = {}
        for pid, (kind, cpu) in self.totals.items():
            if kind == "other":
                command = self.commands.get(pid, "?")
                used[command] = used.get(command, 0.0) + cpu - self._baseline.get(pid, 0.0)
        return sorted(((c, round(v, 1)) for c, v in used.items()), key=lambda cv: -cv[1])[:top]
