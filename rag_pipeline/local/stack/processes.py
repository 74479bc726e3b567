"""Starting, finding and stopping the local stack's background processes.

Each service writes its pid to `<stack>/run/<name>.pid` and its output to
`<stack>/logs/<name>.log`, so `stack down` and `stack status` work from any shell.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rag_pipeline.operations.common import OperatorError


class StackError(OperatorError):
    """Something the user can fix stopped the local stack; the message says what to do."""


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_free_port(host: str, port: int, service: str, setting: str) -> None:
    if not port_is_free(host, port):
        raise StackError(
            f"{service}: port {host}:{port} is already in use by another program. "
            f"Stop that program or choose another port with {setting}."
        )


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, log_file: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    hint = f" See {log_file}." if log_file else ""
    raise StackError(f"{what} did not become ready within {timeout:.0f} s.{hint}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) still answers kill(0).
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    return True


class ServiceProcess:
    """A detached process of the stack, tracked through a pid file."""

    def __init__(self, name: str, stack_dir: Path) -> None:
        self.name = name
        self.pid_file = stack_dir / "run" / f"{name}.pid"
        self.log_file = stack_dir / "logs" / f"{name}.log"

    @property
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def start(self, argv: Sequence[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> int:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,  # survives the shell that ran `stack up`
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def stop(self, timeout: float = 20.0) -> bool:
        """SIGTERM the process group, then SIGKILL what is left. True if something ran."""
        pid = self.pid
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.05)
        return True


def rss_bytes(pid: int | None) -> int | None:
    """Resident memory of a process and its children, or None when unknown."""
    if pid is None:
        return None
    try:
        import psutil
    except ImportError:
        return None
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs if p.is_running())
    except psutil.Error:
        return None
