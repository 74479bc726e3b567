"""What a fault scenario counts afterwards: the invariants' promises, strictly.

- lost: a valid page whose job did not end `completed` with its document `processed` in
  LightRAG's doc status of its own workspace (a page completed as a duplicate of another
  url counts through that url's document);
- undelivered: a job whose last status accepted by the Go API differs from the ledger's
  terminal state (or that has none);
- duplicated: more than one processed document per (workspace, url), plus what a replaced,
  failed or interrupted document left behind: chunks, chunk vectors, entity and relation
  vectors that no processed document's chunk accounts for;
- processed twice: pages one of whose chunks the model was paid to extract more than once
  in the page's workspace although a live process had the first answer (doc ids are
  deterministic, so a second pass leaves no second document: only the stand-in model's
  record of answered extractions per chunk text sees it); `repaid_extractions` counts every
  extra extraction, `lost_in_flight` those that repaid an answer no live process got: one
  its asker no longer waited for (killed or timed out: its connection closed), or one in
  flight when a fault struck that destroys answers (a crash, a freeze, a PostgreSQL outage
  before LightRAG could cache it). That cost is the fault's, not a second processing;
- duplicate PATCHes: statuses the Go API accepted again under an idempotency key it had
  already accepted (harmless by the contract, counted to show the at-least-once cost).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from rag_pipeline.ledger import JobLedger
from rag_pipeline.local.devservers.llm_answers import extraction_key

# The Go API's status for each terminal state of the ledger.
REPORTED = {"completed": "completed", "failed": "failed", "dead": "failed"}


@dataclass
class Counts:
    lost: int
    duplicated: int
    undelivered: int
    details: dict[str, int]
    # Jobs whose statuses the Go API accepted in another order than the ledger wrote them.
    out_of_order: int = 0

    @property
    def settled(self) -> bool:
        return self.lost == 0 and self.undelivered == 0


def count(ledger: JobLedger, owner: dict[int, str], go_api: str) -> Counts:
    """`owner`: job_id -> collection of every valid page published."""
    job_ids = list(owner)
    collections = sorted(set(owner.values()))
    with ledger.pool.connection() as conn:
        lightrag = conn.execute("SELECT to_regclass('public.lightrag_doc_status')").fetchone()[0]
        rows = conn.execute(
            "SELECT j.job_id, j.state, "
            + ("EXISTS (SELECT 1 FROM lightrag_doc_status s WHERE s.workspace = j.collection_id "
               "AND s.status = 'processed' AND s.id = coalesce((SELECT d.doc_id FROM "
               "rag_pipeline.documents d WHERE d.collection_id = j.collection_id "
               "AND d.url = j.duplicate_of LIMIT 1), j.doc_id)) " if lightrag else "false ")
            + "FROM rag_pipeline.jobs j WHERE j.job_id = ANY(%s)", (job_ids,)).fetchall()
        leftovers = _leftovers(conn, collections) if lightrag else {}
        written: dict[int, list[str]] = {}
        for job_id, key in conn.execute(
                "SELECT job_id, idempotency_key FROM rag_pipeline.outbox WHERE job_id = ANY(%s) "
                "ORDER BY id", (job_ids,)):
            written.setdefault(job_id, []).append(key)
    state = {job_id: s for job_id, s, _ in rows}
    indexed = {job_id for job_id, s, processed in rows if s == "completed" and processed}
    calls = [c for c in httpx.get(f"{go_api}/calls", timeout=60).json()
             if c["job_id"] in owner and c["answered"] == 200]
    accepted = {c["job_id"]: c["status"] for c in calls}  # the last one wins
    undelivered = sum(1 for j, s in state.items()
                      if s in REPORTED and accepted.get(j) != REPORTED[s])
    undelivered += sum(1 for j in job_ids if state.get(j) not in REPORTED)  # not terminal
    return Counts(lost=len(job_ids) - len(indexed), duplicated=sum(leftovers.values()),
                  undelivered=undelivered, details=leftovers,
                  out_of_order=_out_of_order(calls, written))


def _out_of_order(calls: list[dict[str, Any]], written: dict[int, list[str]]) -> int:
    """Jobs whose first acceptances of each key come in another order than the outbox's."""
    order: dict[int, list[str]] = {}
    for call in calls:  # oldest first
        keys = order.setdefault(call["job_id"], [])
        if call.get("idempotency_key") not in keys:
            keys.append(call.get("idempotency_key"))
    return sum(1 for job_id, keys in order.items()
               if keys != [k for k in written.get(job_id, []) if k in keys])


# An answer given this long before a fault struck may not be in LightRAG's cache yet (it
# writes each extraction's answer right after it, one statement).
CACHE_WRITE_GRACE_S = 2.0


@dataclass
class Repeats:
    processed_twice: int  # pages with a chunk extracted again after a live process got it
    repaid_extractions: int  # the extractions beyond one per chunk text and workspace
    duplicate_patches: int  # statuses accepted again under an already accepted key
    lost_in_flight: int = 0  # of repaid_extractions: repaying an answer no live process got


def _lost(answer: list[Any], struck: list[tuple[float, float]]) -> bool:
    """An answer [started, answered, delivered] no live process kept: undelivered, or
    asked before a fault struck and answered too late to be cached before it."""
    started, answered, delivered = answer
    return not delivered or any(started <= end and answered >= begin - CACHE_WRITE_GRACE_S
                                for begin, end in struck)


def repeats(ledger: JobLedger, collections: list[str], extractions: dict[str, list[Any]],
            job_ids: set[int], go_api: str,
            struck: list[tuple[float, float]] | None = None) -> Repeats:
    """`extractions`: chunk text key -> its answers [started, answered, delivered], for
    keys answered more than once (the stand-in model's `/stats/extractions`, reset when the
    scenario began); `struck`: (from, to) epoch spans of faults that destroy answers in
    flight."""
    holders: dict[str, set[tuple[str, str]]] = {}
    with ledger.pool.connection() as conn:
        if conn.execute("SELECT to_regclass('public.lightrag_doc_chunks')").fetchone()[0]:
            for workspace, doc_id, content in conn.execute(
                    "SELECT workspace, full_doc_id, content FROM lightrag_doc_chunks "
                    "WHERE workspace = ANY(%s)", (collections,)):
                holders.setdefault(extraction_key(content), set()).add((workspace, doc_id))
    twice: set[tuple[str, str]] = set()
    repaid = lost = 0
    for key, answers in extractions.items():
        docs = holders.get(key, set())
        # One extraction per workspace holding the text is the price; LightRAG's cache is
        # per workspace. A text no kept chunk holds (a replaced page) counts once.
        extra = len(answers) - max(1, len({workspace for workspace, _ in docs}))
        if extra <= 0:
            continue
        excused = min(extra, sum(1 for a in answers if _lost(a, struck or [])))
        repaid += extra
        lost += excused
        if extra > excused:
            twice |= docs
    patches = httpx.get(f"{go_api}/calls", timeout=60).json()
    duplicates = sum(1 for c in patches if c["job_id"] in job_ids and c.get("replay"))
    return Repeats(len(twice), repaid, duplicates, lost)


# Documents beyond one per (workspace, url): file_path is one-to-one with the url.
EXTRA_DOCUMENTS = (
    "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) n FROM lightrag_doc_status "
    "WHERE workspace = ANY(%s) AND status = 'processed' GROUP BY workspace, file_path) d "
    "WHERE n > 1")
# Rows of {table} whose document is not a processed one.
ORPHAN_BY_DOCUMENT = (
    "SELECT count(*) FROM {table} c WHERE c.workspace = ANY(%s) AND NOT "
    "EXISTS (SELECT 1 FROM lightrag_doc_status s WHERE s.workspace = c.workspace AND "
    "s.id = c.full_doc_id AND s.status = 'processed')")
# Rows of {table} (entity or relation vectors) whose chunks all belong to no processed
# document.
ORPHAN_BY_CHUNKS = (
    "SELECT count(*) FROM {table} e WHERE e.workspace = ANY(%s) AND NOT "
    "EXISTS (SELECT 1 FROM lightrag_doc_chunks c JOIN lightrag_doc_status s ON "
    "s.workspace = c.workspace AND s.id = c.full_doc_id AND s.status = 'processed' "
    "WHERE c.workspace = e.workspace AND c.id = ANY(e.chunk_ids))")
# name -> (query, table prefix): vector tables carry the embedding model as a suffix
# (lightrag_vdb_chunks_text_embedding_3_small_1536d).
LEFTOVERS = {
    "orphan_chunks": (ORPHAN_BY_DOCUMENT, "lightrag_doc_chunks"),
    "orphan_chunk_vectors": (ORPHAN_BY_DOCUMENT, "lightrag_vdb_chunks"),
    "orphan_entities": (ORPHAN_BY_CHUNKS, "lightrag_vdb_entity"),
    "orphan_relations": (ORPHAN_BY_CHUNKS, "lightrag_vdb_relation"),
}


def _leftovers(conn: Any, collections: list[str]) -> dict[str, int]:
    from psycopg import sql

    found = {"extra_documents": int(conn.execute(EXTRA_DOCUMENTS, (collections,)).fetchone()[0])}
    for name, (query, prefix) in LEFTOVERS.items():
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "AND (table_name = %s OR table_name LIKE %s)", (prefix, prefix + "\\_%")
        ).fetchall()]
        if tables:
            found[name] = sum(int(conn.execute(
                sql.SQL(query).format(table=sql.Identifier(table)), (collections,)
            ).fetchone()[0]) for table in tables)
    return found


def first_model_call_after(timeline: list[dict[str, Any]], moment: float) -> float | None:
    """Seconds from `moment` (epoch) to the first model answer after it (1 s resolution)."""
    for bucket in timeline:
        if bucket["t"] >= int(moment) and bucket.get("chat_calls"):
            return max(0.0, bucket["t"] - moment)
    return None


def last_page_indexed_after(ledger: JobLedger, job_ids: list[int], moment: float
                            ) -> float | None:
    """Seconds from `moment` (epoch) to the last of these jobs finishing."""
    with ledger.pool.connection() as conn:
        last = conn.execute("SELECT extract(epoch FROM max(finished_at))::float8 FROM "
                            "rag_pipeline.jobs WHERE job_id = ANY(%s)", (job_ids,)).fetchone()[0]
    return None if last is None else max(0.0, last - moment)


def pages_per_second(ledger: JobLedger, job_ids: list[int]) -> float | None:
    """Pages indexed per second, from the first claim to the last completion."""
    with ledger.pool.connection() as conn:
        done, first, last = conn.execute(
            "SELECT count(*) FILTER (WHERE state = 'completed'), "
            "extract(epoch FROM min(started_at))::float8, "
            "extract(epoch FROM max(finished_at))::float8 FROM rag_pipeline.jobs "
            "WHERE job_id = ANY(%s)", (job_ids,)).fetchone()
    if not done or first is None or last is None or last <= first:
        return None
    return round(done / (last - first), 3)


def takeover(ledger: JobLedger, collection: str, since: float) -> dict[str, float | None]:
    """Seconds from `since` (a restart) until the collection's dead run was declared dead,
    a new run claimed its jobs, and LightRAG took up one of its documents (model work)."""
    with ledger.pool.connection() as conn:
        declared, claimed, worked = conn.execute(
            "SELECT (SELECT extract(epoch FROM min(declared_dead_at))::float8 FROM "
            "rag_pipeline.runs WHERE collection_id = %(c)s AND declared_dead_at > "
            "to_timestamp(%(t)s)), "
            "(SELECT extract(epoch FROM min(started_at))::float8 FROM rag_pipeline.jobs "
            "WHERE collection_id = %(c)s AND started_at > to_timestamp(%(t)s)), "
            "(SELECT extract(epoch FROM min(updated_at) AT TIME ZONE 'UTC')::float8 FROM "
            "lightrag_doc_status WHERE workspace = %(c)s AND updated_at AT TIME ZONE 'UTC' > "
            "to_timestamp(%(t)s))", {"c": collection, "t": since}).fetchone()
    return {name: None if value is None else round(value - since, 1)
            for name, value in (("declared_s", declared), ("claimed_s", claimed),
                                ("model_work_s", worked))}
