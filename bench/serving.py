"""The query service: latency against direct LightRAG, latency under an indexing backlog, the
queries one core answers, and retrieval quality against BeautifulSoup `get_text` pages.

    python -m bench.serving [--pages 40] [--clients 10] [--backlog 300]

One pipeline (code server + daemon, default settings) indexes `pages` postgresql-doc-15
pages under an alias; the same pages go directly into LightRAG, in a workspace of their own,
as `get_text` output (the baseline). `rag-pipeline api` serves the pipeline's collection.
1. Retrieval quality (stand-in at 0 ms): each section heading that names one page only,
   asked as a question, through the API (context only) and directly of the baseline, in
   every mode; recall@1 and recall@5 of the source page's URL among the references.
2. Queries per core: `clients` clients asking through the API at 0 ms; queries per
   CPU-second of the service's process, and its resident memory.
3. Latency at 300 ms: `clients` concurrent clients through the API against as many
   concurrent `aquery_llm` calls of direct LightRAG (same collection, same model budget).
4. Under load: one client's query latency at rest, then while `backlog` pages of another
   collection index.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import machine, print_table, write_results
from bench.footprint import resources, write_helm
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
from rag_pipeline.knowledge.workspaces import LightRAGOptions, WorkspacePool
from rag_pipeline.local.publishing import build_message, completion_message, message_for
from rag_pipeline.local.stack.deployment import free_port
from rag_pipeline.serving.queries import query_pool_options
from rag_pipeline.settings import Settings
from rag_pipeline.vocabulary import QueryMode

HOST = "serving.bench.test"
TOKEN = "bench-" + "t" * 26
NUMBERING = re.compile(r"^(chapter|part|appendix)?\s*[\dA-Z]*(\.\d+)*\.?\s+", re.I)
TOP_K = 10


def url(path: Path) -> str:
    return f"https://{HOST}/docs/{path.name}"


def headings(paths: list[Path]) -> list[tuple[str, str]]:
    """(question, url): each h1-h3 heading of two words or more that names one page only."""
    from lxml import html as lxml_html

    seen: dict[str, set[str]] = {}
    for path in paths:
        tree = lxml_html.fromstring(path.read_bytes())
        for h in tree.xpath("//h1|//h2|//h3"):
            text = " ".join(" ".join(h.itertext()).split())
            text = NUMBERING.sub("", text).strip()
            if len(text.split()) >= 2:
                seen.setdefault(text, set()).add(url(path))
    return [(f"{text}?", next(iter(urls))) for text, urls in sorted(seen.items())
            if len(urls) == 1]


def get_text(html: bytes) -> str:
    from bs4 import BeautifulSoup

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return " ".join(BeautifulSoup(html, "lxml").get_text("\n").split("\n"))


class ServiceSampler:
    """The service process's resident memory and CPU each second (its footprint)."""

    def __init__(self, process: psutil.Process) -> None:
        self.process, self.rss, self.cores = process, [0.0], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        last = self.process.cpu_times()
        while not self._stop.wait(1.0):
            try:
                now = self.process.cpu_times()
                self.rss.append(self.process.memory_info().rss / 2**20)
            except psutil.Error:
                return
            self.cores.append((now.user + now.system) - (last.user + last.system))
            last = now

    def figure(self) -> dict[str, float]:
        self._stop.set()
        cores = sorted(self.cores) or [0.0]
        return {"peak_rss_mib": round(max(self.rss), 1),
                "mean_cores": round(sum(cores) / len(cores), 3),
                "p95_cores": round(cores[min(len(cores) - 1, int(len(cores) * 0.95))], 3),
                "samples": len(self.cores)}


@contextmanager
def api(settings: Settings, changed: dict[str, str]) -> Any:
    """`rag-pipeline api` on the pipeline's database; (base URL, its psutil.Process)."""
    port = free_port()
    env = {**os.environ, "POSTGRES_DB": settings.postgres_db, "API_PORT": str(port),
           "API_TOKENS": TOKEN, "EMBEDDING_DIM": str(settings.embedding_dim), **changed}
    log = (RESULTS / "tmp" / f"api-{port}.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen([str(Path(sys.executable).parent / "rag-pipeline"), "api"],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the query service did not start; see {log}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield base, psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(30)


def ask_api(base: str, collection: str, question: str, mode: str, context_only: bool
            ) -> tuple[float, list[str]]:
    started = time.monotonic()
    reply = httpx.post(f"{base}/v1/query", timeout=300, headers={
        "Authorization": f"Bearer {TOKEN}"}, json={
        "collection": collection, "question": question, "mode": mode, "top_k": TOP_K,
        "context_only": context_only})
    reply.raise_for_status()
    return time.monotonic() - started, [r["url"] for r in reply.json()["references"]]


def pages_of(chunks: list[dict[str, Any]], urls_by_path: dict[str, str]) -> list[str]:
    ranked: list[str] = []
    for chunk in chunks:
        page = urls_by_path.get(str(chunk.get("file_path")), "")
        if page not in ranked:
            ranked.append(page)
    return ranked


def recall(ranked: list[list[str]], truth: list[str], k: int) -> float:
    return round(sum(t in r[:k] for r, t in zip(ranked, truth, strict=True)) / len(truth), 3)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--backlog", type=int, default=300)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    args = parser.parse_args(argv)
    from lightrag import QueryParam

    with bench_stack() as settings:
        model = Model(settings)
        model.set()
        with pipeline(settings) as run:
            s = run.settings
            paths = corpus(args.pages, offset=600)
            alias, collection = unique_name("docs").replace("_", "-"), unique_name("served")
            base_id = job_id_base()
            send(s, [message_for(build_message(
                job_id=base_id + i, collection_id=collection, alias=alias, url=url(p),
                html=p.read_bytes(), request_id=base_id // 1000)) for i, p in enumerate(paths)]
                + [message_for(completion_message(collection_id=collection, alias=alias,
                                                  request_id=base_id // 1000,
                                                  pages=len(paths)))])
            index_seconds = wait_terminal(run.ledger, [base_id + i for i in range(len(paths))])
            while run.ledger.alias_collection(alias) != collection:
                time.sleep(0.5)
            print(f"pipeline indexed {len(paths)} pages in {index_seconds:.1f} s")

            # The baseline: the same pages as get_text, straight into LightRAG with its own
            # chunking (a pool of its own, closed before the next: LightRAG has one
            # PostgreSQL pool per process).
            baseline = unique_name("baseline")
            urls_by_path = {file_path(normalize_url(url(p))): url(p) for p in paths}
            plain = WorkspacePool(replace(LightRAGOptions.from_settings(s, shared_slots=False),
                                          headed_chunks=False))

            async def insert() -> None:
                rag = await plain.workspace(baseline)
                await rag.ainsert([get_text(p.read_bytes()) for p in paths],
                                  ids=[f"base-{i}" for i in range(len(paths))],
                                  file_paths=[file_path(normalize_url(url(p))) for p in paths])

            try:
                plain.run(insert(), timeout=1800)
            finally:
                plain.close()
            pool = WorkspacePool(query_pool_options(s))

            async def direct(question: str, mode: str, workspace: str, answer: bool
                             ) -> tuple[float, list[str]]:
                started = time.monotonic()
                rag = await pool.workspace(workspace)
                param = QueryParam(mode=mode, top_k=TOP_K, chunk_top_k=TOP_K,
                                   enable_rerank=False)
                result = await (rag.aquery_llm(question, param=param) if answer
                                else rag.aquery_data(question, param=param))
                chunks = (result.get("data") or {}).get("chunks") or []
                return time.monotonic() - started, pages_of(chunks, urls_by_path)

            questions = headings(paths)
            truth = [u for _q, u in questions]
            results: dict[str, Any] = {
                "machine": machine(), "pages": len(paths), "questions": len(questions),
                "clients": args.clients, "backlog": args.backlog,
                "latency_ms": args.latency_ms, "top_k": TOP_K,
                "index_seconds": round(index_seconds, 1)}
            # Every client admitted at once (the default, 8, would refuse the ninth of 10).
            changed = {"QUERY_MAX_CONCURRENCY": str(max(args.clients,
                                                        s.query_max_concurrency))}
            results["settings_differing_from_defaults"] = changed
            try:
                with api(s, changed) as (base, service):
                    sampler = ServiceSampler(service)
                    results["recall"] = recall_phase(base, collection, baseline, questions,
                                                     truth, pool, direct)
                    results["throughput"] = throughput_phase(base, collection, questions,
                                                             args.clients, service)
                    model.set(latency_ms=args.latency_ms)
                    results["latency"] = latency_phase(base, collection, questions,
                                                       args.clients, pool, direct)
                    results["under_load"] = load_phase(base, collection, questions, run,
                                                       args.backlog)
                    results["footprint"] = sampler.figure()
            finally:
                model.set()
                pool.close()
    write_results(RESULTS / "serving.json", results)
    m = results["machine"]
    write_helm({"api": resources(results["footprint"])},
               f"python -m bench.serving, commit {m['commit'][:12]}"
               f"{' (dirty)' if m['dirty'] else ''}, {results['pages']} pages, "
               f"{args.clients} clients, {args.latency_ms:.0f} ms model latency")
    report(results)
    return results


def recall_phase(base, collection, baseline, questions, truth, pool, direct) -> dict:
    out = {}
    for mode in QueryMode:
        ours = [ask_api(base, collection, q, mode.value, True)[1] for q, _u in questions]
        theirs = [pool.run(direct(q, mode.value, baseline, False), timeout=300)[1]
                  for q, _u in questions]
        out[mode.value] = {
            "pipeline": {"recall@1": recall(ours, truth, 1), "recall@5": recall(ours, truth, 5)},
            "get_text": {"recall@1": recall(theirs, truth, 1),
                         "recall@5": recall(theirs, truth, 5)},
            "pipeline_misses@5": [q for (q, u), r in zip(questions, ours, strict=True)
                                  if u not in r[:5]][:20]}
        print(mode.value, out[mode.value]["pipeline"], out[mode.value]["get_text"])
    return out


def throughput_phase(base, collection, questions, clients, service) -> dict:
    asked = [q for q, _u in questions] * 3
    cpu = service.cpu_times()
    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda q: ask_api(base, collection, q, "mix", False), asked))
    seconds = time.monotonic() - started
    after = service.cpu_times()
    cpu_seconds = (after.user + after.system) - (cpu.user + cpu.system)
    return {"queries": len(asked), "mode": "mix", "seconds": round(seconds, 1),
            "queries_per_second": round(len(asked) / seconds, 2),
            "service_cpu_seconds": round(cpu_seconds, 1),
            "queries_per_cpu_second": round(len(asked) / cpu_seconds, 2),
            "service_rss_mib": round(service.memory_info().rss / 2**20)}


def latency_phase(base, collection, questions, clients, pool, direct) -> dict:
    asked = [q for q, _u in questions][: clients * 5]
    with ThreadPoolExecutor(clients) as threads:
        through_api = [t for t, _r in threads.map(
            lambda q: ask_api(base, collection, q, "mix", False), asked)]

    async def all_direct() -> list[float]:
        gate = asyncio.Semaphore(clients)

        async def one(q: str) -> float:
            async with gate:
                return (await direct(q, "mix", collection, True))[0]

        return list(await asyncio.gather(*(one(q) for q in asked)))

    direct_times = pool.run(all_direct(), timeout=1800)
    out = {"queries": len(asked), "mode": "mix",
           "api": {"p50": percentile(through_api, 0.5), "p95": percentile(through_api, 0.95)},
           "direct": {"p50": percentile(direct_times, 0.5),
                      "p95": percentile(direct_times, 0.95)}}
    out["p50_ratio"] = round(out["api"]["p50"] / out["direct"]["p50"], 3)
    return out


def load_phase(base, collection, questions, run, backlog) -> dict:
    asked = [q for q, _u in questions]
    idle = [ask_api(base, collection, q, "mix", False)[0] for q in asked[:20]]
    other = unique_name("backlog")
    first = job_id_base()
    paths = corpus(backlog, offset=0)
    send(run.settings, [message_for(build_message(
        job_id=first + i, collection_id=other, url=f"https://backlog.bench.test/{p.name}",
        html=p.read_bytes(), request_id=first // 1000)) for i, p in enumerate(paths)])
    jobs = [first + i for i in range(len(paths))]
    busy: list[float] = []
    n = 0
    while run.ledger.job_states(other).get("completed", 0) < len(paths) * 0.8 and n < 400:
        busy.append(ask_api(base, collection, asked[n % len(asked)], "mix", False)[0])
        n += 1
    wait_terminal(run.ledger, jobs)
    out = {"idle_p50": round(statistics.median(idle), 3), "idle_queries": len(idle),
           "busy_p50": round(statistics.median(busy), 3), "busy_queries": len(busy)}
    out["ratio"] = round(out["busy_p50"] / out["idle_p50"], 3)
    return out


def report(results: dict[str, Any]) -> None:
    rows = [[mode, r["pipeline"]["recall@1"], r["get_text"]["recall@1"],
             r["pipeline"]["recall@5"], r["get_text"]["recall@5"]]
            for mode, r in results["recall"].items()]
    print_table("retrieval", ["mode", "pipeline r@1", "get_text r@1", "pipeline r@5",
                              "get_text r@5"], rows)
    print(results["throughput"], results["latency"], results["under_load"])


if __name__ == "__main__":
    main()
