"""`rag-pipeline`: the operator's commands (this module) and, when the local workshop is
installed beside it (a checkout, `make install`), the workshop's (`rag_pipeline.local.cli`).

Every failure a user can cause ends in one readable message and exit status 2, never a
stack trace.
"""

from __future__ import annotations

import importlib.util
import logging
import os

import click

from rag_pipeline.observability.logs import configure_logging
from rag_pipeline.operations.common import UserError, cli_settings, open_ledger, user_errors
from rag_pipeline.operations.ledger_commands import drop, inspect_jobs, outbox, query, rebuild

WORKSHOP = "rag_pipeline.local.cli"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """rag-pipeline: Kafka -> Dagster -> LightRAG on PostgreSQL."""
    # Log lines of the libraries below: text for a person at a terminal; LOG_FORMAT=json
    # exported makes them JSON objects, as every long-running process writes them.
    configure_logging(os.environ.get("LOG_FORMAT", "text"), level=logging.WARNING)


@main.command("migrate")
@user_errors
def migrate() -> None:
    """Create or upgrade the ledger's schema (once per release, before its processes start;
    the Compose `migrate` service and the Helm hook run it). Idempotent."""
    from rag_pipeline.ledger.migrating import CURRENT_VERSION

    settings = cli_settings()
    with open_ledger(settings, check_schema=False) as ledger:
        before = ledger.schema_version()
        ledger.migrate()
    if before == CURRENT_VERSION:
        click.echo(f"The ledger's schema is at version {CURRENT_VERSION}: nothing to do.")
    else:
        click.echo(f"The ledger's schema went from version {before or 'none'} to "
                   f"{CURRENT_VERSION}.")


@main.group()
def kafka() -> None:
    """The pipeline's Kafka topics."""


@kafka.command("ensure-topics")
@user_errors
def ensure_topics_command() -> None:
    """Create KAFKA_TOPIC, KAFKA_DLQ_TOPIC and KAFKA_RESULTS_TOPIC if missing and set their
    message size and retention from the settings (idempotent; partitions are never grown)."""
    from confluent_kafka.admin import AdminClient

    from rag_pipeline.kafka_io import KafkaOptions, client_config
    from rag_pipeline.kafka_topics import TopicAction, TopicsError, ensure_topics, wanted_topics

    settings = cli_settings()
    admin = AdminClient(client_config(KafkaOptions.from_settings(settings)))
    try:
        changes = ensure_topics(admin, wanted_topics(settings))
    except TopicsError as exc:
        raise UserError(str(exc)) from None
    for change in changes:
        settings_text = ", ".join(f"{k}={v}" for k, v in sorted(change.changed.items()))
        click.echo(" ".join(filter(None, [f"{change.topic}: {change.action}", change.detail,
                                          settings_text])))
    refused = [c for c in changes if c.action == TopicAction.REFUSED]
    if refused:
        raise UserError(f"{len(refused)} topic(s) need your decision (above)")


@main.command("api")
@user_errors
def api() -> None:
    """The query service: HTTP (/v1/query, /v1/collections, /v1/requests/ID) and MCP (/mcp/),
    on API_HOST:API_PORT, answering with bearer tokens from API_TOKENS."""
    from rag_pipeline.ledger import LedgerUnavailable
    from rag_pipeline.serving.server import check_access, run_api

    settings = cli_settings()
    configure_logging(settings.log_format)
    try:
        check_access(settings)
        run_api(settings)
    except (ValueError, LedgerUnavailable) as exc:
        raise UserError(str(exc)) from None


main.add_command(inspect_jobs)
main.add_command(rebuild)
main.add_command(drop)
main.add_command(query)
main.add_command(outbox)


def run() -> None:
    """The console script: the workshop's commands join when the workshop is installed (the
    image leaves it out)."""
    if importlib.util.find_spec("rag_pipeline.local") is not None:
        importlib.import_module(WORKSHOP)
    main()


if __name__ == "__main__":
    run()
