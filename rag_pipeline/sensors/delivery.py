"""`status_deliverer`: the outbox's statuses to the Go API, beside indexing, never in it.

Definitions only: delivery is `rag_pipeline.outbox.deliver_outbox`. Each tick sends what is
due, DELIVERY_IN_FLIGHT requests at a time, each bounded by GO_API_TIMEOUT_SECONDS and the
tick by DELIVERY_TICK_SECONDS: a Go API that hangs or crawls delays its statuses, never a
page (invariant 10).
"""

from __future__ import annotations

import dagster as dg

from rag_pipeline.observability.events import event_line
from rag_pipeline.outbox import Outbox

DELIVERY_INTERVAL_SECONDS = 2
DELIVERY_TICK_LIMIT = 2000
# Well inside Dagster's 60 s limit for a sensor evaluation, with one request timeout on top.
DELIVERY_TICK_SECONDS = 20.0


@dg.sensor(
    name="status_deliverer",
    minimum_interval_seconds=DELIVERY_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Delivers job statuses from the outbox to the Go API (PATCH .../status), "
    "with timeouts, capped backoff and a time budget per tick.",
)
def status_deliverer(context: dg.SensorEvaluationContext,
                     outbox: dg.ResourceParam[Outbox]) -> dg.SkipReason:
    delivery = outbox.deliver(
        limit=DELIVERY_TICK_LIMIT, deadline_seconds=DELIVERY_TICK_SECONDS,
        log_event=context.log.warning)
    return dg.SkipReason(event_line("statuses_delivered", delivered=delivery.delivered,
                                    rejected=delivery.rejected, retrying=delivery.retried))
