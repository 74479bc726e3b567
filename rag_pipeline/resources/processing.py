"""How pages are processed: limits, which text is indexed, how runs stream, retries, and
liveness's timeouts."""

from __future__ import annotations

import dagster as dg

from rag_pipeline.indexing.pages import PageLimits
from rag_pipeline.indexing.run import StreamLimits
from rag_pipeline.liveness.options import LivenessOptions
from rag_pipeline.resources.kafka import KafkaResource
from rag_pipeline.staging import StagingConfig


class ProcessingResource(dg.ConfigurableResource):
    """How pages are processed: limits, which text is indexed, how runs stream, retries."""

    max_payload_bytes: int
    max_text_bytes: int
    text_source: str
    run_batch_bytes: int
    run_idle_seconds: float
    run_max_seconds: float
    max_retries: int
    retry_backoff: float
    run_heartbeat_timeout_seconds: int
    run_stall_timeout_seconds: int
    run_start_timeout_seconds: int

    def staging_config(self, kafka: KafkaResource) -> StagingConfig:
        return StagingConfig.from_settings(kafka, self)

    @property
    def page_limits(self) -> PageLimits:
        return PageLimits.from_settings(self)

    @property
    def liveness(self) -> LivenessOptions:
        return LivenessOptions.from_settings(self)

    def stream_limits(self, workers: int, max_jobs: int | None = None) -> StreamLimits:
        """`workers`: the pages LightRAG works on at once; twice as many are kept in flight."""
        return StreamLimits(window=2 * workers, idle_seconds=self.run_idle_seconds,
                            max_seconds=self.run_max_seconds,
                            stall_seconds=self.run_stall_timeout_seconds,
                            max_retries=self.max_retries, batch_bytes=self.run_batch_bytes,
                            max_jobs=max_jobs)
