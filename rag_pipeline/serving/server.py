"""`rag-pipeline api`: the query service under uvicorn."""

from __future__ import annotations

import logging

from rag_pipeline.serving.access import Access
from rag_pipeline.settings import Settings, reveal

log = logging.getLogger(__name__)


def check_access(settings: Settings) -> Access:
    """The service's tokens; a ValueError says why it must not start."""
    return Access.parse(reveal(settings.api_tokens), settings.api_allow_anonymous,
                        settings.api_host)


def run_api(settings: Settings) -> None:
    """Serve until interrupted (SIGINT/SIGTERM end uvicorn, then the pool is finalized)."""
    import uvicorn

    from rag_pipeline.serving.http import create_app
    from rag_pipeline.serving.queries import QueryService

    access = check_access(settings)
    # LightRAG narrates every query step at INFO.
    logging.getLogger("lightrag").setLevel(logging.WARNING)
    service = QueryService.from_settings(settings)
    try:
        app = create_app(service, access, settings.api_host)
        log.info("query service on http://%s:%s (MCP at /mcp/)", settings.api_host,
                 settings.api_port)
        # log_config=None: uvicorn's loggers go through ours (LOG_FORMAT), not its own text.
        uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="info",
                    log_config=None, timeout_graceful_shutdown=10)
    finally:
        service.close()
