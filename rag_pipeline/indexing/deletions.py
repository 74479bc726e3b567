"""Pages removed from a collection (`page_deleted` jobs) within a run's stream.

A deletion is ordered with the collection's pages (same Kafka key, staged in order): the
pages claimed before it are indexed first, then it is applied, then the jobs after it are
admitted - a page, its deletion and the page again, in one claim, end with the page
indexed. LightRAG deletes a document only while its pipeline is idle
(`feed.WorkspaceFeed.delete` waits it out), so a run applies its deletions when nothing
is in flight, and claims nothing more while one waits.
"""

from __future__ import annotations

from collections.abc import Sequence

from rag_pipeline.ledger import JobOutcome, RunJob
from rag_pipeline.vocabulary import JobKind, JobState, Outcome


def split_at_deletion(jobs: Sequence[RunJob]) -> tuple[list[RunJob], list[RunJob]]:
    """The jobs before the first deletion, and the rest (from that deletion on)."""
    for i, job in enumerate(jobs):
        if job.kind == JobKind.PAGE_DELETED:
            return list(jobs[:i]), list(jobs[i:])
    return list(jobs), []


def leading_deletions(jobs: Sequence[RunJob]) -> tuple[list[RunJob], list[RunJob]]:
    """The deletions at the head of `jobs`, and what follows them."""
    for i, job in enumerate(jobs):
        if job.kind != JobKind.PAGE_DELETED:
            return list(jobs[:i]), list(jobs[i:])
    return list(jobs), []


def deleted(job: RunJob) -> JobOutcome:
    """A deletion done: completed (also when the page was never indexed: idempotent), its
    document marked deleted in the ledger with the outcome."""
    return JobOutcome(job_id=job.job_id, request_id=job.request_id, state=JobState.COMPLETED,
                      outcome=Outcome.DELETED, collection_id=job.collection_id,
                      deleted_doc_id=job.doc_id, metrics={"url": job.normalized_url})
