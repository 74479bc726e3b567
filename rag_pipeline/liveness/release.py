"""A run that ended badly or was declared dead gives its `running` jobs back: queued again with
attempts+1, or dead after MAX_RETRIES (dead letter + failed status, sent by the caller's
outbox). The one requeue path: the liveness check and the run-failure sensors both call it.
"""

from __future__ import annotations

from collections.abc import Callable

from rag_pipeline.ledger import JobLedger, JobOutcome
from rag_pipeline.observability.events import event_line
from rag_pipeline.vocabulary import Reason


def release_jobs_of_run(ledger: JobLedger, run_ids: list[str], detail: str, max_retries: int,
                        log: Callable[[str], None]) -> list[JobOutcome]:
    """A run died (`detail` says how): its running jobs go back to the queue, or to dead
    after MAX_RETRIES, with the reason `run_failed`."""
    outcomes = ledger.requeue_jobs_of_runs(run_ids, Reason.RUN_FAILED, detail, max_retries)
    log_released(outcomes, run_ids[0], log)
    return outcomes


def log_released(outcomes: list[JobOutcome], run_id: str, log: Callable[[str], None]) -> None:
    """One `job_released` line per job given back."""
    for o in outcomes:
        log(event_line("job_released", job_id=o.job_id, request_id=o.request_id,
                       collection_id=o.collection_id, run_id=run_id, state=o.state,
                       reason=o.reason, error_msg=o.error_msg))
