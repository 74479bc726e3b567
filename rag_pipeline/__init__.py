"""rag-pipeline: crawled pages from Kafka, indexed by Dagster into LightRAG on PostgreSQL."""
