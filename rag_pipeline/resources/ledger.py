"""The ledger in PostgreSQL (schema rag_pipeline), handed out as the plain `JobLedger`."""

from __future__ import annotations

import dagster as dg

# Documented (API docs, "ConfigurableResourceFactory") but not re-exported by dagster 1.13's
# top-level package: it lets assets receive the plain JobLedger (ResourceParam[JobLedger]).
from dagster._config.pythonic_config.resource import ConfigurableResourceFactory
from psycopg.conninfo import make_conninfo

from rag_pipeline.ledger import JobLedger, shared_ledger


class LedgerResource(ConfigurableResourceFactory[JobLedger]):
    """The process's open, migrated ledger (one pool per process, shared by every tick and
    step; see `shared_ledger`)."""

    postgres_host: str
    postgres_port: int
    postgres_user: str
    postgres_password: str
    postgres_db: str

    def create_resource(self, context: dg.InitResourceContext) -> JobLedger:
        conninfo = make_conninfo(host=self.postgres_host, port=self.postgres_port,
                                 user=self.postgres_user, dbname=self.postgres_db)
        return shared_ledger(conninfo, self.postgres_password)
