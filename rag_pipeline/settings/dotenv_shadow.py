"""A `.env` in the working directory of a Dagster CLI process (dagster dev, dagster-daemon,
dagster-webserver, dagster code-server, dagster definitions validate) is loaded by Dagster
*over* the environment: a variable the user exports is silently replaced by the file's.

`shadowed_variables` names those variables (never their values), by comparing the `.env`
with the environment each process of the chain was started with (`/proc/PID/environ`,
which Dagster's in-process override does not change): the code server's own and its
parents'. Linux only; elsewhere it finds nothing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dotenv import dotenv_values

from rag_pipeline.observability.events import event_line

log = logging.getLogger("rag_pipeline.settings")
# The code server is the daemon's or webserver's child, which is `dagster dev`'s child.
ANCESTORS = 3


def started_environment(pid: int) -> dict[str, str]:
    """The environment process `pid` was started with ({} when it cannot be read)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The fields after the command's closing parenthesis: state, then the parent's pid.
    return int(stat.rsplit(")", 1)[1].split()[1])


def shadowed_variables(directory: str | None = None) -> list[str]:
    """Variables a `.env` in `directory` (the working directory) sets to another value than
    the environment this process or one of its parents was started with."""
    env_file = Path(directory or os.getcwd()) / ".env"
    if not env_file.is_file():
        return []
    from_file = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    shadowed: set[str] = set()
    pid: int | None = os.getpid()
    for _ in range(ANCESTORS + 1):
        if not pid or pid <= 1:
            break
        started = started_environment(pid)
        shadowed |= {k for k, v in from_file.items() if k in started and started[k] != v}
        pid = parent_of(pid)
    return sorted(shadowed)


def warn_if_shadowed() -> list[str]:
    """Log one warning naming what a `.env` overrides; the variables it names."""
    names = shadowed_variables()
    if names:
        log.warning(event_line(
            "env_file_overrides_environment", variables=names, env_file=str(Path(".env").resolve()),
            action="Dagster's CLI loads .env over the environment, so these exported values "
            "are ignored: remove them from .env (copy only the lines you change from "
            ".env.example) or unset them"))
    return names
