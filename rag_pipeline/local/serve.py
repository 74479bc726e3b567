"""`rag-pipeline serve`: the production topology on this machine (docs/deployment.md).

The code location in its own gRPC code server, the daemon and the webserver reaching it
through a `grpc_server` workspace, and the metrics exporter: four processes, each in its
own working directory, configured by environment variables only. The settings files
(`.env`, `local.env`) are read here, once, and handed on as variables, as a deployment's
environment or Kubernetes Secret would hand them; no service reads a file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import NoReturn

from dotenv import dotenv_values

from rag_pipeline.local.stack.dagster_dev import DagsterDev
from rag_pipeline.local.stack.deployment import DagsterDeployment
from rag_pipeline.local.stack.processes import StackError
from rag_pipeline.settings import Settings, env_files

SERVICES = ("code_server", "webserver", "daemon", "exporter")


def environment_only() -> dict[str, str]:
    """This process's environment with the settings files' variables folded in (the
    environment wins, as it does for the settings), and no file left to read."""
    from_files: dict[str, str] = {}
    for path in env_files():  # local.env, then .env over it
        if os.path.exists(path):
            from_files.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    return {**from_files, **os.environ, "RAG_PIPELINE_ENV_FILE": ""}


def serve(settings: Settings, echo: Callable[[str], None]) -> NoReturn:
    """Start the four services and watch them until KeyboardInterrupt, or a StackError
    naming the service that did not start or exited and its log. Every service is stopped
    on the way out."""
    # Same DAGSTER_HOME as `rag-pipeline dev`: one Dagster per checkout, and `rag-pipeline
    # stack down` finds and stops either.
    dagster_dev = DagsterDev(settings)
    dagster_dev.require_not_running()
    env = {**environment_only(), "DAGSTER_POSTGRES_DB": settings.dagster_postgres_db}
    deployment = DagsterDeployment.prepare(settings, dagster_dev.home, env)
    try:
        echo(f"Starting the code server (dagster api grpc on 127.0.0.1:"
             f"{deployment.code_server_port}) ...")
        deployment.start_code_server()
        echo("Starting the webserver, the daemon and the metrics exporter ...")
        ui = deployment.start_webserver(settings.dagster_port)
        deployment.start_daemon()
        metrics = deployment.start_exporter(settings.metrics_port)
        echo(f"Dagster UI: {ui}  (Ctrl-C stops the four services)")
        echo(f"Metrics: {metrics}/metrics (also /healthz, /readyz)")
        echo(f"Workspace: {deployment.workspace}; logs: {deployment.home}/<service>.log")
        while True:
            for name in SERVICES:
                if deployment.processes[name].poll() is not None:
                    raise StackError(f"the {name} exited; see {deployment.home}/{name}.log")
            time.sleep(1)
    except RuntimeError as exc:  # a service that did not start: its log is named
        raise StackError(str(exc)) from None
    finally:
        deployment.stop()
