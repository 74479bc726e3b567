"""What the fault scenarios share: the `Context` a fault records its moments in, and the
helpers that find a run worker at work, wait for a takeover, or kill a whole host."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg

from bench.fault_accounting import takeover
from bench.harness import Model, PipelineRun
from rag_pipeline.dagster_runs import COLLECTION_TAG
from rag_pipeline.ledger import JobLedger
from rag_pipeline.local.stack import LocalStack
from rag_pipeline.local.stack.dagster_dev import processes_with_dagster_home
from rag_pipeline.settings import Settings


@dataclass
class Context:
    settings: Settings
    stack: LocalStack
    model: Model
    run: PipelineRun
    progress: Callable[[], float]  # share of the stream published so far
    notes: list[str]
    collections: list[str] = field(default_factory=list)  # the scenario's
    pages: int = 0  # how many pages the stream publishes
    injected: bool = True
    # (epoch time a fault ended, collections it blocked: None means every collection)
    fault_ends: list[tuple[float, set[str] | None]] = field(default_factory=list)
    # Per fault (index into fault_ends): collection -> the takeover steps, as observed live
    # (the ledger's and LightRAG's timestamps are overwritten when a later crash hits the
    # run that took over, so they cannot be read back afterwards).
    takeovers: dict[int, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    # (from, to) epoch spans of faults that destroy model answers in flight (a crash, a
    # freeze, PostgreSQL gone before LightRAG caches an answer): `strike()` to `ended()`.
    struck: list[tuple[float, float]] = field(default_factory=list)
    _struck_at: float | None = None
    # Rows a dropped collection left in LightRAG's tables (drop_crash; counted as duplicated).
    left_behind: int | None = None

    def wait_for_stream(self, share: float) -> None:
        while self.progress() < share:
            time.sleep(0.2)

    def strike(self) -> None:
        """The fault about to start can destroy model answers in flight."""
        self._struck_at = time.time()

    def ended(self, blocked: set[str] | None = None) -> None:
        now = time.time()
        self.fault_ends.append((now, blocked))
        if self._struck_at is not None:
            self.struck.append((self._struck_at, now))
            self._struck_at = None

    def running_collections(self) -> set[str]:
        """Collections that a crash now would block: with jobs running, or with a run that
        Dagster is starting or has started (a run killed while starting blocks too)."""
        with self.run.ledger.pool.connection() as conn:
            running = {r[0] for r in conn.execute("SELECT DISTINCT collection_id FROM "
                                                  "rag_pipeline.jobs WHERE state = 'running'")}
        with psycopg.connect(self.settings.postgres_conninfo(self.run.dagster_db),
                             **self.settings.postgres_kwargs()) as conn:
            running |= {r[0] for r in conn.execute(
                "SELECT t.value FROM runs r JOIN run_tags t ON t.run_id = r.run_id "
                "AND t.key = %s WHERE r.status IN ('STARTING', 'STARTED')", (COLLECTION_TAG,))}
        return running


def inserting_run_workers(ledger: JobLedger) -> list[tuple[str, int]]:
    """(collection, pid) of runs whose workspace has documents being processed, from the
    process name each run records with its heartbeat (rag-pipeline:host:pid:token)."""
    with ledger.pool.connection() as conn:
        if not conn.execute("SELECT to_regclass('public.lightrag_doc_status')").fetchone()[0]:
            return []
        rows = conn.execute(
            "SELECT r.collection_id, r.process FROM rag_pipeline.runs r WHERE "
            "r.finished_at IS NULL AND r.declared_dead_at IS NULL AND r.process IS NOT NULL "
            "AND EXISTS (SELECT 1 FROM lightrag_doc_status s WHERE s.workspace = "
            "r.collection_id AND s.status = 'processing')").fetchall()
    return [(collection, int(process.split(":")[2])) for collection, process in rows]


def wait_for_live_inserts(ctx: Context, seconds: float) -> None:
    """Until a live run worker is inserting (a crash right after a restart would only hit
    the daemon); noted when none came."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(psutil.pid_exists(pid) for _, pid in inserting_run_workers(ctx.run.ledger)):
            return
        time.sleep(0.5)
    ctx.notes.append(f"no run worker was inserting within {seconds:.0f} s; crashed anyway")


def wait_until_resumed(ctx: Context, blocked: set[str], seconds: float) -> None:
    """Until LightRAG took up a document of each blocked collection again, so that the next
    crash does not fall into this one's recovery (each recovery is measured alone). Records
    each collection's takeover steps the first time each is seen."""
    since = ctx.fault_ends[-1][0]
    seen = ctx.takeovers.setdefault(len(ctx.fault_ends) - 1, {})
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.Error):
            for collection in sorted(blocked):
                steps = seen.setdefault(collection, {})
                if steps.get("model_work_s") is not None:
                    continue
                for name, value in takeover(ctx.run.ledger, collection, since).items():
                    if steps.get(name) is None:
                        steps[name] = value
            if all(seen[c].get("model_work_s") is not None for c in blocked):
                return
        time.sleep(0.5)
    ctx.notes.append(f"blocked collections had not resumed {seconds:.0f} s after a crash")


def kill_everything(home: Path) -> int:
    """SIGKILL every process of this deployment at once, as a dying host does."""
    victims = processes_with_dagster_home(home)
    for victim in victims:
        with contextlib.suppress(psutil.Error):
            victim.kill()
    psutil.wait_procs(victims, timeout=30)
    return len(victims)


def documents_in_progress(ledger: JobLedger) -> int:
    with ledger.pool.connection() as conn:
        exists = conn.execute("SELECT to_regclass('public.lightrag_doc_status')").fetchone()[0]
        if not exists:
            return 0
        return conn.execute("SELECT count(*) FROM lightrag_doc_status WHERE status IN "
                            "('processing', 'pending', 'parsing')").fetchone()[0]

