"""What a valid message becomes at staging, by its collection's rules: a staged job (a page
to index or a page to delete), its document id in the collection's alias scope, and what
the collection's state refuses - a message naming another alias than its collection's
(`alias_conflict`), or any message for a dropped collection (`collection_dropped`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

from rag_pipeline.contract import IndexingJob, PageDeleted
from rag_pipeline.identity import doc_id
from rag_pipeline.ledger import FailedMessage, StagedCompletion, StagedJob
from rag_pipeline.ledger.records import NO_ENVELOPE, KafkaEnvelope
from rag_pipeline.vocabulary import JobKind, Reason


def staged_job(job: IndexingJob | PageDeleted, value: bytes, topic: str, partition: int,
               offset: int, produced_at: datetime | None,
               envelope: KafkaEnvelope = NO_ENVELOPE) -> StagedJob:
    """A page or a page deletion as a job (the message kept as it came)."""
    normalized = job.normalized_url
    common = {"job_id": job.job_id, "request_id": job.request_id,
              "collection_id": job.collection_id, "url": job.url, "normalized_url": normalized,
              "doc_id": doc_id(job.collection_id, normalized), "message": value,
              "topic": topic, "partition": partition, "offset": offset,
              "produced_at": produced_at, "alias": job.alias, "envelope": envelope}
    if isinstance(job, PageDeleted):
        return StagedJob(project_id=0, user_id="", title="", details={},
                         kind=JobKind.PAGE_DELETED, **common)
    return StagedJob(project_id=job.project_id, user_id=job.user_id, title=job.content.title,
                     details=job.crawl_details(), **common)


Aliased = TypeVar("Aliased", StagedJob, StagedCompletion)


def split_alias_conflicts(aliases: dict[str, str | None], items: Sequence[Aliased]
                          ) -> tuple[list[Aliased], list[Aliased]]:
    """`items` (in stream order) that agree with their collection's alias, and those naming
    another one. A collection's alias is fixed by its first message, alias or none (its
    documents' ids depend on it): `aliases` holds the ones the ledger knows, and learns
    those of new collections."""
    kept: list[Aliased] = []
    conflicting: list[Aliased] = []
    for item in items:
        if item.collection_id not in aliases:
            aliases[item.collection_id] = item.alias
        if item.alias is not None and item.alias != aliases[item.collection_id]:
            conflicting.append(item)
            continue
        kept.append(item)
    return kept, conflicting


def with_alias_scope(job: StagedJob, alias: str | None) -> StagedJob:
    """The job with its document id in its collection's scope: the alias's, when it has
    one, so every collection of an alias names a page alike (a renewal copies rows as they
    are), else the collection's own."""
    if alias is None:
        return job
    return replace(job, doc_id=doc_id(alias, job.normalized_url), alias=alias)


def alias_conflict(item: StagedJob | StagedCompletion, alias: str | None) -> FailedMessage:
    detail = (f"{Reason.ALIAS_CONFLICT}: collection {item.collection_id} answers to alias "
              f"{alias!r}; this message names {item.alias!r} (one collection, one alias)")
    return FailedMessage(getattr(item, "job_id", None), item.collection_id,
                         Reason.ALIAS_CONFLICT, detail, item.topic, item.partition,
                         item.offset, item.message, item.envelope)


def split_dropped(dropped: Iterable[str], items: Sequence[Aliased]
                  ) -> tuple[list[Aliased], list[FailedMessage]]:
    """`items` whose collection is not dropped, and the failures of those whose collection
    is (a collection id is never reused: the Go side makes a new one per crawl request)."""
    gone = set(dropped)
    kept = [i for i in items if i.collection_id not in gone]
    failed = [FailedMessage(
        getattr(i, "job_id", None), i.collection_id, Reason.COLLECTION_DROPPED,
        f"{Reason.COLLECTION_DROPPED}: collection {i.collection_id} was dropped; nothing is "
        "indexed into it again (crawl into a new collection id, with the same alias to "
        "answer under the same name)", i.topic, i.partition, i.offset, i.message, i.envelope)
        for i in items if i.collection_id in gone]
    return kept, failed
