"""Run hooks of the indexing jobs: a finishing run records its outcome in the ledger and
delivers the statuses still waiting in the outbox.

Definitions only; the unfinished jobs of a failed run are requeued by the run-failure
sensors (`sensors/reconciliation.py`) or by `reconcile_stuck_jobs`.
"""

from __future__ import annotations

import dagster as dg

from rag_pipeline.events import event_line
from rag_pipeline.ledger import JobLedger
from rag_pipeline.resources import KafkaResource, OutboxResource

# Statuses a finishing run delivers at most, and for how long (the outbox keeps the rest).
FINAL_DELIVERY_LIMIT = 1000
FINAL_DELIVERY_SECONDS = 60.0
RESOURCE_KEYS = {"ledger", "kafka", "outbox"}


def _finish_run(context: dg.HookContext, outcome: str) -> None:
    run = context.instance.get_run_by_id(context.run_id)
    collection_id = run.tags.get("dagster/partition", "") if run else ""
    ledger: JobLedger = context.resources.ledger
    ledger.finish_run(context.run_id, collection_id, outcome)
    outbox: OutboxResource = context.resources.outbox
    kafka: KafkaResource = context.resources.kafka
    delivery = outbox.bind(ledger, kafka).deliver(limit=FINAL_DELIVERY_LIMIT,
                                                  deadline_seconds=FINAL_DELIVERY_SECONDS,
                                                  log_event=context.log.warning)
    context.log.info(event_line("run_outcome", run_id=context.run_id,
                                collection_id=collection_id, outcome=outcome,
                                outbox_delivered=delivery.delivered,
                                outbox_retrying=delivery.retried))


@dg.success_hook(required_resource_keys=RESOURCE_KEYS)
def record_run_success(context: dg.HookContext) -> None:
    """The run indexed its pages: record it, deliver the statuses still waiting."""
    if context.op.name == "lightrag_documents":
        _finish_run(context, "success")


@dg.failure_hook(required_resource_keys=RESOURCE_KEYS)
def record_run_failure(context: dg.HookContext) -> None:
    """A step failed for good: record it; the pages done so far get their statuses now."""
    _finish_run(context, f"failure in {context.op.name}")


RUN_HOOKS = {record_run_success, record_run_failure}
