"""Asking a collection: LightRAG's answer and the chunks it retrieved."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from rag_pipeline.knowledge.workspaces import LightRAGOptions, WorkspacePool
from rag_pipeline.settings import Settings


@dataclass(frozen=True)
class Answer:
    answer: str
    chunks: list[dict[str, Any]]


def ask(settings: Settings, collection_id: str, question: str, mode: str = "hybrid") -> Answer:
    from lightrag import QueryParam

    # LightRAG narrates every step at INFO; a terminal wants the answer.
    logging.getLogger("lightrag").setLevel(logging.WARNING)
    # A query is one process on its own: no need to share model slots with the runs.
    pool = WorkspacePool(LightRAGOptions.from_settings(settings, shared_slots=False))

    async def run() -> Answer:
        rag = await pool.workspace(collection_id)
        data = await rag.aquery_data(question, param=QueryParam(mode=mode, enable_rerank=False))
        chunks = (data.get("data") or {}).get("chunks") or []
        answer = await rag.aquery(question, param=QueryParam(mode=mode, enable_rerank=False))
        return Answer(answer=str(answer), chunks=chunks)

    try:
        return pool.run(run(), timeout=600)
    finally:
        pool.close()
