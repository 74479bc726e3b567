"""The MCP server beside the HTTP routes (streamable HTTP at /mcp/): tools an assistant uses
to find passages of the indexed documentation, each cited by URL and title."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from rag_pipeline.serving.access import Access, Grant, Refused

if TYPE_CHECKING:
    from rag_pipeline.serving.queries import QueryService

INSTRUCTIONS = (
    "Documentation sites indexed by rag-pipeline. Call list_collections to see what is "
    "indexed (each collection has an id and usually an alias, such as 'pg-docs'), then "
    "search_docs with a collection and a question; cite the url and title of the passages "
    "you use.")


def mcp_server(service: QueryService, access: Access) -> MCPServer:
    mcp = MCPServer(name="rag-pipeline", instructions=INSTRUCTIONS)

    def caller(ctx: Context) -> Grant:
        try:
            return access.grant((ctx.headers or {}).get("authorization"))
        except Refused as refused:
            raise ToolError(service.refused(refused).message) from None

    @mcp.tool()
    async def search_docs(collection: str, question: str, ctx: Context, top_k: int = 5,
                          mode: str = "mix") -> dict[str, Any]:
        """Passages of a documentation collection that answer a question, best first, each
        with the URL and title of its page. `collection` is an alias or a collection id;
        `mode` one of naive, local, global, hybrid, mix."""
        try:
            result = await service.ask(collection, question, grant=caller(ctx), mode=mode,
                                       top_k=top_k, context_only=True)
        except Refused as refused:
            raise ToolError(service.refused(refused).message) from None
        return {"collection_id": result.collection_id, "alias": result.alias,
                "passages": [{"url": r.url, "title": r.title, "text": text}
                             for r in result.references for text in r.passages]}

    @mcp.tool()
    async def list_collections(ctx: Context) -> dict[str, Any]:
        """The documentation collections this token may search: id, alias, pages indexed,
        and whether their crawl is complete."""
        entries = await service.collections(caller(ctx))
        return {"collections": [
            {"collection_id": e.collection_id, "alias": e.alias,
             "answers_for_alias": e.answers_for_alias,
             "pages_indexed": e.pages_by_state.get("completed", 0),
             "complete": e.complete} for e in entries]}

    return mcp
