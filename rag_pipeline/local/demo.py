"""The demo crawl of `rag-pipeline dev`: two collections of real PostgreSQL documentation
pages and a few deliberately broken messages, then progress on the terminal.

Job ids and timestamps are fixed, so publishing the demo again stages nothing new.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag_pipeline.ledger import JobLedger
from rag_pipeline.local.corpus import CorpusUnavailable, postgres_docs
from rag_pipeline.local.publishing import OutgoingMessage, build_message, message_for, publish
from rag_pipeline.settings import Settings

DEMO_FIRST_JOB_ID = 7_000_000_000
DEMO_REQUEST_ID = 7_000
DEMO_DISCOVERED_AT = "2025-12-24T10:30:00Z"
SAMPLES = Path(__file__).parent / "samples"


@dataclass(frozen=True)
class DemoCollection:
    collection_id: str
    pattern: str
    limit: int
    question: str


COLLECTIONS = (
    DemoCollection("demo-postgres-sql", "sql-create*.html", 30,
                   "How do I create an index concurrently?"),
    DemoCollection("demo-postgres-tutorial", "tutorial-*.html", 20,
                   "How do joins between tables work?"),
)


def demo_pages(folder: Path, collection: DemoCollection) -> list[Path]:
    return sorted(folder.glob(collection.pattern))[: collection.limit]


def demo_messages(folder: Path) -> tuple[list[OutgoingMessage], dict[str, list[int]]]:
    """Every demo message, and the job_ids per collection (broken ones under 'broken')."""
    messages: list[OutgoingMessage] = []
    jobs: dict[str, list[int]] = {}
    job_id = DEMO_FIRST_JOB_ID
    for collection in COLLECTIONS:
        for path in demo_pages(folder, collection):
            message = build_message(
                job_id=job_id, collection_id=collection.collection_id,
                url=f"https://www.postgresql.org/docs/15/{path.name}", html=path.read_bytes(),
                request_id=DEMO_REQUEST_ID, depth=1,
                parent_url="https://www.postgresql.org/docs/15/",
                base_url="https://www.postgresql.org/docs/15/", crawl_session_id="demo",
                discovered_at=DEMO_DISCOVERED_AT)
            messages.append(message_for(message))
            jobs.setdefault(collection.collection_id, []).append(job_id)
            job_id += 1
    broken = _broken_messages(job_id, messages[0])
    jobs["broken"] = [j for j, _ in broken]
    messages += [m for _, m in broken]
    return messages, jobs


def _broken_messages(first_job_id: int, sample: OutgoingMessage
                     ) -> list[tuple[int, OutgoingMessage]]:
    good = json.loads(sample.value)

    def variant(job_id: int, **changes: Any) -> OutgoingMessage:
        message = json.loads(json.dumps(good))
        message["job_id"] = job_id
        for key, value in changes.items():
            if key.startswith("content_"):
                message["content"][key.removeprefix("content_")] = value
            else:
                message[key] = value
        return message_for(message)

    return [
        (first_job_id, variant(first_job_id, content_html="bm90IGd6aXA=")),  # base64, not gzip
        (first_job_id + 1, variant(first_job_id + 1, collection_id="../../etc/passwd")),
        (first_job_id + 2, variant(first_job_id + 2, content_encoding="brotli")),
        (first_job_id + 3, OutgoingMessage(key=b"demo", value=(
            b'{"job_id": %d, "collection_id": "demo-postgres-sql", "url": ' % (first_job_id + 3)))),
    ]


def demo_folder() -> Path:
    """postgresql-doc-15 from Debian when available, else the samples shipped with us."""
    try:
        return postgres_docs()
    except CorpusUnavailable:
        return SAMPLES


def publish_demo(settings: Settings) -> dict[str, list[int]]:
    messages, jobs = demo_messages(demo_folder())
    publish(settings, messages)
    return jobs


def progress_lines(ledger: JobLedger, jobs: dict[str, list[int]]) -> tuple[list[str], bool]:
    """One line per collection: states of its demo jobs; and whether all are terminal."""
    lines = []
    done = True
    for collection, job_ids in jobs.items():
        rows = ledger.jobs(job_ids)
        states: dict[str, int] = {}
        for row in rows:
            states[row["state"]] = states.get(row["state"], 0) + 1
        finished = sum(states.get(s, 0) for s in ("completed", "failed", "dead"))
        done = done and finished == len(job_ids)
        detail = (", ".join(f"{n} {s}" for s, n in sorted(states.items()))
                  or "waiting for the sensor")
        lines.append(f"  {collection:<24} {finished:>3}/{len(job_ids)} finished ({detail})")
    return lines, done


def follow(ledger: JobLedger, jobs: dict[str, list[int]], echo: Callable[[str], None],
           every_seconds: float = 10.0, timeout_seconds: float = 1800.0) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        lines, done = progress_lines(ledger, jobs)
        echo(time.strftime("%H:%M:%S") + " demo progress:")
        for line in lines:
            echo(line)
        if done:
            return True
        time.sleep(every_seconds)
    return False
