"""The quick start's `dagster dev` (UI, daemon, code servers, run workers): one per checkout,
ended by Ctrl-C or a hang-up of `rag-pipeline dev`, and by `rag-pipeline stack down`.

Every process of it inherits DAGSTER_HOME=<stack>/dagster_home, which is how they are found
again: a code server or run worker may start a session of its own, out of the process
group of `dagster dev`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from rag_pipeline.local.stack.processes import ServiceProcess, StackError, pid_alive
from rag_pipeline.settings import Settings

GRACEFUL_STOP_SECONDS = 30.0


def processes_with_dagster_home(home: Path) -> list[psutil.Process]:
    """Every process whose environment names this DAGSTER_HOME (ours: we run as their user)."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get("DAGSTER_HOME") == str(home):
                found.append(process)
    return found


class DagsterDev:
    def __init__(self, settings: Settings) -> None:
        self.home = settings.stack_path / "dagster_home"
        self.process = ServiceProcess("dagster", settings.stack_path)
        self.ui = f"http://127.0.0.1:{settings.dagster_port}"

    def running(self) -> list[psutil.Process]:
        return processes_with_dagster_home(self.home)

    def require_not_running(self) -> None:
        """Two daemons on one instance fight over its heartbeats, two UIs over one port."""
        if running := self.running():
            pids = ", ".join(str(p.pid) for p in running[:5])
            raise StackError(
                f"Dagster is already running for this checkout (pids {pids}; DAGSTER_HOME "
                f"{self.home}), for example from an earlier `make up` whose terminal closed. "
                f"Its UI: {self.ui}. Stop it with `make down` (or `rag-pipeline stack down`), "
                "then run `make up` again.")

    def start(self, argv: Sequence[str], env: dict[str, str]) -> int:
        """Start `dagster dev` in DAGSTER_HOME; refuse if Dagster already runs on it."""
        self.require_not_running()
        self.home.mkdir(parents=True, exist_ok=True)
        return self.process.start(argv, env=env, cwd=self.home)

    def alive(self) -> bool:
        return self.process.pid is not None

    def stop(self) -> bool:
        """Ctrl-C to `dagster dev` (it stops its webserver, daemon and code servers), then
        SIGTERM/SIGKILL to what is left. True if something ran."""
        pid = self.process.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGINT)
            deadline = time.monotonic() + GRACEFUL_STOP_SECONDS
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
        self.process.stop(timeout=10)  # what ignored Ctrl-C
        stragglers = self.running()
        for process in stragglers:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(stragglers, timeout=10)
        return pid is not None or bool(stragglers)
