"""The query service's own metrics (its `/metrics`), on a registry of its own so that tests
and several services in one process never share series."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rag_pipeline.vocabulary import QueryMode, QueryRefusal

# Seconds; a query is one embedding and, with an answer, one or two model calls.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class QueryMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "rag_pipeline_query_seconds", "time to answer a query, by mode", ["mode"],
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter(
            "rag_pipeline_query_errors", "queries refused or failed, by reason", ["reason"],
            registry=self.registry)
        self.in_flight = Gauge(
            "rag_pipeline_queries_in_flight", "queries being answered now",
            registry=self.registry)
        self.pool_instances = Gauge(
            "rag_pipeline_query_pool_instances", "LightRAG instances the service holds",
            registry=self.registry)
        self.opened = Counter(
            "rag_pipeline_query_pool_opened", "LightRAG instances initialised (concurrent "
            "queries of one collection share one)", registry=self.registry)
        self.evictions = Counter(
            "rag_pipeline_query_pool_evictions", "LightRAG instances finalized, by cause "
            "(lru: over MAX_RAG_INSTANCES, ttl: idle RAG_INSTANCE_TTL_SECONDS)", ["cause"],
            registry=self.registry)
        # Every label value from the start: a series exists before its first event.
        for mode in QueryMode:
            self.latency.labels(mode.value)
        for reason in QueryRefusal:
            self.errors.labels(reason.value)
        for cause in ("lru", "ttl"):
            self.evictions.labels(cause)
