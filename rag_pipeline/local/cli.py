"""The workshop's `rag-pipeline` commands (local stack, Dagster dev, sample data), added to
the operator's group of rag_pipeline.operations.cli; `python -m rag_pipeline.local.cli`
runs the whole group.

Every failure a user can cause ends in one readable message and exit status 2, never a
stack trace.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from rag_pipeline.local import PROJECT_ROOT
from rag_pipeline.local.stack import LocalStack
from rag_pipeline.local.stack.dagster_dev import DagsterDev
from rag_pipeline.local.stack.processes import ServiceProcess
from rag_pipeline.operations.cli import main
from rag_pipeline.operations.common import UserError, cli_settings, open_ledger, user_errors
from rag_pipeline.settings import (
    LOCAL_ENV_FILE,
    Settings,
    SettingsError,
    env_files_by_absolute_path,
    load_settings,
)


# --- env -----------------------------------------------------------------------------------
@main.group()
def env() -> None:
    """The settings files of this checkout (local.env for the local stack)."""


@env.command("init")
@click.option("--path", type=click.Path(path_type=Path), default=Path(LOCAL_ENV_FILE),
              show_default=True)
def env_init(path: Path) -> None:
    """Create local.env with a fresh random password for the local PostgreSQL (if missing).

    It holds that password and nothing else, and every other source wins over it: exported
    variables and your own .env. (Dagster's CLI loads a .env of its working directory over
    the environment, so the project never writes one: a pinned default there would silently
    beat what you export.)
    """
    if path.exists():
        click.echo(f"{path} exists; left unchanged.")
        return
    path.write_text(
        "# Written by `rag-pipeline env init` for the local stack (make up). Lowest precedence:\n"
        "# exported variables and .env win over it. Every setting: .env.example, README.\n"
        f"POSTGRES_PASSWORD={secrets.token_urlsafe(18)}\n")
    path.chmod(0o600)
    click.echo(f"Created {path} (random POSTGRES_PASSWORD for the local stack).")


# --- stack ---------------------------------------------------------------------------------
@main.group()
def stack() -> None:
    """The local Kafka, PostgreSQL + pgvector, Go API stand-in and stand-in model."""


@stack.command("up")
@user_errors
def stack_up() -> None:
    """Start every service (idempotent) and wait until each is healthy."""
    settings = cli_settings()
    LocalStack(settings).up(progress=lambda msg: click.echo(f"  {msg}"))
    _print_status(LocalStack(settings))


@stack.command("down")
@click.option("--purge", is_flag=True, help="Also delete the stack's data folder.")
@user_errors
def stack_down(purge: bool) -> None:
    """Stop Dagster (if `rag-pipeline dev` left it running) and every service of the stack."""
    try:
        settings = cli_settings()
    except SettingsError:
        # Stopping needs no password; without local.env (a stack never started, or purged)
        # every other setting still says where the stack's processes are.
        settings = load_settings(postgres_password="not-needed-to-stop")
    stopped = LocalStack(settings).down(purge=purge)
    click.echo(f"Stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@stack.command("status")
@user_errors
def stack_status() -> None:
    """Show each service's health, address and memory; exit 1 if one is unhealthy."""
    healthy = _print_status(LocalStack(cli_settings()))
    sys.exit(0 if healthy else 1)


def _print_status(local_stack: LocalStack) -> bool:
    rows = local_stack.status()
    click.echo(f"{'service':<10} {'state':<10} {'address':<26} {'pid':>8} {'memory':>9}")
    for row in rows:
        state = "healthy" if row.healthy else ("starting" if row.running else "down")
        if row.note and row.healthy:
            state = "external"
        mem = f"{row.rss_bytes / 2**20:.0f} MiB" if row.rss_bytes else "-"
        click.echo(f"{row.name:<10} {state:<10} {row.address:<26} {row.pid or '-':>8} {mem:>9}")
    total = sum(r.rss_bytes or 0 for r in rows)
    if total:
        click.echo(f"{'total':<10} {'':<10} {'':<26} {'':>8} {total / 2**20:>5.0f} MiB")
    return all(r.healthy for r in rows)


# --- publish -------------------------------------------------------------------------------
@main.command("publish")
@click.option("--collection", "collection_id", required=True,
              help="collection_id of the crawl (a UUID or 1-64 of A-Z a-z 0-9 _ -).")
@click.option("--dir", "folder", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of .html files; each becomes one page.")
@click.option("--base-url", default="https://docs.example.com", show_default=True,
              help="URL prefix; a page's url is base-url/relative-path.")
@click.option("--request-id", type=int, default=None, help="Crawl request id (default: now).")
@click.option("--first-job-id", type=int, default=None,
              help="job_id of the first page, then +1 per page (default: unique from the clock).")
@click.option("--limit", type=int, default=None, help="Publish at most this many pages.")
@click.option("--alias", default=None, help="The collection's alias, e.g. pg-docs (optional).")
@click.option("--complete/--no-complete", default=True, show_default=True,
              help="Say the crawl is complete after the last page (a crawl_completed message).")
@user_errors
def publish_folder(collection_id: str, folder: Path, base_url: str, request_id: int | None,
                   first_job_id: int | None, limit: int | None, alias: str | None,
                   complete: bool) -> None:
    """Publish a folder of HTML files to indexing_jobs as the Go crawler would."""
    from rag_pipeline.contract import COLLECTION_ID
    from rag_pipeline.contract.fields import ALIAS_RULE, check_alias
    from rag_pipeline.local.publishing import (
        completion_message,
        folder_messages,
        message_for,
        publish,
    )

    if not COLLECTION_ID.fullmatch(collection_id):
        raise UserError(f"--collection {collection_id!r}: use a UUID or 1-64 of the characters "
                        "A-Z a-z 0-9 _ -")
    try:
        check_alias(alias)
    except ValueError:
        raise UserError(f"--alias {alias!r}: an alias {ALIAS_RULE}") from None
    settings = cli_settings()
    now_us = time.time_ns() // 1000
    request_id = request_id or now_us // 1_000_000
    messages = folder_messages(folder, collection_id=collection_id, base_url=base_url,
                               first_job_id=first_job_id or now_us, request_id=request_id,
                               limit=limit, alias=alias)
    try:
        count = publish(settings, (message_for(m) for m in messages),
                        progress=lambda n, s: click.echo(f"  {n} pages published ({s:.1f} s)"))
        if count and complete:  # after every page is delivered: it must follow them
            publish(settings, [message_for(completion_message(
                collection_id=collection_id, request_id=request_id, pages=count,
                alias=alias))])
    except RuntimeError as exc:
        raise UserError(str(exc)) from None
    if count == 0:
        raise UserError(f"no .html files in {folder}")
    said = " and said the crawl is complete" if complete else ""
    click.echo(f"Published {count} pages of collection {collection_id}"
               f"{f' (alias {alias})' if alias else ''} to {settings.kafka_topic} at "
               f"{settings.kafka_bootstrap_servers}{said}.")


# --- dev -----------------------------------------------------------------------------------
def dagster_env(settings: Settings) -> dict[str, str]:
    """The environment of Dagster's processes: dagster.yaml reads its storage from it."""
    home = settings.stack_path / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    source = PROJECT_ROOT / "dagster.yaml"
    if not source.exists():
        raise UserError(f"{source} not found: run this from a checkout of rag-pipeline.")
    shutil.copyfile(source, home / "dagster.yaml")
    return {
        **os.environ,
        "LOG_FORMAT": quickstart_log_format(settings),
        "DAGSTER_HOME": str(home),
        # Dagster runs in DAGSTER_HOME, where no .env is (Dagster would load one over the
        # environment); the code location reads this checkout's files, by absolute path.
        **env_files_by_absolute_path(),
        "POSTGRES_HOST": settings.postgres_host,
        "POSTGRES_PORT": str(settings.postgres_port),
        "POSTGRES_USER": settings.postgres_user,
        "POSTGRES_PASSWORD": settings.postgres_password.get_secret_value(),
        "DAGSTER_POSTGRES_DB": settings.dagster_postgres_db,
    }


def quickstart_log_format(settings: Settings) -> str:
    """Text for people at a terminal, unless LOG_FORMAT was set (environment or a file)."""
    return settings.log_format if "log_format" in settings.model_fields_set else "text"


@main.command("dev")
@click.option("--no-stack", is_flag=True,
              help="Do not start the local stack (use existing services).")
@click.option("--no-demo", is_flag=True, help="Do not publish the demo crawl.")
@user_errors
def dev(no_stack: bool, no_demo: bool) -> None:
    """The whole thing: the stack, the Dagster UI and daemon (`dagster dev`), the demo crawl.

    Runs in the foreground; Ctrl-C or closing the terminal stops Dagster (`rag-pipeline
    stack down` stops the stack, and Dagster too if it is still running).
    """
    settings = cli_settings()
    dagster_dev = DagsterDev(settings)
    dagster_dev.require_not_running()  # before starting anything
    if not no_stack:
        click.echo("Starting the local stack:")
        LocalStack(settings).up(progress=lambda msg: click.echo(f"  {msg}"))
    if settings.uses_stand_in_model:
        click.echo("NOTE: no OPENAI_API_KEY set - indexing uses the local STAND-IN model, "
                   "which answers deterministically and is not a real LLM.")
    environment = dagster_env(settings)
    dagster = str(Path(sys.executable).parent / "dagster")
    argv = [dagster, "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
            "-h", "127.0.0.1", "-p", str(settings.dagster_port),
            "--log-format", "json" if environment["LOG_FORMAT"] == "json" else "colored"]
    ui = f"http://127.0.0.1:{settings.dagster_port}"
    log_file = dagster_dev.process.log_file
    click.echo(f"Starting Dagster (UI and daemon); its log: {log_file}")
    # A hang-up (terminal closed) or SIGTERM ends Dagster as Ctrl-C does: Dagster runs in a
    # session of its own, so nothing else would stop it.
    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    dagster_dev.start(argv, environment)
    try:
        if not _wait_for_ui(ui, dagster_dev):
            raise UserError(f"Dagster did not start; see {log_file}")
        # The metrics exporter beside the daemon (same DAGSTER_HOME: stopped with Dagster).
        ServiceProcess("exporter", settings.stack_path).start(
            [str(Path(sys.executable).parent / "rag-pipeline-exporter")], env=environment,
            cwd=dagster_dev.home)
        click.echo(f"Metrics: http://{settings.metrics_host}:{settings.metrics_port}/metrics "
                   "(also /healthz, /readyz)")
        # The query service beside them; on this machine alone it may serve without tokens.
        api_env = environment | ({} if settings.api_tokens else {"API_ALLOW_ANONYMOUS": "true"})
        ServiceProcess("api", settings.stack_path).start(
            [str(Path(sys.executable).parent / "rag-pipeline"), "api"], env=api_env,
            cwd=dagster_dev.home)
        click.echo(f"Query service: http://{settings.api_host}:{settings.api_port}/docs "
                   f"(MCP: http://{settings.api_host}:{settings.api_port}/mcp/)")
        click.echo(f"Dagster UI: {ui}  (Ctrl-C stops Dagster; `rag-pipeline stack down` "
                   "stops the stack)")
        if not no_demo:
            _run_demo(settings)
        while dagster_dev.alive():
            time.sleep(1)
    except KeyboardInterrupt:
        click.echo("Stopping Dagster ...")
    finally:
        dagster_dev.stop()


@main.command("serve")
@click.option("--no-stack", is_flag=True,
              help="Do not start the local stack (use existing services).")
@user_errors
def serve(no_stack: bool) -> None:
    """The production topology here: code server (gRPC), webserver, daemon, exporter.

    Four processes as a deployment runs them (docs/deployment.md), each in its own working
    directory and configured by environment variables only. Runs in the foreground; Ctrl-C
    stops the four.
    """
    from rag_pipeline.local.serve import serve as serve_topology

    settings = cli_settings()
    if not no_stack:
        click.echo("Starting the local stack:")
        LocalStack(settings).up(progress=lambda msg: click.echo(f"  {msg}"))
    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        serve_topology(settings, click.echo)
    except KeyboardInterrupt:
        click.echo("Stopped.")


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _wait_for_ui(ui: str, dagster_dev: DagsterDev, timeout: float = 180.0) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and dagster_dev.alive():
        try:
            if httpx.get(f"{ui}/server_info", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(1)
    return False


def _run_demo(settings: Settings) -> None:
    from rag_pipeline.local.demo import COLLECTIONS, follow, publish_demo

    click.echo("Publishing the demo crawl (2 collections of PostgreSQL docs + 4 broken "
               "messages) to Kafka ...")
    jobs = publish_demo(settings)
    with open_ledger(settings) as ledger:
        if follow(ledger, jobs, click.echo):
            click.echo("Demo crawl processed. Query it:")
            api = f"http://{settings.api_host}:{settings.api_port}"
            for collection in COLLECTIONS:
                click.echo(f"  rag-pipeline query --collection {collection.collection_id} "
                           f"\"{collection.question}\"")
                body = json.dumps({"collection": collection.collection_id,
                                   "question": collection.question, "mode": "naive"})
                click.echo(f"  curl -s {api}/v1/query -H 'Content-Type: application/json' "
                           f"-d '{body}'")
            click.echo(f"An MCP client (streamable HTTP) connects to {api}/mcp/; e.g. "
                       f"`claude mcp add --transport http rag-pipeline {api}/mcp/`")
            click.echo(f"Go API stand-in's record of statuses: {settings.go_backend_url}/jobs")


if __name__ == "__main__":
    main()
