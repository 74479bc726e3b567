"""LightRAG's tables as rows of workspaces: which tables hold a workspace's rows, how many it
has in each, copying a whole workspace into another (an alias's renewal carries its
current collection over this way, so unchanged pages cost no model call) and deleting one
(a dropped collection: rag_pipeline/removal.py).

The tables are found in the catalog, not listed by hand: every table of `public` whose name
starts with `lightrag_` and that has a `workspace` column (the vector tables carry the
embedding model in their name, `lightrag_vdb_chunks_<model>_<dim>d`, one set per model).
Table names come from the catalog and are quoted as identifiers; workspaces travel as
parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from psycopg import sql

GRAPH_TABLES = ("lightrag_graph_nodes", "lightrag_graph_edges")  # PGTableGraphStorage's


class CannotCopy(Exception):
    """The workspace cannot be copied as rows (its graph is not in tables); says why."""


def workspace_tables(conn: psycopg.Connection) -> list[str]:
    """LightRAG's tables that hold rows per workspace, sorted."""
    rows = conn.execute(
        "SELECT c.table_name FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_schema, table_name) "
        "WHERE c.table_schema = 'public' AND c.column_name = 'workspace' "
        "AND t.table_type = 'BASE TABLE' AND c.table_name LIKE 'lightrag\\_%' "
        "ORDER BY c.table_name").fetchall()
    return [r[0] for r in rows]


def referenced_first(conn: psycopg.Connection, tables: list[str]) -> list[str]:
    """`tables` ordered so that a table comes after those its foreign keys reference (the
    graph's edges after its nodes): rows can then be copied table by table."""
    references = conn.execute(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c "
        "WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace").fetchall()
    needs = {t: {r for f, r in references if f == t and r in tables and r != t} for t in tables}
    ordered: list[str] = []
    while needs:
        ready = sorted(t for t, deps in needs.items() if not deps - set(ordered))
        if not ready:  # a cycle: no order can satisfy it, keep the catalog's
            ready = sorted(needs)
        for table in ready:
            ordered.append(table)
            del needs[table]
    return ordered


def workspace_rows(conn: psycopg.Connection, workspace: str) -> dict[str, int]:
    """Rows of `workspace` in each of LightRAG's tables (0 included): what "nothing left
    behind" and "everything carried over" are checked with."""
    counts = {}
    for table in workspace_tables(conn):
        counts[table] = conn.execute(
            sql.SQL("SELECT count(*) FROM public.{} WHERE workspace = %s").format(
                sql.Identifier(table)), (workspace,)).fetchone()[0]
    return counts


def copy_workspace(conn: psycopg.Connection, source: str, target: str,
                   graph_storage: str, between: Callable[[], None] = lambda: None
                   ) -> dict[str, int]:
    """Every row of workspace `source` copied as `target`, in the caller's transaction, one
    statement per table (each under the connection's statement deadline; `between` is
    called before each: the run's lease check); rows copied per table. `target` must be
    empty (a copy is made once, before anything is written to it). Document and chunk ids
    stay as they are: an alias's collections share them (identity.doc_id of the alias)."""
    if graph_storage != "PGTableGraphStorage":
        raise CannotCopy(
            f"LIGHTRAG_GRAPH_STORAGE={graph_storage} keeps each workspace's graph outside "
            "LightRAG's tables, so a renewal cannot carry the alias's pages over; use "
            "PGTableGraphStorage (the default) for aliased collections")
    copied = {}
    for table in referenced_first(conn, workspace_tables(conn)):
        between()
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = %s ORDER BY ordinal_position", (table,)).fetchall()]
        names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        values = sql.SQL(", ").join(
            sql.Placeholder() if c == "workspace" else sql.Identifier(c) for c in columns)
        copied[table] = conn.execute(
            sql.SQL("INSERT INTO public.{t} ({names}) SELECT {values} FROM public.{t} "
                    "WHERE workspace = %s").format(t=sql.Identifier(table), names=names,
                                                   values=values),
            (target, source)).rowcount
    return copied


def dropping_order(conn: psycopg.Connection) -> list[str]:
    """LightRAG's workspace tables, those whose rows others reference last (the graph's
    edges before its nodes): rows can then be deleted table by table."""
    return list(reversed(referenced_first(conn, workspace_tables(conn))))


def workspace_bytes(conn: psycopg.Connection, workspace: str) -> int:
    """The bytes of `workspace`'s rows in LightRAG's tables (each row's stored size, TOASTed
    values included; indexes and free space not)."""
    total = 0
    for table in workspace_tables(conn):
        total += conn.execute(
            sql.SQL("SELECT coalesce(sum(pg_column_size(t.*)), 0) FROM public.{} t "
                    "WHERE workspace = %s").format(sql.Identifier(table)),
            (workspace,)).fetchone()[0]
    return int(total)


def delete_workspace_rows(conn: psycopg.Connection, table: str, workspace: str,
                          batch: int) -> int:
    """Up to `batch` rows of `workspace` deleted from `table` (one short statement, well
    inside the statement deadline however large the workspace); the rows deleted."""
    return conn.execute(
        sql.SQL("DELETE FROM public.{t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM public.{t} "
                "WHERE workspace = %s LIMIT %s))").format(t=sql.Identifier(table)),
        (workspace, batch)).rowcount
