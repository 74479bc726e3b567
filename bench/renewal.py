"""Renewing a collection: what a re-crawl costs against the first crawl, blue/green (a new
collection under the alias, carried over, released when complete: the design) and in place
(the same collection crawled again), and what queries see meanwhile.

    python -m bench.renewal [--pages 300] [--changed 30] [--latency-ms 300]

One pipeline (code server + daemon, default settings) at the given model latency:
1. first crawl: `pages` pages under an alias, then `crawl_completed`; timed from the first
   produce to the alias answering from it;
2. blue/green re-crawls under the same alias, each a new collection: all pages unchanged,
   then `changed` pages changed; timed to the alias answering from the new collection;
3. in place: the same two re-crawls published again into the first collection; timed to
   the last job's terminal state.
Chat calls are counted at the stand-in model. During each re-crawl of changed pages a
query loop asks, every 0.5 s, for probes (changed pages, each by a passage of its own
text) by alias (blue/green) or in the collection (in place), and counts the answers that
did not retrieve the probe page, or retrieved nothing at all.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import machine, print_table, write_results
from bench.harness import (
    RESULTS,
    Model,
    bench_stack,
    corpus,
    job_id_base,
    pipeline,
    send,
    unique_name,
    wait_terminal,
)
from rag_pipeline.identity import file_path, normalize_url
from rag_pipeline.indexing.cleaning import clean_html
from rag_pipeline.knowledge.workspaces import LightRAGOptions, WorkspacePool
from rag_pipeline.ledger import JobLedger
from rag_pipeline.local.publishing import build_message, completion_message, message_for
from rag_pipeline.settings import Settings

HOST = "renewal.bench.test"
PROBES = 5
QUERY_EVERY_S = 0.5


def url(path: Path) -> str:
    return f"https://{HOST}/docs/{path.name}"


def changed_html(path: Path) -> bytes:
    """The page revised in its main text (its first paragraph: the cleaner keeps it)."""
    return path.read_bytes().replace(
        b"</p>", b" Revised in this crawl: the maintenance window moved.</p>", 1)


@dataclass
class Crawl:
    """One crawl's messages: pages (changed ones revised), then its completion if aliased."""

    collection: str
    alias: str | None
    paths: list[Path]
    changed: set[str] = field(default_factory=set)

    def messages(self, first_job_id: int) -> tuple[list[Any], list[int]]:
        pages = [build_message(
            job_id=first_job_id + i, collection_id=self.collection, url=url(p),
            html=changed_html(p) if p.name in self.changed else p.read_bytes(),
            request_id=first_job_id // 1000, alias=self.alias) for i, p in enumerate(self.paths)]
        out = [message_for(m) for m in pages]
        if self.alias:
            out.append(message_for(completion_message(
                collection_id=self.collection, request_id=first_job_id // 1000,
                pages=len(pages), alias=self.alias)))
        return out, [m["job_id"] for m in pages]


class ProbeLoop:
    """Asks for each probe page in turn until stopped; counts what the answers missed."""

    def __init__(self, settings: Settings, target: Any, probes: dict[str, str]) -> None:
        self.target, self.probes = target, probes  # target(): the collection to ask now
        self.pool = WorkspacePool(LightRAGOptions.from_settings(settings, shared_slots=False))
        self.asked = self.missed = self.empty = 0
        self.collections: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def found(self, collection: str, probe: str) -> tuple[bool, bool]:
        from lightrag import QueryParam

        async def ask() -> list[dict]:
            rag = await self.pool.workspace(collection)
            data = await rag.aquery_data(self.probes[probe], param=QueryParam(
                mode="naive", top_k=10, enable_rerank=False))
            return (data.get("data") or {}).get("chunks") or []

        chunks = self.pool.run(ask(), timeout=60)
        return bool(chunks), probe in {c.get("file_path") for c in chunks}

    def _loop(self) -> None:
        while not self._stop.is_set():
            for probe in self.probes:
                collection = self.target()
                answered, found = self.found(collection, probe)
                self.asked += 1
                self.empty += not answered
                self.missed += not found
                if collection not in self.collections:
                    self.collections.append(collection)
                if self._stop.wait(QUERY_EVERY_S):
                    return

    def __enter__(self) -> ProbeLoop:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(120)
        self.pool.close()

    def figures(self) -> dict[str, Any]:
        return {"queries": self.asked, "probe_missed": self.missed, "empty_answers": self.empty,
                "collections_answering": self.collections}


def alias_moved(ledger: JobLedger, alias: str, collection: str, timeout: float = 3600) -> float:
    started = time.monotonic()
    while ledger.alias_collection(alias) != collection:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"alias {alias} did not move to {collection} in {timeout:.0f} s")
        time.sleep(0.25)
    return time.monotonic() - started


def measure(model: Model, run: Any, crawl: Crawl, done: Any) -> dict[str, Any]:
    """Publish a crawl, wait for `done(job_ids)`; seconds and chat calls."""
    messages, job_ids = crawl.messages(job_id_base())
    before = model.stats()["chat_calls"]
    started = time.monotonic()
    send(run.settings, messages)
    done(job_ids)
    seconds = time.monotonic() - started
    with run.ledger.pool.connection() as conn:
        outcomes = dict(conn.execute(
            "SELECT outcome, count(*) FROM rag_pipeline.jobs WHERE job_id = ANY(%s) "
            "GROUP BY outcome", (job_ids,)).fetchall())
    return {"collection": crawl.collection, "pages": len(job_ids),
            "changed": len(crawl.changed), "seconds": round(seconds, 1),
            "chat_calls": model.stats()["chat_calls"] - before, "outcomes": outcomes}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--changed", type=int, default=30)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "renewal.json")
    args = parser.parse_args(argv)
    paths = corpus(args.pages, offset=0)
    changed = {p.name for p in paths[:: max(1, args.pages // args.changed)][:args.changed]}
    probe_paths = [p for p in paths if p.name in changed][:PROBES]
    # Each probe asks for a passage of its own page (the start of its revised text).
    probes = {file_path(normalize_url(url(p))): " ".join(
        clean_html(changed_html(p).decode(errors="replace")).text.split()[:40])
        for p in probe_paths}
    alias = unique_name("docs").replace("_", "-")
    first = unique_name("first").replace("_", "-")
    with bench_stack() as settings:
        model = Model(settings)
        model.set(latency_ms=args.latency_ms)
        with pipeline(settings) as run:
            ledger = run.ledger

            def released(collection: str) -> Any:
                return lambda _jobs: alias_moved(ledger, alias, collection)

            def terminal(jobs: list[int]) -> None:
                wait_terminal(ledger, jobs)

            results: dict[str, Any] = {"first_crawl": measure(
                model, run, Crawl(first, alias, paths), released(first))}
            with ProbeLoop(run.settings, lambda: first, probes) as loop:
                time.sleep(len(probes) * 2 * QUERY_EVERY_S)
            results["first_crawl"]["queries"] = loop.figures()  # what the probes find at rest
            same = unique_name("same").replace("_", "-")
            results["blue_green_unchanged"] = measure(
                model, run, Crawl(same, alias, paths), released(same))
            revised = unique_name("revised").replace("_", "-")
            with ProbeLoop(run.settings, lambda: ledger.alias_collection(alias),
                           probes) as loop:
                results["blue_green_changed"] = measure(
                    model, run, Crawl(revised, alias, paths, changed), released(revised))
            results["blue_green_changed"]["queries"] = loop.figures()
            # In place: the first collection crawled again (its alias has moved on).
            results["in_place_unchanged"] = measure(
                model, run, Crawl(first, None, paths), terminal)
            with ProbeLoop(run.settings, lambda: first, probes) as loop:
                results["in_place_changed"] = measure(
                    model, run, Crawl(first, None, paths, changed), terminal)
            results["in_place_changed"]["queries"] = loop.figures()
    base = results["first_crawl"]
    for figures in results.values():
        figures["chat_calls_ratio"] = round(figures["chat_calls"] / base["chat_calls"], 4)
        figures["seconds_ratio"] = round(figures["seconds"] / base["seconds"], 3)
    rows = [[name, r["pages"], r["changed"], r["seconds"], r["seconds_ratio"], r["chat_calls"],
             r["chat_calls_ratio"], r.get("queries", {}).get("queries", "-"),
             r.get("queries", {}).get("probe_missed", "-"),
             r.get("queries", {}).get("empty_answers", "-")] for name, r in results.items()]
    print_table(f"Renewal at {args.latency_ms:.0f} ms ({args.pages} pages, {args.changed} "
                "changed)", ["crawl", "pages", "changed", "s", "s / first", "chat calls",
                             "calls / first", "queries", "probe missed", "empty"], rows)
    out = {"machine": machine(), "pages": args.pages, "changed": args.changed,
           "latency_ms": args.latency_ms, "probes": len(probes), "crawls": results}
    write_results(args.out, out)
    return out


if __name__ == "__main__":
    main()
