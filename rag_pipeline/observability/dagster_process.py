"""Dagster's own processes (daemon, webserver, code server) with every line in JSON.

`--log-format json` makes Dagster's CLI configure its `dagster` loggers only; Dagster's own
database retries warn through the root logger, which Python then prints as text
(`WARNING:root:Retrying failed database connection ...`) exactly during an outage. This
starts the Dagster command named by the first argument with the root logger already
writing LOG_FORMAT lines (observability/logs.py):

    python -m rag_pipeline.observability.dagster_process dagster-daemon run -w workspace.yaml \\
        --log-format json
"""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import entry_points

from rag_pipeline.observability.logs import configure_logging

DAGSTER_COMMANDS = ("dagster", "dagster-daemon", "dagster-webserver")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in DAGSTER_COMMANDS:
        sys.exit(f"usage: python -m rag_pipeline.observability.dagster_process "
                 f"{{{'|'.join(DAGSTER_COMMANDS)}}} ARGS...")
    # Warnings and errors: Dagster's own lines keep the level its CLI gives its loggers.
    configure_logging(os.environ.get("LOG_FORMAT", "json"), level=logging.WARNING)
    [command] = entry_points(group="console_scripts", name=args[0])
    sys.argv = args
    sys.exit(command.load()())


if __name__ == "__main__":
    main()
