"""LightRAG on PostgreSQL (one workspace per collection) and the models it calls."""

from __future__ import annotations

import dagster as dg

from rag_pipeline.knowledge.workspaces import LightRAGOptions, WorkspacePool, shared_pool


class LightRAGResource(dg.ConfigurableResource):
    """LightRAG's storages, its pool of workspaces, and the model endpoints.

    LLM_MAX_CONCURRENCY and EMBEDDING_MAX_CONCURRENCY are totals across every concurrent
    run: requests take slots shared through PostgreSQL (model_slots.py), so one run alone
    may use them all and several runs share them (README, "Concurrency").
    """

    postgres_host: str
    postgres_port: int
    postgres_user: str
    postgres_password: str
    postgres_db: str
    postgres_sslmode: str
    postgres_sslrootcert: str
    lightrag_pool_size: int
    lightrag_graph_storage: str
    max_rag_instances: int
    rag_instance_ttl_seconds: int
    max_workers: int
    openai_api_key: str
    openai_base_url: str | None
    dev_llm_url: str
    openai_llm_model: str
    openai_embedding_model: str
    embedding_dim: int
    llm_max_concurrency: int
    embedding_max_concurrency: int
    model_timeout_seconds: float
    max_retries: int
    retry_backoff: float

    @property
    def options(self) -> LightRAGOptions:
        return LightRAGOptions.from_settings(self, shared_slots=True)

    def pool(self) -> WorkspacePool:
        return shared_pool(self.options)
