"""Runs' liveness: heartbeats, the runs that stopped showing life, declaring a run dead,
run outcomes, and the nudges that ask for a new run (liveness.py and reconciliation.py).

A run declared dead is refused from then on: its beats here, every write it makes
(`connection.fence_run`: claims, texts, taking new jobs; `outcomes.finish_jobs`), its late
outcome.
"""

from __future__ import annotations

from collections.abc import Sequence

from rag_pipeline.ledger.connection import LedgerConnection, fence_run
from rag_pipeline.ledger.counters import add_counters
from rag_pipeline.ledger.outcomes import requeue_in
from rag_pipeline.ledger.records import JobOutcome
from rag_pipeline.vocabulary import DeathCause, Reason, RunOutcome

# How long declaring a run dead waits for a write of the run in progress.
DECLARE_LOCK_TIMEOUT = "10s"


class LivenessQueries(LedgerConnection):
    """What the run leases, the liveness check and reconciliation read and write about runs."""

    def heartbeat(self, run_id: str, collection_id: str, process: str) -> bool:
        """The run is alive. False once it has been declared dead: it must stop writing."""
        with self.transaction() as conn:
            return conn.execute(
                "INSERT INTO rag_pipeline.runs (run_id, collection_id, process) "
                "VALUES (%s, %s, %s) ON CONFLICT (run_id) DO UPDATE SET beat_at = now(), "
                "process = EXCLUDED.process WHERE rag_pipeline.runs.declared_dead_at IS NULL "
                "RETURNING run_id", (run_id, collection_id, process)).fetchone() is not None

    def set_accepting(self, run_id: str, accepting: bool) -> None:
        """Whether the run still takes its collection's newly staged jobs (from its first
        beat on): while it does, the sensor requests no other run for the collection.
        Fenced: a run declared dead is refused (RunFenced) when it asks to take jobs; clearing
        the flag is always allowed (it only gives work away)."""
        with self.transaction() as conn:
            if accepting:
                fence_run(conn, run_id)
            conn.execute("UPDATE rag_pipeline.runs SET accepting = %s WHERE run_id = %s "
                         "AND declared_dead_at IS NULL", (accepting, run_id))

    def runs_not_accepting(self, run_ids: Sequence[str]) -> set[str]:
        """Of these runs, those that no longer take new jobs: cleared the flag to end or
        yield, finished, or were declared dead (a run that has not beaten yet has no row:
        it is about to take them)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT run_id FROM rag_pipeline.runs WHERE run_id = ANY(%s) AND (NOT "
                "accepting OR finished_at IS NOT NULL OR declared_dead_at IS NOT NULL)",
                (list(run_ids),)).fetchall()
        return {r[0] for r in rows}

    def declared_dead(self, run_id: str) -> str | None:
        """Why the run was declared dead, or None while it may work."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT declared_dead_msg FROM rag_pipeline.runs "
                               "WHERE run_id = %s AND declared_dead_at IS NOT NULL",
                               (run_id,)).fetchone()
        return row[0] if row else None

    def silent_runs(self, timeout_seconds: float, gone_after_seconds: float
                    ) -> list[tuple[str, str, float, DeathCause]]:
        """(run_id, collection_id, seconds silent, cause) of unfinished runs that stopped
        showing life:

        - `silent`: no beat for `timeout_seconds` (jobs of runs that never beat count from
          the job's last update). Covers every way of dying, a lost host or network too.
        - `gone`: no beat for `gone_after_seconds` and no PostgreSQL session left under the
          name of its process. A process that dies (SIGKILL, OOM kill, container or pod
          stop) has its sockets closed by its kernel, so PostgreSQL drops its sessions at
          once, while a live run holds a pooled session and reconnects within a beat. Not
          trusted until the server itself has been up for `gone_after_seconds`: after a
          PostgreSQL restart nobody has a session until their next beat.
        """
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT run_id, collection_id, extract(epoch FROM now() - last_sign)::float8, "
                "  cause FROM ("
                "  SELECT r.run_id, r.collection_id, r.beat_at AS last_sign, CASE "
                "    WHEN r.beat_at < now() - make_interval(secs => %(timeout)s) THEN 'silent' "
                "    WHEN r.beat_at < now() - make_interval(secs => %(gone)s) "
                "      AND r.process IS NOT NULL "
                "      AND pg_postmaster_start_time() < now() - make_interval(secs => %(gone)s) "
                "      AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a "
                "                      WHERE a.application_name = r.process) THEN 'gone' "
                "    END AS cause "
                "  FROM rag_pipeline.runs r WHERE r.finished_at IS NULL "
                "  AND r.declared_dead_at IS NULL "
                "  UNION ALL SELECT j.run_id, min(j.collection_id), max(j.updated_at), 'silent' "
                "  FROM rag_pipeline.jobs j WHERE j.state = 'running' AND NOT EXISTS "
                "  (SELECT 1 FROM rag_pipeline.runs r WHERE r.run_id = j.run_id) "
                "  GROUP BY j.run_id "
                "  HAVING max(j.updated_at) < now() - make_interval(secs => %(timeout)s)) s "
                "WHERE cause IS NOT NULL ORDER BY last_sign",
                {"timeout": timeout_seconds, "gone": gone_after_seconds}).fetchall()
        return [(run_id, collection_id, silent, DeathCause(cause))
                for run_id, collection_id, silent, cause in rows]

    def beating_runs(self, run_ids: Sequence[str]) -> set[str]:
        """Those of `run_ids` that have beaten at least once."""
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT run_id FROM rag_pipeline.runs WHERE run_id = ANY(%s)",
                                (list(run_ids),)).fetchall()
        return {r[0] for r in rows}

    def declare_run_dead(self, run_id: str, collection_id: str, detail: str,
                         cause: DeathCause, max_retries: int) -> list[JobOutcome]:
        """Mark the run dead (its beats and writes are refused from now on) and give its
        running jobs back (queued with attempts+1, or dead after `max_retries`), in ONE
        transaction: a declaration is never half done, and doing it again changes nothing.
        `cause` labels the counter. Returns the released jobs' outcomes (their dead letters
        and statuses are the caller's).

        The run's row is locked first: a write of the run in progress (`fence_run`) ends
        before, and is then given away with the rest. A frozen process can hold such a
        write open: call `terminate_run_sessions` first, and this gives up after
        DECLARE_LOCK_TIMEOUT (raising psycopg.errors.LockNotAvailable: try again later)."""
        with self.transaction() as conn:
            conn.execute(f"SET LOCAL lock_timeout = '{DECLARE_LOCK_TIMEOUT}'")
            declared = conn.execute(
                "SELECT declared_dead_at IS NOT NULL FROM rag_pipeline.runs WHERE run_id = %s "
                "FOR UPDATE", (run_id,)).fetchone()
            conn.execute(
                "INSERT INTO rag_pipeline.runs (run_id, collection_id, declared_dead_at, "
                "declared_dead_msg) VALUES (%s, %s, now(), %s) ON CONFLICT (run_id) DO "
                "UPDATE SET declared_dead_at = coalesce(rag_pipeline.runs.declared_dead_at, "
                "now()), declared_dead_msg = coalesce("
                "rag_pipeline.runs.declared_dead_msg, EXCLUDED.declared_dead_msg), "
                "outcome = coalesce(rag_pipeline.runs.outcome, %s), "
                "finished_at = coalesce(rag_pipeline.runs.finished_at, now()), "
                "accepting = false",
                (run_id, collection_id, detail, RunOutcome.DECLARED_DEAD))
            if declared is None or not declared[0]:
                add_counters(conn, {("runs_declared_dead", f"cause={cause}"): 1})
            return requeue_in(conn, [run_id], Reason.RUN_FAILED, detail, max_retries)

    def terminate_run_sessions(self, run_id: str) -> int:
        """End the PostgreSQL sessions of a dead run's process: its collection lock is
        released and its open transactions roll back. Returns how many were ended."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT process FROM rag_pipeline.runs WHERE run_id = %s",
                               (run_id,)).fetchone()
            process = row[0] if row else None
            if not process:
                return 0
            return conn.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                "FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()",
                (process,)).fetchone()[0]

    def mark_failed_in_dagster(self, run_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE rag_pipeline.runs SET failed_in_dagster_at = now() "
                         "WHERE run_id = %s", (run_id,))

    def dead_runs_not_failed_in_dagster(self) -> list[tuple[str, str]]:
        """(run_id, declared_dead_msg) of runs declared dead that Dagster may still count
        as running (failing them there did not succeed yet)."""
        with self.pool.connection() as conn:
            return [tuple(r) for r in conn.execute(
                "SELECT run_id, coalesce(declared_dead_msg, '') FROM rag_pipeline.runs "
                "WHERE declared_dead_at IS NOT NULL AND failed_in_dagster_at IS NULL "
                "ORDER BY declared_dead_at LIMIT 100").fetchall()]

    def running_jobs_of_ended_runs(self, grace_seconds: float = 30.0) -> list[tuple[str, str]]:
        """(run_id, collection_id) of runs that finished or were declared dead more than
        `grace_seconds` ago and still hold `running` jobs."""
        with self.pool.connection() as conn:
            return [tuple(r) for r in conn.execute(
                "SELECT DISTINCT r.run_id, r.collection_id FROM rag_pipeline.jobs j "
                "JOIN rag_pipeline.runs r ON r.run_id = j.run_id WHERE j.state = 'running' "
                "AND coalesce(r.declared_dead_at, r.finished_at) < now() - "
                "make_interval(secs => %s)", (grace_seconds,)).fetchall()]

    def finish_run(self, run_id: str, collection_id: str, outcome: RunOutcome) -> None:
        """Record how the run ended; a run declared dead stays `declared dead` (a late
        success of a woken run changes nothing)."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO rag_pipeline.runs (run_id, collection_id, outcome, finished_at) "
                "VALUES (%s, %s, %s, now()) ON CONFLICT (run_id) DO UPDATE SET "
                "outcome = EXCLUDED.outcome, finished_at = now(), accepting = false "
                "WHERE rag_pipeline.runs.declared_dead_at IS NULL",
                (run_id, collection_id, outcome))

    def recent_failed_runs(self, collection_id: str, window_seconds: float) -> int:
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT count(*) FROM rag_pipeline.runs WHERE collection_id = %s "
                "AND outcome = %s AND finished_at > now() - make_interval(secs => %s)",
                (collection_id, RunOutcome.FAILURE, window_seconds),
            ).fetchone()[0]

    def run_outcome(self, run_id: str) -> RunOutcome | None:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT outcome FROM rag_pipeline.runs WHERE run_id = %s",
                               (run_id,)).fetchone()
        return RunOutcome(row[0]) if row and row[0] else None

    def stale_queued_collections(self, older_than_seconds: float) -> list[str]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT collection_id FROM rag_pipeline.jobs WHERE state = 'queued' "
                "AND updated_at < now() - make_interval(secs => %s) ORDER BY 1",
                (older_than_seconds,),
            ).fetchall()
        return [r[0] for r in rows]

    def nudge(self, collection_id: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO rag_pipeline.collection_nudges (collection_id, nudge) VALUES (%s, 1) "
                "ON CONFLICT (collection_id) DO UPDATE SET nudge = "
                "rag_pipeline.collection_nudges.nudge + 1", (collection_id,))
            conn.execute("UPDATE rag_pipeline.jobs SET updated_at = now() "
                         "WHERE collection_id = %s AND state = 'queued'", (collection_id,))
