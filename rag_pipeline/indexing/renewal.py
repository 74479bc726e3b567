"""An alias's renewal, done by the run that writes the alias's new collection (blue/green;
docs/design.md, "Collections have a life").

- At the run's start, under the collection's writer lock (`carry_over`): if the alias
  answers from another collection, that collection's LightRAG rows and `documents` rows
  are copied into this one, once, before anything is written to it. Its pages share their
  ids (identity.doc_id of the alias), so the crawl's unchanged pages are then skipped like
  any unchanged page (no model call), changed ones replaced, new ones inserted; the alias
  keeps answering from the old collection meanwhile.
- When the crawl has said it is complete and every page it announced is done (`release`):
  the documents it carried over that the crawl did not find again are deleted, and the
  alias answers from this collection from then on (one ledger transaction); the old one is
  superseded. A first crawl is released the same way, with nothing to delete.
- Pages are carried over only when they were indexed with the current models: after a
  model change the alias is rebuilt (`plan_rebuild`): a new collection holding its pages
  again from the messages they were indexed from, indexed afresh, released like a crawl.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import partial

import psycopg

from rag_pipeline.indexing.run import CollectionRun
from rag_pipeline.knowledge.tables import copy_workspace
from rag_pipeline.ledger import IndexModels, JobLedger, RebuildPlan, Release

log = logging.getLogger(__name__)

COPYABLE_GRAPH = "PGTableGraphStorage"


@dataclass(frozen=True)
class CarryOver:
    """What a collection took from its alias's current one: the rows per LightRAG table."""

    source: str | None = None
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def documents(self) -> int:
        return self.rows.get("lightrag_doc_status", 0)


@dataclass
class AliasRenewal:
    """The two moments of a renewal, for one run of one collection."""

    ledger: JobLedger
    collection_id: str
    run_id: str
    graph_storage: str
    # The writer lock of another collection (the one copied from, while it is copied).
    lock_of: Callable[[str], AbstractContextManager[object]]
    models: IndexModels
    # The run's lease check, between the tables of a copy (a sign of progress).
    check: Callable[[], None] = lambda: None
    carried: CarryOver = field(default_factory=CarryOver)
    released: Release | None = None
    alias: str | None = None

    def carry_over(self) -> None:
        life = self.ledger.collection_life(self.collection_id)
        self.alias = life.alias if life else None
        if life is None or life.alias is None or life.carried_over_at is not None:
            return
        source = self.ledger.alias_collection(life.alias)
        copy = None
        if source is None:
            pass
        elif self.graph_storage != COPYABLE_GRAPH:
            log.warning("collection %s of alias %s is indexed afresh: LIGHTRAG_GRAPH_STORAGE="
                        "%s cannot be copied (use %s to renew aliases without model calls)",
                        self.collection_id, life.alias, self.graph_storage, COPYABLE_GRAPH)
        elif self.ledger.collection_models(source) - {self.models, None}:
            log.warning("collection %s of alias %s is indexed afresh: %s was indexed with "
                        "other models than %s", self.collection_id, life.alias, source,
                        self.models)
        else:
            copy = partial(copy_workspace, graph_storage=self.graph_storage,
                           between=self.check)
        try:
            with self.lock_of(source) if copy else _nothing():
                source, rows = self.ledger.carry_over(self.collection_id, self.run_id, copy)
        except psycopg.errors.QueryCanceled as exc:
            # A table too large to copy within the statement deadline: the pages cost model
            # calls again rather than a copy that can never finish.
            log.warning("collection %s of alias %s is indexed afresh: copying %s did not "
                        "finish within the statement deadline (%s)", self.collection_id,
                        life.alias, source, exc)
            source, rows = self.ledger.carry_over(self.collection_id, self.run_id, None)
        self.carried = CarryOver(source, rows)

    def release(self, run: CollectionRun) -> None:
        if not self.ledger.ready_to_release(self.collection_id):
            return
        life = self.ledger.collection_life(self.collection_id)
        removed = self.ledger.unseen_documents(self.collection_id) if life.renews else []
        run.delete_documents(removed)
        self.released = self.ledger.release(self.collection_id, self.run_id, removed)


def plan_rebuild(ledger: JobLedger, alias: str) -> RebuildPlan:
    """A rebuild of `alias` with the current models, into a new collection (a UUID): its
    pages are queued again; the staging sensor asks a run for it, which indexes them afresh
    and releases it; the alias answers from the old collection until then."""
    return ledger.plan_rebuild(alias, str(uuid.uuid4()))


@contextmanager
def _nothing() -> Iterator[None]:
    yield None
