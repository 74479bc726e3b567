"""What a run reports: its outcomes counted, per-page times apportioned, model usage as
ledger counters (the run's materialization metadata and the exporter's counters)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rag_pipeline.knowledge.models import ModelUsage
from rag_pipeline.ledger import JobOutcome
from rag_pipeline.vocabulary import FAILED_STATES, JobState, Outcome

# The report field each outcome is counted in.
OUTCOME_COUNTERS = {Outcome.INSERTED: "inserted", Outcome.REPLACED: "replaced",
                    Outcome.UNCHANGED: "unchanged", Outcome.DUPLICATE_CONTENT: "duplicates",
                    Outcome.DELETED: "deleted"}

@dataclass
class IndexReport:
    claimed: int = 0
    html_bytes: int = 0
    failed_decoding: int = 0
    failed_cleaning: int = 0
    inserted: int = 0
    replaced: int = 0
    unchanged: int = 0
    duplicates: int = 0
    deleted: int = 0
    failed: int = 0
    retried: int = 0
    chunks: int = 0
    entities: int = 0
    relations: int = 0
    yielded: bool = False
    seconds: float = 0.0
    first_model_request_s: float | None = None
    usage: ModelUsage = field(default_factory=ModelUsage)
    outcomes: list[JobOutcome] = field(default_factory=list)

    def add(self, outcome: JobOutcome) -> None:
        self.outcomes.append(outcome)
        if outcome.state == JobState.QUEUED:
            self.retried += 1
        elif outcome.state in FAILED_STATES:
            self.failed += 1
        else:
            key = OUTCOME_COUNTERS.get(outcome.outcome) if outcome.outcome else None
            if key:
                setattr(self, key, getattr(self, key) + 1)
            self.chunks += outcome.metrics.get("chunks", 0)
            self.entities += outcome.metrics.get("entities", 0)
            self.relations += outcome.metrics.get("relations", 0)


def apportion_times(outcomes: list[JobOutcome], usage: ModelUsage, wall_seconds: float) -> None:
    """Per-page embedding and storage time: what happened since the last pages settled,
    shared out by chunk count among the pages settling now.

    LightRAG works on many pages at once, so per-page times are apportioned:
    embedding_time_ms is the page's share of the embedding requests' time; storage_time_ms
    its share of the wall time when no model request was in flight (LightRAG's own work
    and its PostgreSQL writes).
    """
    chunks = {id(o): o.metrics.get("chunks", 0) for o in outcomes if o.document is not None}
    total = sum(chunks.values())
    if not total:
        return
    other = max(0.0, wall_seconds - usage.llm_busy_seconds - usage.embedding_busy_seconds)
    for outcome in outcomes:
        share = chunks.get(id(outcome), 0) / total
        if share:
            outcome.metrics["embedding_time_ms"] = round(usage.embedding_seconds * share * 1000, 1)
            outcome.metrics["storage_time_ms"] = round(other * share * 1000, 1)


def model_counters(usage: ModelUsage) -> dict[tuple[str, str], float]:
    """Model requests, tokens, retries and errors, as counters of the ledger."""
    return {
        ("model_requests", "kind=llm"): usage.llm_calls,
        ("model_requests", "kind=embedding"): usage.embedding_calls,
        ("model_retries", "kind=llm"): usage.llm_retries,
        ("model_errors", "kind=llm"): usage.llm_failures,
        ("model_tokens", "kind=prompt"): usage.prompt_tokens,
        ("model_tokens", "kind=completion"): usage.completion_tokens,
        ("model_tokens", "kind=embedding"): usage.embedding_tokens,
    }
