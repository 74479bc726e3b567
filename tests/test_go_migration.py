"""The Go backend's migration (go/migrations/0001_*): indexing_requests gains collection_id,
applied to a table shaped as GORM creates it, on the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from rag_pipeline.settings import Settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "go" / "migrations"
UP = (MIGRATIONS / "0001_indexing_requests_collection_id.up.sql").read_text()
DOWN = (MIGRATIONS / "0001_indexing_requests_collection_id.down.sql").read_text()
# indexing_requests as the backend's GORM model creates it before the change.
BEFORE = """
CREATE TABLE indexing_requests (
    id bigserial PRIMARY KEY, user_id text NOT NULL, endpoint varchar(255) NOT NULL,
    total_jobs bigint NOT NULL, completed_jobs bigint NOT NULL, project_id bigint NOT NULL,
    status varchar(50) NOT NULL, error_msg text, created_at timestamptz, updated_at timestamptz)
"""
INSERT = ("INSERT INTO indexing_requests (user_id, endpoint, total_jobs, completed_jobs, "
          "project_id, status) VALUES ('u', 'https://docs.example.com', 10, 0, 1, 'pending')")


@pytest.fixture
def backend_db(stack, settings: Settings, unique: str) -> Iterator[psycopg.Connection]:
    """A schema of its own, standing for the backend's database, with three old requests."""
    schema = f"go_backend_{unique}"
    with psycopg.connect(settings.postgres_conninfo(), **settings.postgres_kwargs(),
                         autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute(BEFORE)
        for _ in range(3):
            conn.execute(INSERT)
        yield conn
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def column(conn: psycopg.Connection) -> tuple | None:
    return conn.execute(
        "SELECT data_type, character_maximum_length, is_nullable FROM "
        "information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'indexing_requests' AND column_name = 'collection_id'").fetchone()


def ids(conn: psycopg.Connection) -> dict[int, str]:
    return dict(conn.execute("SELECT id, collection_id FROM indexing_requests").fetchall())


def test_up_backfills_uuids_then_requires_unique_values_and_is_idempotent(backend_db):
    conn = backend_db
    conn.execute(UP)
    assert column(conn) == ("character varying", 36, "NO")
    first = ids(conn)
    assert len(first) == 3 and len(set(first.values())) == 3
    assert all(str(uuid.UUID(v)) == v for v in first.values())
    conn.execute(UP)  # again: nothing changes
    assert ids(conn) == first
    with pytest.raises(psycopg.errors.NotNullViolation):
        conn.execute(INSERT)
    taken = next(iter(first.values()))
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(INSERT.replace("(user_id,", "(collection_id, user_id,").replace(
            "VALUES (", "VALUES (%s, "), (taken,))


def test_down_reverts_it_idempotently_and_up_applies_again(backend_db):
    conn = backend_db
    conn.execute(UP)
    conn.execute(DOWN)
    conn.execute(DOWN)
    assert column(conn) is None
    assert conn.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() "
                        "AND indexname = 'idx_indexing_requests_collection_id'").fetchone()[0] == 0
    conn.execute(UP)
    assert column(conn) == ("character varying", 36, "NO") and len(ids(conn)) == 3
