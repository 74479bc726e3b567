"""Dagster's own processes (daemon, webserver, code server) with every line in JSON.

`--log-format json` makes Dagster's CLI configure its `dagster` loggers only; Dagster's own
database retries warn through the root logger, which Python then prints as text
(`WARNING:root:Retrying failed database connection ...`) exactly during an outage. This
starts the Dagster command named by the first argument with the root logger already
writing LOG_FORMAT lines (observability/logs.py):

    python -m rag_pipeline.observability.dagster_process dagster-daemon run -w workspace.yaml \\
        --log-format json

A code server started this way gives its run workers the same start: Dagster's code server
spawns each run worker with multiprocessing's "spawn" method, which imports this module again
(as `__mp_main__`) before the worker opens Dagster's storage and long before it imports the
code location; an outage at that moment is exactly when Dagster's retries warn. Run workers
that the Docker or Kubernetes run launcher starts in containers of their own run the command
the code server names for them: through this module as well.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import entry_points

from rag_pipeline.observability.logs import configure_logging

MODULE = "rag_pipeline.observability.dagster_process"
DAGSTER_COMMANDS = ("dagster", "dagster-daemon", "dagster-webserver")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in DAGSTER_COMMANDS:
        sys.exit(f"usage: python -m {MODULE} {{{'|'.join(DAGSTER_COMMANDS)}}} ARGS...")
    _configure()
    if args[:3] == ["dagster", "api", "grpc"]:
        from rag_pipeline.dagster_internals import run_workers_start_with

        run_workers_start_with([sys.executable, "-m", MODULE, "dagster"])
    [command] = entry_points(group="console_scripts", name=args[0])
    sys.argv = args
    sys.exit(command.load()())


def _configure() -> None:
    # Warnings and errors: Dagster's own lines keep the level its CLI gives its loggers.
    configure_logging(os.environ.get("LOG_FORMAT", "json"), level=logging.WARNING)


if __name__ == "__main__":
    main()
elif __name__ == "__mp_main__":
    _configure()  # a run worker the code server spawned (see the module's docstring)
