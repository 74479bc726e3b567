"""Removing what should go, on the real stack (Kafka, PostgreSQL + pgvector, LightRAG, the
stand-in model): a page deleted by a `page_deleted` message leaves every LightRAG table
(the entities and relations only it supported too, shared ones kept) and comes back when
sent again; a dropped collection leaves 0 rows in every LightRAG table and no partition,
other collections untouched, messages for it failing with their reason; a drop killed
midway finishes when run again; a superseded collection is retired by retention."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from rag_pipeline.assets.collections import collection_drops
from rag_pipeline.assets.retention import retention
from rag_pipeline.definitions import build_definitions
from rag_pipeline.identity import doc_id, normalize_url
from rag_pipeline.knowledge.tables import workspace_rows, workspace_tables
from rag_pipeline.local.corpus import pages as corpus_pages
from rag_pipeline.local.corpus import postgres_docs
from rag_pipeline.local.publishing import build_message, completion_message, deletion_message
from rag_pipeline.reconciliation import drop_table, inspection_lines
from rag_pipeline.removal import drop_collection
from rag_pipeline.sensors.staging import dropped_partitions
from rag_pipeline.vocabulary import DropCause
from tests.helpers import dead_letters, index, job_id_base, produce, tick
from tests.test_renewal import kept_rows, passage, pool_for, retrieve

HOST = "www.postgresql.org"


def url_of(path: Path) -> str:
    return f"https://{HOST}/docs/15/{path.name}"


def page(job_id: int, collection: str, path: Path, alias: str | None = None) -> dict:
    return build_message(job_id=job_id, collection_id=collection, url=url_of(path),
                         alias=alias, html=path.read_bytes())


def mentions(conn, workspace: str, needles: list[str]) -> dict[str, int]:
    """Rows of `workspace` in each LightRAG table whose text names any of `needles`."""
    found = {}
    for table in workspace_tables(conn):
        n = conn.execute(
            f"SELECT count(*) FROM public.{table} t WHERE workspace = %s AND EXISTS ("
            "SELECT 1 FROM unnest(%s::text[]) n WHERE strpos(t::text, n) > 0)",
            (workspace, needles)).fetchone()[0]
        if n:
            found[table] = n
    return found


def graph_sources(conn, workspace: str) -> dict[str, set[str]]:
    """Each entity of the workspace's graph, with the chunks that support it."""
    rows = conn.execute("SELECT id, properties ->> 'source_id' FROM lightrag_graph_nodes "
                        "WHERE workspace = %s", (workspace,)).fetchall()
    return {node: set((sources or "").split("<SEP>")) for node, sources in rows}


def job_row(ledger, job_id: int) -> tuple:
    with ledger.pool.connection() as conn:
        return conn.execute("SELECT state, outcome, reason FROM rag_pipeline.jobs "
                            "WHERE job_id = %s", (job_id,)).fetchone()


def outbox_status(ledger, job_id: int) -> list[tuple]:
    with ledger.pool.connection() as conn:
        return conn.execute("SELECT status, error_msg FROM rag_pipeline.outbox WHERE job_id = "
                            "%s ORDER BY id", (job_id,)).fetchall()


def test_a_deleted_page_leaves_every_table_and_comes_back_when_sent_again(topics, ledger,
                                                                          unique):
    collection = f"del-{unique}"
    paths = corpus_pages(postgres_docs(), limit=8, offset=500)
    kept, later = paths[:6], paths[6]
    base = job_id_base()
    produce(topics, topics.kafka_topic, [page(base + i, collection, p)
                                         for i, p in enumerate(kept)])
    tick(topics, ledger)
    with dg.instance_for_test() as instance:
        assert index(topics, instance, collection).success
    with ledger.pool.connection() as conn:
        before = graph_sources(conn, collection)
        # The page to delete: one with entities of its own and entities it shares.
        for gone in kept:
            doc = doc_id(collection, normalize_url(url_of(gone)))
            chunks = {r[0] for r in conn.execute(
                "SELECT id FROM lightrag_doc_chunks WHERE workspace = %s AND full_doc_id = %s",
                (collection, doc)).fetchall()}
            alone = {n for n, s in before.items() if s <= chunks}
            shared = {n for n, s in before.items() if s & chunks and s - chunks}
            if alone and shared:
                break
        else:
            pytest.fail("no page has entities of its own and shared ones")
        assert mentions(conn, collection, [doc])

    # Deleted; in the same stream a page sent and deleted, and a deletion of a page never
    # indexed (idempotent), each a job with a status.
    produce(topics, topics.kafka_topic, [
        deletion_message(job_id=base + 100, collection_id=collection, url=url_of(gone)),
        page(base + 101, collection, later),
        deletion_message(job_id=base + 102, collection_id=collection, url=url_of(later)),
        deletion_message(job_id=base + 103, collection_id=collection,
                         url=f"https://{HOST}/docs/15/never-indexed.html")])
    assert tick(topics, ledger).staged == 4
    with dg.instance_for_test() as instance:
        assert index(topics, instance, collection).success
    for job in (base + 100, base + 102, base + 103):
        assert job_row(ledger, job) == ("completed", "deleted", None)
        assert outbox_status(ledger, job) == [("completed", None)]
    assert job_row(ledger, base + 101)[:2] == ("completed", "inserted")

    with ledger.pool.connection() as conn:
        # Nothing of the page left in any LightRAG table; its own entities gone, shared
        # ones kept without its chunks.
        assert mentions(conn, collection, [doc, *chunks]) == {}
        later_doc = doc_id(collection, normalize_url(url_of(later)))
        assert mentions(conn, collection, [later_doc]) == {}
        after = graph_sources(conn, collection)
        assert not alone & set(after)
        assert shared <= set(after)
        assert all(not after[n] & chunks for n in shared)
        deleted_at, deleted_by = conn.execute(
            "SELECT deleted_at, deleted_by FROM rag_pipeline.documents WHERE collection_id = %s "
            "AND doc_id = %s", (collection, doc)).fetchone()
        assert deleted_at is not None and deleted_by == base + 100
    found = retrieve(pool_for(topics), collection, passage(gone))
    assert f"{HOST}|docs|15|{gone.name}" not in {c.get("file_path") for c in found}

    # Sent again, the page is indexed again.
    produce(topics, topics.kafka_topic, [page(base + 200, collection, gone)])
    tick(topics, ledger)
    with dg.instance_for_test() as instance:
        assert index(topics, instance, collection).success
    assert job_row(ledger, base + 200)[:2] == ("completed", "inserted")
    with ledger.pool.connection() as conn:
        assert conn.execute("SELECT status FROM lightrag_doc_status WHERE workspace = %s "
                            "AND id = %s", (collection, doc)).fetchone() == ("processed",)
        assert conn.execute("SELECT deleted_at FROM rag_pipeline.documents WHERE "
                            "collection_id = %s AND doc_id = %s",
                            (collection, doc)).fetchone() == (None,)


def crawl(topics, ledger, instance, collection: str, paths: list[Path], base: int,
          alias: str | None = None) -> None:
    messages = [page(base + i, collection, p, alias) for i, p in enumerate(paths)]
    if alias:
        messages.append(completion_message(collection_id=collection, request_id=base % 10_000,
                                           pages=len(paths), alias=alias))
    produce(topics, topics.kafka_topic, messages)
    tick(topics, ledger)
    assert index(topics, instance, collection).success


def test_a_dropped_collection_leaves_nothing_and_refuses_what_comes_after(topics, ledger,
                                                                          unique):
    alias, dropped, other = f"drop-{unique}", f"dropped-{unique}", f"other-{unique}"
    paths = corpus_pages(postgres_docs(), limit=10, offset=520)
    base = job_id_base()
    with dg.instance_for_test() as instance:
        crawl(topics, ledger, instance, dropped, paths[:5], base, alias)
        crawl(topics, ledger, instance, other, paths[5:], base + 100)
        assert ledger.alias_collection(alias) == dropped
        with ledger.pool.connection() as conn:
            other_before = workspace_rows(conn, other)
            assert sum(workspace_rows(conn, dropped).values()) > 0

        result = dg.materialize([collection_drops], partition_key=dropped, instance=instance,
                                resources=build_definitions(topics).resources)
        assert result.success
        metadata = result.asset_materializations_for_node("collection_drops")[0].metadata
        assert metadata["rows_removed"].value > 0 and metadata["bytes_removed"].value > 0
        assert metadata["alias_answers_nothing"].value is True
        # The staging sensor deletes the partition at its next tick (what it requests).
        assert dropped_partitions(instance, ledger) == [dropped]
        instance.delete_dynamic_partition("collections", dropped)
        assert dropped_partitions(instance, ledger) == []
        assert ledger.partitions_to_remove() == []
        assert instance.has_dynamic_partition("collections", other)

    with ledger.pool.connection() as conn:
        assert set(workspace_rows(conn, dropped).values()) == {0}
        assert workspace_rows(conn, other) == other_before
        assert conn.execute("SELECT count(*) FROM rag_pipeline.documents WHERE collection_id "
                            "= %s", (dropped,)).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM rag_pipeline.jobs WHERE collection_id = %s "
                            "AND (message IS NOT NULL OR clean_text IS NOT NULL "
                            "OR kafka_key IS NOT NULL OR kafka_headers IS NOT NULL)",
                            (dropped,)).fetchone()[0] == 0
    assert ledger.alias_collection(alias) is None
    assert ledger.alias_history(alias)[-1]["cause"] == "dropped"
    assert f"  {dropped} (alias {alias}): dropped, asked " in "\n".join(inspection_lines(ledger))
    assert f"| {dropped} | {alias} | dropped | " in drop_table(ledger.drops(limit=10_000))

    # A page for the dropped collection fails with its reason, reported and dead-lettered.
    produce(topics, topics.kafka_topic, [page(base + 300, dropped, paths[0], alias)])
    report = tick(topics, ledger)
    assert report.staged == 0 and report.rejected_reasons == {"collection_dropped": 1}
    assert job_row(ledger, base + 300) == ("failed", None, "collection_dropped")
    [(status, error)] = outbox_status(ledger, base + 300)
    assert status == "failed" and error.startswith("collection_dropped: ")
    assert [d["error_class"] for d in dead_letters(topics, topics.kafka_dlq_topic)] == [
        "collection_dropped"]


class Killed(Exception):
    """The drop's process died here."""


def test_a_drop_killed_midway_finishes_when_run_again(topics, ledger, unique):
    collection = f"half-{unique}"
    with dg.instance_for_test() as instance:
        crawl(topics, ledger, instance, collection,
              corpus_pages(postgres_docs(), limit=4, offset=540), job_id_base())
    tables_done: list[str] = []

    def die_after_the_first_table(table: str, rows: int) -> None:
        tables_done.append(table)
        raise Killed(table)

    lock = lambda c: ledger.writer_lock(c, 30)  # noqa: E731
    with pytest.raises(Killed):
        drop_collection(ledger, collection, DropCause.DROPPED, lock, max_retries=3,
                        progress=die_after_the_first_table)
    with ledger.pool.connection() as conn:
        left = workspace_rows(conn, collection)
    assert left[tables_done[0]] == 0 and sum(left.values()) > 0  # half done
    assert "not finished (run the drop again)" in "\n".join(inspection_lines(ledger))
    assert ledger.metrics_snapshot(top_collections=5).drops_unfinished >= 1

    report = drop_collection(ledger, collection, DropCause.DROPPED, lock, max_retries=3)
    with ledger.pool.connection() as conn:
        assert set(workspace_rows(conn, collection).values()) == {0}
    assert report.drop.dropped_at is not None
    assert report.drop.rows == {t: n for t, n in report.drop.rows.items() if n}
    assert sum(report.drop.rows.values()) == sum(left.values()) + report.drop.rows[
        tables_done[0]]


def test_retention_retires_a_superseded_collection_and_keeps_the_current_one(topics, ledger,
                                                                              unique):
    alias, first, second = f"ret-{unique}", f"ret1-{unique}", f"ret2-{unique}"
    paths = corpus_pages(postgres_docs(), limit=4, offset=560)
    with dg.instance_for_test() as instance:
        crawl(topics, ledger, instance, first, paths, job_id_base(), alias)
        crawl(topics, ledger, instance, second, paths, job_id_base() + 100, alias)
        assert ledger.alias_collection(alias) == second
        with ledger.pool.connection() as conn:
            current = workspace_rows(conn, second)
        result = dg.materialize(
            [retention], instance=instance, resources=build_definitions(topics).resources,
            run_config={"ops": {"retention": {"config": {
                "retire_superseded_after_seconds": 0.0}}}})
        assert result.success
        metadata = result.asset_materializations_for_node("retention")[0].metadata
        assert metadata["collections_retired"].value >= 1
        assert not instance.has_dynamic_partition("collections", first)
    with ledger.pool.connection() as conn:
        assert set(workspace_rows(conn, first).values()) == {0}
        assert kept_rows(workspace_rows(conn, second)) == kept_rows(current)
    assert ledger.alias_collection(alias) == second
    assert ledger.drop_of(first).cause == DropCause.RETIRED
