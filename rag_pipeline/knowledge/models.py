"""The LLM and embedding functions LightRAG calls, over the `openai` client.

One `ModelClient` per process: a shared AsyncOpenAI client (connection reuse), a hard bound
on requests in flight (LightRAG's own limits are per role and per instance; this one is
the total), retries of transient errors (429, 5xx, timeouts, connection errors) with
capped exponential backoff and jitter, and usage counters for run metadata.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import openai

from rag_pipeline.ledger.records import IndexModels
from rag_pipeline.settings.views import (
    ModelView,
    model_api_key,
    model_base_url,
    uses_stand_in_model,
)

log = logging.getLogger(__name__)

FORWARDED_KWARGS = ("response_format", "max_tokens", "max_completion_tokens", "temperature",
                    "top_p", "seed")
MAX_BACKOFF_S = 30.0
TRANSIENT_PREFIX = "transient_model_error:"


@dataclass(frozen=True)
class ModelOptions:
    base_url: str
    api_key: str = field(repr=False)
    openai_llm_model: str
    openai_embedding_model: str
    embedding_dim: int
    llm_max_concurrency: int
    embedding_max_concurrency: int
    model_timeout_seconds: float
    max_retries: int
    retry_backoff: float
    stand_in: bool

    def index_models(self) -> IndexModels:
        """What the ledger records with each document these models index."""
        return IndexModels(self.openai_llm_model, self.openai_embedding_model,
                           self.embedding_dim)

    @classmethod
    def from_settings(cls, s: ModelView) -> ModelOptions:
        return cls(
            base_url=model_base_url(s), api_key=model_api_key(s),
            openai_llm_model=s.openai_llm_model,
            openai_embedding_model=s.openai_embedding_model, embedding_dim=s.embedding_dim,
            llm_max_concurrency=s.llm_max_concurrency,
            embedding_max_concurrency=s.embedding_max_concurrency,
            model_timeout_seconds=s.model_timeout_seconds, max_retries=s.max_retries,
            retry_backoff=s.retry_backoff, stand_in=uses_stand_in_model(s),
        )


@dataclass
class ModelUsage:
    llm_calls: int = 0
    llm_retries: int = 0
    llm_failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_seconds: float = 0.0
    llm_peak_in_flight: int = 0
    embedding_calls: int = 0
    embedding_inputs: int = 0
    embedding_tokens: int = 0
    embedding_seconds: float = 0.0
    # Wall time with at least one request of the kind in flight.
    llm_busy_seconds: float = 0.0
    embedding_busy_seconds: float = 0.0

    def minus(self, earlier: ModelUsage) -> ModelUsage:
        """Usage since `earlier` (peaks are not differences: the later peak is kept)."""
        now, before = asdict(self), asdict(earlier)
        delta = {k: now[k] - before[k] for k in now if k != "llm_peak_in_flight"}
        return ModelUsage(**delta, llm_peak_in_flight=self.llm_peak_in_flight)


class PermanentModelError(Exception):
    """The model API refused the request for a reason retrying will not fix."""


class TransientModelError(Exception):
    """A transient model failure that outlasted our retries; the page is worth a new try.

    Its message starts with TRANSIENT_PREFIX: LightRAG records only str(exception) as a
    document's error, and the prefix is how indexing recognises a retryable page failure.
    """


class EmptyCompletion(Exception):
    """The model answered without content; worth another try."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, openai.RateLimitError):
        body = str(getattr(exc, "body", "") or exc)
        return "insufficient_quota" not in body and "budget_exceeded" not in body
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError,
                        openai.InternalServerError, asyncio.TimeoutError, EmptyCompletion)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409) or exc.status_code >= 500
    return False


def backoff_seconds(attempt: int, base: float, retry_after: str | None = None) -> float:
    """Exponential backoff with +-50% jitter, capped; a server's Retry-After wins."""
    if retry_after:
        try:
            return min(float(retry_after), MAX_BACKOFF_S)
        except ValueError:
            pass
    delay = min(base * (2**attempt), MAX_BACKOFF_S)
    return delay * random.uniform(0.5, 1.5)


class Slots(Protocol):
    """Where a request waits for its turn: a local semaphore or slots shared between
    processes (`model_slots.SharedSlots`)."""

    def slot(self) -> contextlib.AbstractAsyncContextManager[Any]: ...


class LocalSlots:
    def __init__(self, capacity: int) -> None:
        self._semaphore = asyncio.Semaphore(capacity)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._semaphore:
            yield


class BusyClock:
    """Accumulates the wall time during which at least one request is in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._since = 0.0
        self.total = 0.0

    def enter(self) -> None:
        if self.in_flight == 0:
            self._since = time.monotonic()
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.total += time.monotonic() - self._since


def _vector(embedding: str | list[float]) -> np.ndarray:
    """One embedding from a base64 answer (or a float list from servers that ignore it)."""
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").astype(np.float32)
    return np.asarray(embedding, dtype=np.float32)


class ModelClient:
    """LLM completion and embeddings for LightRAG; create and use it on one event loop.

    `llm_slots`/`embedding_slots` bound the requests in flight; without them each client
    has local semaphores of options.llm_max_concurrency / embedding_max_concurrency.
    """

    def __init__(self, options: ModelOptions, llm_slots: Slots | None = None,
                 embedding_slots: Slots | None = None) -> None:
        self.options = options
        self.usage = ModelUsage()
        self._client: openai.AsyncOpenAI | None = None
        self._llm_slots = llm_slots
        self._embed_slots = embedding_slots
        self._llm_clock = BusyClock()
        self._embed_clock = BusyClock()
        if options.stand_in:
            log.warning("Model: the local STAND-IN model at %s (deterministic, not a real LLM); "
                        "set OPENAI_API_KEY to use a real one", options.base_url)

    def __deepcopy__(self, memo: dict[int, Any]) -> ModelClient:
        # LightRAG deep-copies its configuration, our bound methods included; the client,
        # its connections and counters must stay shared.
        return self

    def _ensure(self) -> openai.AsyncOpenAI:
        if self._client is None:
            self._client = openai.AsyncOpenAI(
                base_url=self.options.base_url, api_key=self.options.api_key,
                timeout=self.options.model_timeout_seconds, max_retries=0,  # retries are ours
            )
            self._llm_slots = self._llm_slots or LocalSlots(self.options.llm_max_concurrency)
            self._embed_slots = (self._embed_slots
                                 or LocalSlots(self.options.embedding_max_concurrency))
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _with_retries(self, call, kind: str):
        attempt = 0
        while True:
            try:
                return await call()
            except Exception as exc:
                if not is_transient(exc):
                    if isinstance(exc, openai.APIStatusError):
                        raise PermanentModelError(
                            f"model_refused: {kind} request refused by {self.options.base_url}"
                            f": HTTP {exc.status_code} {exc.message}"
                        ) from None
                    raise
                if attempt >= self.options.max_retries:
                    if kind == "llm":
                        self.usage.llm_failures += 1
                    raise TransientModelError(
                        f"{TRANSIENT_PREFIX} {kind} request failed {attempt + 1} times "
                        f"({type(exc).__name__}: {str(exc)[:200]})"
                    ) from None
                retry_after = None
                response = getattr(exc, "response", None)
                if response is not None:
                    retry_after = response.headers.get("retry-after")
                delay = backoff_seconds(attempt, self.options.retry_backoff, retry_after)
                if kind == "llm":
                    self.usage.llm_retries += 1
                log.info("model %s request failed (%s), retry %d in %.1fs", kind,
                         type(exc).__name__, attempt + 1, delay)
                await asyncio.sleep(delay)
                attempt += 1

    async def complete(self, prompt: str, system_prompt: str | None = None,
                       history_messages: list[dict[str, Any]] | None = None,
                       **kwargs: Any) -> str:
        """LightRAG's `llm_model_func`."""
        client = self._ensure()
        messages: list[dict[str, Any]] = []
        if system_prompt:
            messages.append({"role": "system", "content": system_prompt})
        messages.extend(history_messages or [])
        messages.append({"role": "user", "content": prompt})
        params = {k: kwargs[k] for k in FORWARDED_KWARGS if kwargs.get(k) is not None}
        if kwargs.get("keyword_extraction") and "response_format" not in params:
            params["response_format"] = {"type": "json_object"}

        async def call() -> str:
            assert self._llm_slots is not None
            async with self._llm_slots.slot():
                clock = self._llm_clock
                clock.enter()
                self.usage.llm_peak_in_flight = max(self.usage.llm_peak_in_flight,
                                                    clock.in_flight)
                started = time.monotonic()
                try:
                    response = await client.chat.completions.create(
                        model=self.options.openai_llm_model, messages=messages, **params)
                finally:
                    clock.leave()
                    self.usage.llm_seconds += time.monotonic() - started
                    self.usage.llm_busy_seconds = clock.total
            self.usage.llm_calls += 1
            if response.usage is not None:
                self.usage.prompt_tokens += response.usage.prompt_tokens or 0
                self.usage.completion_tokens += response.usage.completion_tokens or 0
            content = response.choices[0].message.content if response.choices else None
            if content is None:
                raise EmptyCompletion(f"{self.options.openai_llm_model} returned no content")
            return content

        return await self._with_retries(call, "llm")

    async def embed(self, texts: list[str], **_: Any) -> np.ndarray:
        """LightRAG's embedding function."""
        client = self._ensure()
        extra = {}
        model = self.options.openai_embedding_model
        if model.startswith("text-embedding-3") or self.options.stand_in:
            extra["dimensions"] = self.options.embedding_dim

        async def call() -> np.ndarray:
            assert self._embed_slots is not None
            async with self._embed_slots.slot():
                self._embed_clock.enter()
                started = time.monotonic()
                try:
                    # base64: parsing a JSON list of floats costs a Python object per float.
                    response = await client.embeddings.create(
                        model=self.options.openai_embedding_model, input=texts,
                        encoding_format="base64", **extra)
                finally:
                    self._embed_clock.leave()
                    self.usage.embedding_seconds += time.monotonic() - started
                    self.usage.embedding_busy_seconds = self._embed_clock.total
            self.usage.embedding_calls += 1
            self.usage.embedding_inputs += len(texts)
            if response.usage is not None:
                self.usage.embedding_tokens += response.usage.prompt_tokens or 0
            return np.stack([_vector(item.embedding) for item in response.data])

        return await self._with_retries(call, "embedding")
