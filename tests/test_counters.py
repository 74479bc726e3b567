"""The ledger's counters (what the metrics exporter reports): written with what they count,
and never going backwards when jobs are processed again."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from rag_pipeline.observability.metrics import PipelineCollector, Sources
from tests.helpers import complete, produce, raw, staged_jobs, tick


def metric_values(ledger) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry()
    registry.register(PipelineCollector(Sources(ledger=ledger)))
    values = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def finished(values: dict, state: str) -> float:
    return sum(v for (name, labels), v in values.items()
               if name == "rag_pipeline_jobs_finished_total" and ("state", state) in labels)


def test_counters_count_with_the_work_and_never_go_backwards(topics, ledger, unique):
    before = metric_values(ledger)
    job_ids = staged_jobs(topics, ledger, unique, 3)
    with ledger.pool.connection() as conn:  # the Kafka timestamp, for the latency histogram
        ages = conn.execute("SELECT extract(epoch FROM now() - produced_at) FROM "
                            "rag_pipeline.jobs WHERE job_id = ANY(%s)", (job_ids,)).fetchall()
    assert len(ages) == 3 and all(age is not None and 0 <= age < 600 for (age,) in ages)
    produce(topics, topics.kafka_topic, [raw(b"k", b"{not json"), raw(b"k", b"")])
    tick(topics, ledger)
    complete(ledger, f"c-{unique}", job_ids[:2])
    complete(ledger, f"c-{unique}", job_ids[2:], state="failed")
    after = metric_values(ledger)
    assert after[("rag_pipeline_jobs_staged_total", ())] - before.get(
        ("rag_pipeline_jobs_staged_total", ()), 0) == 3
    assert finished(after, "completed") - finished(before, "completed") == 2
    assert finished(after, "failed") - finished(before, "failed") == 1
    for reason, added in (("invalid_json", 1), ("empty_message", 1), ("lightrag_failed", 1)):
        key = ("rag_pipeline_dead_letters_total", (("reason", reason),))
        assert after[key] - before.get(key, 0) == added, reason
    latency = ("rag_pipeline_job_latency_seconds_count", ())
    assert after[latency] - before.get(latency, 0) == 3

    # Processing the collection again (a reindex backfill) requeues its jobs: the gauge of
    # completed jobs drops, the counter of finished ones does not.
    ledger.claim_jobs(f"c-{unique}", "reindex-run", ["reindex-run"], 10, scope="everything")
    requeued = metric_values(ledger)
    assert finished(requeued, "completed") == finished(after, "completed")
    assert requeued[("rag_pipeline_jobs", (("state", "completed"),))] < after[
        ("rag_pipeline_jobs", (("state", "completed"),))]
    complete(ledger, f"c-{unique}", job_ids)
    assert finished(metric_values(ledger), "completed") == finished(after, "completed") + 3
