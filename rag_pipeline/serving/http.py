"""The query service's HTTP face (FastAPI): queries, collections, crawl request status,
health, metrics, and the MCP server mounted at /mcp. Every route but the health checks and
/metrics wants a bearer token (access.py)."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run
# time, and `Caller` is local to create_app.
import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from rag_pipeline.serving.access import Access, Grant, Refused
from rag_pipeline.serving.mcp_tools import mcp_server
from rag_pipeline.serving.queries import DEFAULT_TOP_K, QueryService
from rag_pipeline.vocabulary import QueryMode

SWEEP_EVERY_SECONDS = 30.0


class QueryRequest(BaseModel):
    collection: str = Field(description="collection id or alias")
    question: str
    mode: QueryMode = QueryMode.MIX
    top_k: int = DEFAULT_TOP_K
    context_only: bool = Field(False, description="retrieval only: references, no answer")


def refusal_response(service: QueryService, refused: Refused) -> JSONResponse:
    service.refused(refused)
    headers = {"WWW-Authenticate": "Bearer"} if refused.status == 401 else None
    return JSONResponse({"reason": refused.reason.value, "detail": refused.message},
                        status_code=refused.status, headers=headers)


class BearerOnly:
    """The MCP endpoint's gate: a request without a valid token never reaches the MCP
    session manager (the tools check the token's collections themselves)."""

    def __init__(self, app: ASGIApp, access: Access, service: QueryService) -> None:
        self.app, self.access, self.service = app, access, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            try:
                self.access.grant(headers.get("authorization"))
            except Refused as refused:
                await refusal_response(self.service, refused)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(service: QueryService, access: Access, host: str = "127.0.0.1") -> FastAPI:
    mcp = mcp_server(service, access)
    mcp_app = mcp.streamable_http_app(streamable_http_path="/", stateless_http=True,
                                      json_response=True, host=host)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        every = min(SWEEP_EVERY_SECONDS, service.pool.options.rag_instance_ttl_seconds / 2)

        async def sweep() -> None:
            while True:
                await asyncio.sleep(every)
                with contextlib.suppress(Exception):
                    await service.sweep()

        sweeper = asyncio.create_task(sweep())
        try:
            async with mcp.session_manager.run():
                yield
        finally:
            sweeper.cancel()

    app = FastAPI(title="rag-pipeline query service", version="1", lifespan=lifespan)

    def grant(authorization: Annotated[str | None, Header()] = None) -> Grant:
        return access.grant(authorization)

    Caller = Annotated[Grant, Depends(grant)]

    @app.exception_handler(Refused)
    async def refused(_request: Request, exc: Refused) -> JSONResponse:
        return refusal_response(service, exc)

    @app.post("/v1/query")
    async def query(body: QueryRequest, caller: Caller) -> dict[str, Any]:
        result = await service.ask(body.collection, body.question, grant=caller,
                                   mode=body.mode.value, top_k=body.top_k,
                                   context_only=body.context_only)
        return asdict(result)

    @app.get("/v1/collections")
    async def collections(caller: Caller) -> dict[str, Any]:
        entries = await service.collections(caller)
        return {"collections": [asdict(e) | {"complete": e.complete} for e in entries]}

    @app.get("/v1/requests/{request_id}")
    async def request_status(request_id: int, caller: Caller,
                             offset: Annotated[int, Query(ge=0)] = 0,
                             limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                             ) -> dict[str, Any]:
        status = await service.request_status(request_id, caller, offset, limit)
        return asdict(status) | {"total": status.total, "complete": status.complete,
                                 "offset": offset, "limit": limit}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        try:
            await asyncio.wait_for(asyncio.to_thread(service.ledger.ping), timeout=5)
        except Exception as exc:
            return JSONResponse({"status": "unavailable",
                                 "detail": f"PostgreSQL: {type(exc).__name__}"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(service.metrics.registry),
                                 media_type=CONTENT_TYPE_LATEST)

    app.mount("/mcp", BearerOnly(mcp_app, access, service))
    return app
