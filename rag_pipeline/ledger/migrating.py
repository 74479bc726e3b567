"""Applying the ledger's migrations (`rag-pipeline migrate`) and checking, in every other
process, that the schema is the one its code was written for.

Migrating is an explicit step of a deployment (a Compose one-shot, a Helm hook): the
processes that run the pipeline need no DDL rights, and a migration that builds an index on
a large table runs once, when the operator chose to, not in whichever process started first.
"""

from __future__ import annotations

from rag_pipeline.ledger.connection import SCHEMA, LedgerConnection, LedgerUnavailable
from rag_pipeline.ledger.schema import MIGRATIONS

CURRENT_VERSION = MIGRATIONS[-1][0]


class SchemaOutOfDate(LedgerUnavailable):
    """The ledger's schema is not the version this code needs; the message says what to do."""


class SchemaQueries(LedgerConnection):
    """Creating, upgrading and checking the schema."""

    def migrate(self) -> int:
        """Create or upgrade the schema; safe to call from many processes at once."""
        with self.transaction() as conn:
            # Serialises concurrent migrators on one key. A migration may build an index on
            # a large table: no statement deadline here.
            conn.execute("SET LOCAL statement_timeout = 0")
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('rag_pipeline:migrate'))")
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations "
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute(f"SELECT version FROM {SCHEMA}.schema_migrations")}
            for version, ddl in MIGRATIONS:
                if version not in done:
                    conn.execute(ddl)
                    conn.execute(f"INSERT INTO {SCHEMA}.schema_migrations (version) VALUES (%s)",
                                 (version,))
        return CURRENT_VERSION

    def schema_version(self) -> int | None:
        """The newest migration applied, or None when the schema was never created."""
        with self.pool.connection() as conn:
            exists = conn.execute("SELECT to_regclass(%s)",
                                  (f"{SCHEMA}.schema_migrations",)).fetchone()
            if exists is None or exists[0] is None:
                return None
            row = conn.execute(f"SELECT max(version) FROM {SCHEMA}.schema_migrations").fetchone()
        return row[0] if row else None

    def require_current_schema(self) -> int:
        """The schema's version if it is this code's; SchemaOutOfDate otherwise."""
        version = self.schema_version()
        if version == CURRENT_VERSION:
            return version
        if version is None:
            raise SchemaOutOfDate(
                f"the ledger's schema `{SCHEMA}` does not exist in this database: run "
                "`rag-pipeline migrate` once (the Compose file's `migrate` service and the Helm "
                "hook do) before starting the pipeline")
        if version < CURRENT_VERSION:
            raise SchemaOutOfDate(
                f"the ledger's schema is at version {version}, this code needs "
                f"{CURRENT_VERSION}: run `rag-pipeline migrate` with this release's image "
                "(the Compose `migrate` service, the Helm pre-upgrade hook) before its processes")
        raise SchemaOutOfDate(
            f"the ledger's schema is at version {version}, newer than this code's "
            f"{CURRENT_VERSION}: a newer release migrated it; run that release's image here too")
