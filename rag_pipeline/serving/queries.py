"""Asking a collection: LightRAG's answer and the pages it drew on, cited by URL and title.

One `QueryService` per process (the HTTP routes, the MCP tools and the CLI's `query` all go
through `ask`). It holds a bounded pool of LightRAG instances (MAX_RAG_INSTANCES, LRU, idle
ones finalized after RAG_INSTANCE_TTL_SECONDS), admits QUERY_MAX_CONCURRENCY queries at once
and calls the model with a budget of its own (QUERY_LLM_MAX_CONCURRENCY), apart from
indexing's shared slots: a busy pipeline never starves a question.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from rag_pipeline.knowledge.models import ModelOptions
from rag_pipeline.knowledge.workspaces import LightRAGOptions, WorkspacePool
from rag_pipeline.ledger import JobLedger
from rag_pipeline.ledger.serving import Citation, CollectionEntry, RequestStatus
from rag_pipeline.serving.access import Grant, Refused
from rag_pipeline.serving.metrics import QueryMetrics
from rag_pipeline.settings import Settings, reveal
from rag_pipeline.vocabulary import QueryMode, QueryRefusal

T = TypeVar("T")
DEFAULT_TOP_K = 10


@dataclass(frozen=True)
class QueryLimits:
    max_chars: int
    max_top_k: int
    max_concurrency: int
    timeout_seconds: float

    @classmethod
    def from_settings(cls, s: Settings) -> QueryLimits:
        return cls(s.query_max_chars, s.query_max_top_k, s.query_max_concurrency,
                   s.query_timeout_seconds)


@dataclass(frozen=True)
class Reference:
    """A page the answer drew on, with the passages retrieved from it (best first)."""

    url: str
    title: str
    passages: list[str]


@dataclass(frozen=True)
class QueryResult:
    collection_id: str
    alias: str | None
    mode: QueryMode
    answer: str | None  # None: context only
    references: list[Reference]
    seconds: float


def query_pool_options(s: Settings) -> LightRAGOptions:
    """The service's LightRAG options: its own model budget, no shared slots (those bound
    indexing), no answers cached in the workspaces (the service only reads them)."""
    options = LightRAGOptions.from_settings(s, shared_slots=False)
    models: ModelOptions = replace(options.models,
                                   llm_max_concurrency=s.query_llm_max_concurrency,
                                   embedding_max_concurrency=s.query_llm_max_concurrency)
    return replace(options, models=models, cache_query_answers=False)


class QueryService:
    def __init__(self, ledger: JobLedger, pool: WorkspacePool, limits: QueryLimits,
                 metrics: QueryMetrics | None = None) -> None:
        self.ledger, self.pool, self.limits = ledger, pool, limits
        self.metrics = metrics or QueryMetrics()
        self.in_flight = 0
        self._embedding = pool.options.models.index_models()
        self.metrics.pool_instances.set_function(lambda: pool.size)
        pool.on_open = lambda _cid: self.metrics.opened.inc()
        pool.on_evict = lambda _cid, cause: self.metrics.evictions.labels(cause).inc()

    @classmethod
    def from_settings(cls, s: Settings) -> QueryService:
        ledger = JobLedger(s.postgres_conninfo(), reveal(s.postgres_password),
                           max_size=s.ledger_pool_size).open()
        try:
            ledger.require_current_schema()
            return cls(ledger, WorkspacePool(query_pool_options(s)), QueryLimits.from_settings(s))
        except Exception:
            ledger.close()
            raise

    def close(self) -> None:
        try:
            self.pool.close()
        finally:
            self.ledger.close()

    # --- asking ------------------------------------------------------------------------------
    async def ask(self, ref: str, question: str, *, grant: Grant, mode: str = "mix",
                  top_k: int = DEFAULT_TOP_K, context_only: bool = False) -> QueryResult:
        """LightRAG's answer to `question` from collection `ref` (id or alias) and the pages
        it drew on; Refused with the reason when it cannot be asked (the caller counts it:
        `refused`)."""
        question, query_mode = self._checked(question, mode, top_k)
        if self.in_flight >= self.limits.max_concurrency:
            raise Refused(429, QueryRefusal.SATURATED,
                          f"{self.in_flight} queries are being answered, the most this service "
                          "takes at once (QUERY_MAX_CONCURRENCY); retry in a few seconds")
        self.in_flight += 1
        self.metrics.in_flight.inc()
        started = time.monotonic()
        try:
            collection_id, alias = await self.collection(ref, grant)
            answer, chunks = await self._on_pool(
                self._retrieve(collection_id, question, query_mode, top_k, context_only))
            references = await asyncio.to_thread(self._cite, collection_id, chunks)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()
        seconds = time.monotonic() - started
        self.metrics.latency.labels(query_mode.value).observe(seconds)
        return QueryResult(collection_id, alias, query_mode, answer, references, seconds)

    def _checked(self, question: str, mode: str, top_k: int) -> tuple[str, QueryMode]:
        question = question.strip()
        if not question:
            raise Refused(422, QueryRefusal.INVALID_QUERY, "the question is empty")
        if len(question) > self.limits.max_chars:
            raise Refused(422, QueryRefusal.INVALID_QUERY,
                          f"the question has {len(question)} characters, more than the "
                          f"{self.limits.max_chars} this service takes (QUERY_MAX_CHARS)")
        if not 1 <= top_k <= self.limits.max_top_k:
            raise Refused(422, QueryRefusal.INVALID_QUERY,
                          f"top_k must be between 1 and {self.limits.max_top_k} "
                          f"(QUERY_MAX_TOP_K), got {top_k}")
        try:
            return question, QueryMode(mode)
        except ValueError:
            raise Refused(422, QueryRefusal.INVALID_QUERY,
                          f"unknown mode {mode!r}; use one of "
                          f"{', '.join(m.value for m in QueryMode)}") from None

    async def collection(self, ref: str, grant: Grant) -> tuple[str, str | None]:
        """The collection `ref` names (id or alias), if the caller may read it."""
        found = await asyncio.to_thread(self.ledger.resolve, ref)
        if found is None:
            raise Refused(404, QueryRefusal.UNKNOWN_COLLECTION,
                          f"no collection has the id or alias {ref!r} (GET /v1/collections "
                          "lists them)")
        collection_id, alias = found
        if not grant.allows(ref, collection_id, alias):
            raise Refused(403, QueryRefusal.FORBIDDEN,
                          f"this token does not open collection {ref!r}; ask for a token "
                          "that names it in API_TOKENS")
        models = await asyncio.to_thread(self.ledger.collection_models, collection_id)
        known = {m for m in models if m is not None}
        if known and not any(m.embedding_model == self._embedding.embedding_model
                             and m.embedding_dim == self._embedding.embedding_dim
                             for m in known):
            used = ", ".join(f"{m.embedding_model} ({m.embedding_dim})" for m in known)
            raise Refused(409, QueryRefusal.MODELS_DIFFER,
                          f"collection {ref!r} was embedded with {used}; this service embeds "
                          f"with {self._embedding.embedding_model} "
                          f"({self._embedding.embedding_dim}). Query its rebuild, or run the "
                          "service with that model's OPENAI_EMBEDDING_MODEL and EMBEDDING_DIM")
        return collection_id, alias

    async def _retrieve(self, collection_id: str, question: str, mode: QueryMode, top_k: int,
                        context_only: bool) -> tuple[str | None, list[dict[str, Any]]]:
        from lightrag import QueryParam
        from lightrag.query_validation import QueryValidationError

        param = QueryParam(mode=mode.value, top_k=top_k, chunk_top_k=top_k,
                           enable_rerank=False)
        try:
            async with self.pool.lease(collection_id) as rag:
                if context_only:
                    result, answer = await rag.aquery_data(question, param=param), None
                else:
                    result = await rag.aquery_llm(question, param=param)
                    answer = str((result.get("llm_response") or {}).get("content") or "")
        except QueryValidationError as exc:
            raise Refused(422, QueryRefusal.INVALID_QUERY, str(exc)) from None
        return answer, list((result.get("data") or {}).get("chunks") or [])

    def _cite(self, collection_id: str, chunks: list[dict[str, Any]]) -> list[Reference]:
        """One reference per page, in the order its first passage was retrieved."""
        paths = [str(c.get("file_path") or "") for c in chunks]
        known = self.ledger.citations(collection_id, paths)
        pages: dict[str, Reference] = {}
        for path, chunk in zip(paths, chunks, strict=True):
            cited = known.get(path) or Citation(url="", title=path)
            page = pages.setdefault(cited.url or path, Reference(cited.url, cited.title, []))
            page.passages.append(str(chunk.get("content") or ""))
        return list(pages.values())

    async def _on_pool(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run on the pool's loop (LightRAG's storages live there), within the deadline."""
        future = self.pool.submit(coro)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future),
                                          self.limits.timeout_seconds)
        except TimeoutError:
            future.cancel()
            raise Refused(504, QueryRefusal.TIMEOUT,
                          f"the query took longer than {self.limits.timeout_seconds:g} s "
                          "(QUERY_TIMEOUT_SECONDS); try again, or a narrower mode") from None
        except Refused:
            raise
        except Exception as exc:
            raise Refused(502, QueryRefusal.FAILED,
                          f"LightRAG failed to answer: {type(exc).__name__}: "
                          f"{str(exc)[:300]}") from exc

    def refused(self, refused: Refused) -> Refused:
        """Count a refusal in the metrics (every face calls this once per refusal)."""
        self.metrics.errors.labels(refused.reason.value).inc()
        return refused

    # --- what else the service reads ------------------------------------------------------
    async def collections(self, grant: Grant, limit: int = 200) -> list[CollectionEntry]:
        entries = await asyncio.to_thread(self.ledger.collection_entries, limit)
        return [e for e in entries if grant.allows(e.collection_id, e.collection_id, e.alias)]

    async def request_status(self, request_id: int, grant: Grant, offset: int = 0,
                             limit: int = 100) -> RequestStatus:
        status = await asyncio.to_thread(self.ledger.request_status, request_id, offset, limit)
        if status is None:
            raise Refused(404, QueryRefusal.UNKNOWN_REQUEST,
                          f"no job of crawl request {request_id} has reached the pipeline")
        if not all(grant.allows(c, c, a) for c, a in status.collections.items()):
            raise Refused(403, QueryRefusal.FORBIDDEN,
                          f"this token does not open every collection of request {request_id}")
        return status

    async def sweep(self) -> None:
        """Finalize idle instances (the server calls it now and then), within the query
        deadline: a finalize stuck on a dead connection must not stop the next sweeps."""
        await asyncio.wait_for(asyncio.wrap_future(self.pool.submit(self.pool.sweep())),
                               self.limits.timeout_seconds)
