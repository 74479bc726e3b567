"""Prometheus metrics, read from the truth at scrape time: the ledger, Kafka's high
watermarks and the Dagster instance (rag_pipeline/exporter.py serves them).

Nothing is kept in the exporter's memory between scrapes: counters are the ledger's
(rag_pipeline.counters, written with what they count), gauges are queries. So a restarted
exporter, or two of them, report the same values, and no counter goes backwards. Label
values come from closed sets (states, outcomes, reason codes, kinds, partitions, the N
largest backlogs plus "_other"), never from message content, and never empty: a job
without an outcome or a reason says "none". One unit per metric (its name's suffix); points
in time are `*_timestamp_seconds`, histograms have their fixed buckets from the start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from rag_pipeline.ledger import JobLedger
from rag_pipeline.ledger.counters import LATENCY_SECONDS_BUCKETS, PAGE_SECONDS_BUCKETS
from rag_pipeline.vocabulary import JobState

log = logging.getLogger(__name__)

PREFIX = "rag_pipeline"
TOP_COLLECTIONS = 20
OTHER = "_other"
NONE = "none"  # the label value of an absent outcome or reason
# The count figures of the sensor's last tick (its cursor), one gauge; its bytes another.
TICK_COUNTS = ("read", "staged", "completions", "duplicates", "rejected", "conflicts",
               "failed_recorded", "total_lag")
INDEXING_JOB_NAMES = ("index_collection", "reindex_collection")
SENSOR_NAME = "indexing_jobs_sensor"
# Counter rows of the ledger -> (metric name, help, label names).
COUNTERS = {
    "jobs_staged": ("jobs_staged", "Jobs staged from Kafka into the ledger.", ()),
    "jobs_finished": ("jobs_finished", "Jobs that reached a terminal state, by state, "
                      "outcome and reason code.", ("state", "outcome", "reason")),
    "dead_letters": ("dead_letters", "Records sent to the dead letter topic, by reason code.",
                     ("reason",)),
    "outbox_delivered": ("outbox_delivered", "Statuses the Go API accepted (2xx).", ()),
    "outbox_rejected": ("outbox_rejected", "Statuses the Go API refused for good (4xx).", ()),
    "outbox_attempts": ("outbox_attempts", "PATCH attempts of the status outbox.", ()),
    "model_requests": ("model_requests", "Model requests, by kind (llm, embedding).", ("kind",)),
    "model_tokens": ("model_tokens", "Model tokens, by kind (prompt, completion, embedding).",
                     ("kind",)),
    "model_retries": ("model_retries", "Model requests retried, by kind.", ("kind",)),
    "model_errors": ("model_errors", "Model requests that failed for good, by kind.",
                     ("kind",)),
    "runs_declared_dead": ("runs_declared_dead", "Runs the liveness check declared dead, by "
                           "cause (gone: process gone from PostgreSQL; silent: stopped beating; "
                           "never_started).", ("cause",)),
    "alias_changes": ("alias_changes", "Aliases that began answering from another "
                      "collection, by cause (first_crawl, renewal, rebuild, dropped).",
                      ("cause",)),
    "collections_dropped": ("collections_dropped", "Collections dropped, by cause (dropped: "
                            "asked for; retired: superseded under their alias).", ("cause",)),
}
HISTOGRAMS = {
    "page_indexing_seconds": ("Seconds from a run claiming a page to its completion.",
                              PAGE_SECONDS_BUCKETS),
    "job_latency_seconds": ("Seconds from the crawler producing a job's message (its Kafka "
                            "timestamp; staging when Kafka has none) to its terminal state.",
                            LATENCY_SECONDS_BUCKETS),
}


def name(metric: str) -> str:
    return f"{PREFIX}_{metric}"


def parse_labels(text: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in text.split(",") if pair)


@dataclass
class Sources:
    """Where the truth is; each may be missing (then its metrics are absent and
    `rag_pipeline_exporter_source_up{source}` says 0)."""

    ledger: JobLedger
    kafka_watermarks: Callable[[], dict[int, int]] | None = None
    dagster: Any | None = None  # a DagsterInstance
    topic: str = "indexing_jobs"
    model_bounds: dict[str, int] = field(default_factory=dict)


class PipelineCollector(Collector):
    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(name("exporter_source_up"), "1 when the source answered this "
                               "scrape, by source (ledger, kafka, dagster).", labels=["source"])
        for source, produce in (("ledger", self._ledger), ("kafka", self._kafka),
                                ("dagster", self._dagster)):
            try:
                metrics = list(produce())
            except Exception as exc:  # a source that is down must not hide the others
                log.warning("metrics: %s unavailable: %s", source, exc)
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1 if metrics or source == "ledger" else 0)
            yield from metrics
        yield up

    # --- the ledger ----------------------------------------------------------------------
    def _ledger(self) -> Iterable[Metric]:
        snapshot = self.sources.ledger.metrics_snapshot(TOP_COLLECTIONS)
        jobs = GaugeMetricFamily(name("jobs"), "Jobs in the ledger, by state.",
                                 labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], snapshot.jobs_by_state.get(state.value, 0))
        yield jobs
        yield GaugeMetricFamily(name("oldest_queued_job_age_seconds"),
                                "Age of the oldest queued job (0 when none waits).",
                                value=snapshot.oldest_queued_age)
        yield GaugeMetricFamily(name("oldest_job_waiting_for_run_age_seconds"),
                                "Age of the oldest queued job of a collection that no run "
                                "is working on (0 when none).", value=snapshot.oldest_waiting_age)
        backlog = GaugeMetricFamily(
            name("collection_backlog_jobs"), f"Queued and running jobs of the "
            f"{TOP_COLLECTIONS} largest backlogs, and of the rest as collection=\"{OTHER}\".",
            labels=["collection"])
        for collection, count in snapshot.backlog_top:
            backlog.add_metric([collection], count)
        backlog.add_metric([OTHER], snapshot.backlog_rest)
        yield backlog
        yield GaugeMetricFamily(name("outbox_pending"), "Statuses waiting to reach the Go API.",
                                value=snapshot.outbox_pending)
        yield GaugeMetricFamily(name("outbox_oldest_pending_age_seconds"),
                                "Age of the oldest status waiting to reach the Go API.",
                                value=snapshot.outbox_oldest_pending_age)
        yield GaugeMetricFamily(name("crawls_incomplete"), "Collections whose crawl the "
                                "crawler has not said complete (no crawl_completed message).",
                                value=snapshot.crawls_incomplete)
        yield GaugeMetricFamily(name("oldest_incomplete_crawl_age_seconds"),
                                "Age of the oldest crawl not said complete (0 when none).",
                                value=snapshot.oldest_incomplete_crawl_age)
        yield GaugeMetricFamily(name("collections_awaiting_release"), "Collections whose "
                                "crawl said it is complete, not released yet (pages still "
                                "indexing, or announced pages missing).",
                                value=snapshot.collections_awaiting_release)
        yield GaugeMetricFamily(name("aliases"), "Aliases answering from a collection.",
                                value=snapshot.aliases)
        yield GaugeMetricFamily(name("collections_awaiting_retirement"), "Collections "
                                "superseded under their alias, not dropped yet (retired "
                                "RETIRE_SUPERSEDED_AFTER_SECONDS after).",
                                value=snapshot.collections_awaiting_retirement)
        yield GaugeMetricFamily(name("drops_unfinished"), "Drops asked and not finished (a "
                                "drop killed midway: run it again).",
                                value=snapshot.drops_unfinished)
        slots = GaugeMetricFamily(name("model_slots_in_use"), "Model request slots held now, "
                                  "by kind (shared by every run).", labels=["kind"])
        bound = GaugeMetricFamily(name("model_slots"), "Model request slots, by kind "
                                  "(LLM_MAX_CONCURRENCY, EMBEDDING_MAX_CONCURRENCY).",
                                  labels=["kind"])
        for kind, in_use in snapshot.model_slots_in_use.items():
            slots.add_metric([kind], in_use)
        for kind, size in self.sources.model_bounds.items():
            bound.add_metric([kind], size)
        yield slots
        yield bound
        yield from counter_metrics(snapshot.counters)

    # --- Kafka -------------------------------------------------------------------------------
    def _kafka(self) -> Iterable[Metric]:
        if self.sources.kafka_watermarks is None:
            return []
        high = self.sources.kafka_watermarks()
        stored = self.sources.ledger.stored_offsets(self.sources.topic)
        lag = GaugeMetricFamily(name("kafka_consumer_lag_messages"), "Messages of the topic "
                                "not staged yet: high watermark minus the ledger's offset.",
                                labels=["topic", "partition"])
        for partition, watermark in sorted(high.items()):
            lag.add_metric([self.sources.topic, str(partition)],
                           max(0, watermark - stored.get(partition, 0)))
        return [lag]

    # --- Dagster -----------------------------------------------------------------------------
    def _dagster(self) -> Iterable[Metric]:
        instance = self.sources.dagster
        if instance is None:
            return []
        import dagster as dg

        from rag_pipeline import dagster_internals

        runs = GaugeMetricFamily(name("index_runs"), "Indexing runs in Dagster's storage, by "
                                 "status.", labels=["status"])
        for status in dg.DagsterRunStatus:
            count = sum(dagster_internals.count_runs(instance, dg.RunsFilter(
                job_name=job, statuses=[status]))
                        for job in INDEXING_JOB_NAMES)
            runs.add_metric([status.value], count)
        heartbeat = GaugeMetricFamily(name("dagster_daemon_heartbeat_timestamp_seconds"),
                                      "When each Dagster daemon last beat (Unix time).",
                                      labels=["daemon"])
        for daemon, beat in dagster_internals.daemon_heartbeats(instance).items():
            heartbeat.add_metric([daemon], beat)
        tick_time = GaugeMetricFamily(name("sensor_last_tick_timestamp_seconds"),
                                      "When the indexing sensor last ticked (Unix time).")
        counts = GaugeMetricFamily(name("sensor_last_tick_messages"), "Messages of the "
                                   "indexing sensor's last successful tick, by figure.",
                                   labels=["figure"])
        size = GaugeMetricFamily(name("sensor_last_tick_read_bytes"),
                                 "Bytes the indexing sensor's last successful tick read.")
        took = GaugeMetricFamily(name("sensor_last_tick_duration_seconds"),
                                 "How long the indexing sensor's last successful tick took.")
        tick = dagster_internals.last_sensor_tick(instance, SENSOR_NAME)
        if tick is not None:
            tick_time.add_metric([], tick.timestamp)
            figures = tick_figures(tick.cursor)
            for figure in TICK_COUNTS:
                counts.add_metric([figure], figures.get(figure, 0.0))
            size.add_metric([], figures.get("bytes_read", 0.0))
            took.add_metric([], figures.get("elapsed_ms", 0.0) / 1000)
        return [runs, heartbeat, tick_time, counts, size, took]


def counter_metrics(rows: dict[tuple[str, str], float]) -> Iterator[Metric]:
    for key, (metric, help_text, label_names) in COUNTERS.items():
        family = CounterMetricFamily(name(metric), help_text, labels=list(label_names))
        for (row_name, row_labels), value in sorted(rows.items()):
            if row_name == key:
                values = parse_labels(row_labels)
                family.add_metric([values.get(label) or NONE for label in label_names], value)
        yield family
    for metric, (help_text, bounds) in HISTOGRAMS.items():
        # Every bucket from the first scrape (0 until observed): rate() and
        # histogram_quantile() need the series to exist before the first observation.
        observed = {float(parse_labels(labels)["le"]): value
                    for (row, labels), value in rows.items() if row == f"{metric}_bucket"}
        buckets = [(str(float(b)), observed.get(float(b), 0.0)) for b in bounds]
        buckets.append(("+Inf", observed.get(float("inf"), 0.0)))
        yield HistogramMetricFamily(name(metric), help_text, buckets=buckets,
                                    sum_value=rows.get((f"{metric}_sum", ""), 0.0))


def tick_figures(cursor: str | None) -> dict[str, float]:
    """The numbers of a `sensor_tick` line (the sensor's cursor)."""
    try:
        figures = json.loads(cursor or "{}")
    except ValueError:
        return {}
    return {k: float(v) for k, v in figures.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}

