"""The pipeline's vocabulary: job states, outcomes, reason codes, outbox states, run
outcomes.

One name per concept, used by the ledger's columns, the log events, the dead letters,
the statuses sent to the Go API and the docs (README, "What happens to a page"). They are
`StrEnum`s, so a member is the very string stored and sent: `JobState.COMPLETED ==
"completed"`.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is: queued -> running -> completed | failed | dead."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD = "dead"


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.DEAD})
# States whose page goes to the dead letter topic and whose status is `failed`.
FAILED_STATES = frozenset({JobState.FAILED, JobState.DEAD})


class JobKind(StrEnum):
    """What a job asks (the `kind` of its message; no kind is a page)."""

    PAGE = "page"  # index this page
    PAGE_DELETED = "page_deleted"  # remove this page


class Outcome(StrEnum):
    """What a completed job did to its collection's LightRAG workspace."""

    INSERTED = "inserted"
    REPLACED = "replaced"
    UNCHANGED = "unchanged"
    DUPLICATE_CONTENT = "duplicate_content"
    # A later job of the same url in the same run carries the page; this one is not indexed.
    SUPERSEDED = "superseded"
    # A page_deleted job: the page's document is gone (or was never there).
    DELETED = "deleted"


class Reason(StrEnum):
    """Why a job failed: the DLQ's `error_class`, the ledger's `reason`, the prefix of
    the `error_msg` sent to the Go API. MISSING_FIELD and INVALID_FIELD are followed by
    `:<field>` (for example `missing_field:url`)."""

    # The message itself (contract.py, decoding.py), found at staging.
    EMPTY_MESSAGE = "empty_message"
    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    # A `kind` this version does not know (a newer crawler, or a typo).
    UNKNOWN_KIND = "unknown_kind"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    INVALID_COLLECTION_ID = "invalid_collection_id"
    INVALID_ALIAS = "invalid_alias"
    INVALID_URL = "invalid_url"
    UNSUPPORTED_ENCODING = "unsupported_encoding"
    NOT_HTML = "not_html"
    EMPTY_CONTENT = "empty_content"
    BAD_BASE64 = "bad_base64"
    BAD_GZIP = "bad_gzip"
    # A job_id already staged from another message (staging.py).
    CONFLICTING_JOB_ID = "conflicting_job_id"
    # A message naming another alias than its collection already has (staging.py).
    ALIAS_CONFLICT = "alias_conflict"
    # A staged message that no longer validates when a run reads it (indexing.py).
    INVALID_MESSAGE = "invalid_message"
    # LightRAG failed the page (indexing.py); TRANSIENT_FAILURE is retried in a later run.
    LIGHTRAG_FAILED = "lightrag_failed"
    TRANSIENT_FAILURE = "transient_failure"
    # The run that held the job died (reconciliation.py).
    RUN_FAILED = "run_failed"
    # The job's collection was dropped: nothing is indexed into it again (staging.py).
    COLLECTION_DROPPED = "collection_dropped"

    def about(self, field: str) -> str:
        """The code for one field: `missing_field:url`."""
        return f"{self.value}:{field}"


class AliasChange(StrEnum):
    """Why an alias began answering from another collection (`alias_changes.cause`)."""

    FIRST_CRAWL = "first_crawl"  # the alias's first collection whose crawl completed
    RENEWAL = "renewal"  # a newer crawl of the alias completed
    REBUILD = "rebuild"  # its pages were indexed again with the current models
    DROPPED = "dropped"  # its collection was dropped: the alias answers nothing


class DropCause(StrEnum):
    """Why a collection was dropped (`collections.drop_cause`, label of collections_dropped)."""

    DROPPED = "dropped"  # asked for: the drop_collection job or `rag-pipeline drop`
    RETIRED = "retired"  # superseded under its alias for RETIRE_SUPERSEDED_AFTER_SECONDS


class InsertStatus(StrEnum):
    """What LightRAG made of one page handed to it (indexing.insertion.InsertResult)."""

    PROCESSED = "processed"
    # Identical text under another id: LightRAG kept the other document.
    DUPLICATE = "duplicate"
    FAILED = "failed"
    # Already processed under its id by a run that died before recording it.
    ADOPTED = "adopted"


class TextSource(StrEnum):
    """Which text of a page is indexed (TEXT_SOURCE)."""

    # The crawler's content.text when present, else the text cleaned from content.html.
    PREFER_EXTRACTED = "prefer_extracted"
    REEXTRACT = "reextract"


class RunScope(StrEnum):
    """Which jobs of its collection a run takes."""

    # The queued ones (what the sensor requests).
    PENDING = "pending"
    # The latest job of every url again (reindex_collection).
    EVERYTHING = "everything"


class OutboxState(StrEnum):
    """A status report in the outbox: pending until the Go API accepts or refuses it."""

    PENDING = "pending"
    DELIVERED = "delivered"
    REJECTED = "rejected"


class ReportedStatus(StrEnum):
    """The `status` of the PATCH body the Go API receives."""

    COMPLETED = "completed"
    FAILED = "failed"


class RunOutcome(StrEnum):
    """How a run ended, as the ledger's `runs.outcome` records it."""

    SUCCESS = "success"
    FAILURE = "failure"
    CANCELED = "canceled"
    DECLARED_DEAD = "declared dead"


class DeathCause(StrEnum):
    """Why the liveness check declared a run dead (label of runs_declared_dead)."""

    # No PostgreSQL session left under its process's name and a few beats missed: the
    # process died and its kernel closed its connections (kill, OOM, container stop).
    GONE = "gone"
    # No beat for RUN_HEARTBEAT_TIMEOUT_SECONDS: any death, a lost host or network too.
    SILENT = "silent"
    # Launched (or queued with a free slot) for RUN_START_TIMEOUT_SECONDS, never beat.
    NEVER_STARTED = "never_started"


class QueryMode(StrEnum):
    """LightRAG's retrieval modes the query service offers (`bypass`, no retrieval, is not)."""

    NAIVE = "naive"  # chunks by vector similarity
    LOCAL = "local"  # entities near the question, and their chunks
    GLOBAL = "global"  # relations near the question
    HYBRID = "hybrid"  # local + global
    MIX = "mix"  # the graph and the chunks' vectors


class QueryRefusal(StrEnum):
    """Why the query service refused or failed a request (its metrics' `reason` label and
    the `reason` of every error body)."""

    UNAUTHORIZED = "unauthorized"  # 401: no bearer token, or not one of API_TOKENS
    FORBIDDEN = "forbidden"  # 403: the token is limited to other collections
    UNKNOWN_COLLECTION = "unknown_collection"  # 404: no collection has this id or alias
    UNKNOWN_REQUEST = "unknown_request"  # 404: no job of this crawl request
    INVALID_QUERY = "invalid_query"  # 422: empty, too short or too long, top_k out of range
    MODELS_DIFFER = "models_differ"  # 409: the collection was embedded with other models
    SATURATED = "saturated"  # 429: QUERY_MAX_CONCURRENCY queries in progress
    TIMEOUT = "timeout"  # 504: the query outlived QUERY_TIMEOUT_SECONDS
    FAILED = "failed"  # 502: LightRAG or the model failed
