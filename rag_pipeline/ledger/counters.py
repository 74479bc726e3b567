"""Counters that only grow, kept in the ledger (table rag_pipeline.counters).

The metrics exporter reads them at scrape time (rag_pipeline/metrics.py). They are written
in the transaction that changes what they count, so a crash neither loses nor doubles a
count, and they never go backwards: a job requeued by a backfill, or pruned by retention,
does not take back what was counted, and a restarted exporter reads the same values.

A counter is (name, labels): labels are "key=value" pairs joined by ",", sorted by key, with
values from closed sets only (states, outcomes, reason codes without their field, kinds).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import psycopg

from rag_pipeline.ledger.connection import LedgerConnection

# Upper bounds (seconds) of the histograms' buckets; "+Inf" is added.
PAGE_SECONDS_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
LATENCY_SECONDS_BUCKETS = (1, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 14400)
Increments = Counter[tuple[str, str]]


def labels(**values: object) -> str:
    return ",".join(f"{k}={'' if v is None else v}" for k, v in sorted(values.items()))


def observe(increments: Increments, name: str, seconds: float,
            buckets: tuple[float, ...]) -> None:
    """One observation of a histogram: its buckets, sum and count (cumulative buckets)."""
    for bound in buckets:
        if seconds <= bound:
            increments[(f"{name}_bucket", labels(le=bound))] += 1
    increments[(f"{name}_bucket", labels(le="+Inf"))] += 1
    increments[(f"{name}_sum", "")] += seconds
    increments[(f"{name}_count", "")] += 1


def reason_label(reason: str | None) -> str:
    """A reason code without its field (`missing_field:url` -> `missing_field`): label values
    stay a closed set whatever the messages name."""
    return (reason or "").split(":", 1)[0]


def count_dead_letter(increments: Increments, reason: str | None, state: str) -> None:
    increments[("dead_letters", labels(reason=reason_label(reason) or state))] += 1


def count_finished(increments: Increments, state: str, outcome: str | None,
                   reason: str | None, run_seconds: float | None = None,
                   latency_seconds: float | None = None) -> None:
    """A job reached a terminal state: by state, outcome and reason; a failed or dead one is
    a dead letter too; the time its run took and its latency since it was produced."""
    reason = reason_label(reason)
    increments[("jobs_finished", labels(outcome=outcome, reason=reason, state=state))] += 1
    if state in ("failed", "dead"):
        count_dead_letter(increments, reason, state)
    if run_seconds is not None and state == "completed":
        observe(increments, "page_indexing_seconds", float(run_seconds), PAGE_SECONDS_BUCKETS)
    if latency_seconds is not None:
        observe(increments, "job_latency_seconds", float(latency_seconds),
                LATENCY_SECONDS_BUCKETS)


def add_counters(conn: psycopg.Connection, increments: Mapping[tuple[str, str], float]) -> None:
    """Add to counters inside the caller's transaction (rows locked in a fixed order, so
    concurrent writers never deadlock)."""
    rows = sorted((name, label, value) for (name, label), value in increments.items() if value)
    if rows:
        # One statement for all of them (a run adds a dozen per page it settles).
        names, labels, values = (list(column) for column in zip(*rows, strict=True))
        values = [float(v) for v in values]
        conn.execute(
            "INSERT INTO rag_pipeline.counters (name, labels, value) "
            "SELECT name, labels, value FROM unnest(%s::text[], %s::text[], "
            "%s::double precision[]) WITH ORDINALITY AS r(name, labels, value, n) ORDER BY n "
            "ON CONFLICT (name, labels) DO UPDATE SET "
            "value = rag_pipeline.counters.value + EXCLUDED.value", (names, labels, values))


def read_counters(conn: psycopg.Connection) -> dict[tuple[str, str], float]:
    rows = conn.execute("SELECT name, labels, value FROM rag_pipeline.counters").fetchall()
    return {(name, label): value for name, label, value in rows}


class CounterQueries(LedgerConnection):
    """Reading every counter, and adding to some outside another transaction."""

    def counters(self) -> dict[tuple[str, str], float]:
        with self.pool.connection() as conn:
            return read_counters(conn)

    def count(self, increments: Mapping[tuple[str, str], float]) -> None:
        if not any(increments.values()):
            return
        with self.transaction() as conn:
            add_counters(conn, increments)
