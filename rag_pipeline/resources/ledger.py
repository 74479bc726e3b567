"""The ledger in PostgreSQL (schema rag_pipeline), handed out as the plain `JobLedger`."""

from __future__ import annotations

import dagster as dg

from rag_pipeline.dagster_internals import ConfigurableResourceFactory
from rag_pipeline.ledger import JobLedger, shared_ledger
from rag_pipeline.settings import postgres_conninfo


class LedgerResource(ConfigurableResourceFactory[JobLedger]):
    """The process's open, migrated ledger (one pool per process, shared by every tick and
    step; see `shared_ledger`)."""

    postgres_host: str
    postgres_port: int
    postgres_user: str
    postgres_password: str
    postgres_db: str
    postgres_sslmode: str
    postgres_sslrootcert: str
    ledger_pool_size: int

    def create_resource(self, context: dg.InitResourceContext) -> JobLedger:
        return shared_ledger(postgres_conninfo(self), self.postgres_password,
                             max_size=self.ledger_pool_size)
