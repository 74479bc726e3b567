"""Cost per page: LLM calls, prompt and completion tokens, embedding tokens per page, with
the crawler's pre-extracted text against our re-extraction, on the same pages.

    python -m bench.cost [--pages 60]

The crawler's `content.text` is stood in for by BeautifulSoup's get_text() (what a crawler
extracting the body text naively sends). Both texts are inserted into fresh workspaces by
LightRAG directly (no orchestration in the way); the stand-in model counts the tokens with
cl100k, as OpenAI's API would.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

from bench.cleaning import get_text
from bench.common import machine, print_table, write_results
from bench.harness import RESULTS, Model, bench_stack, corpus, unique_name
from rag_pipeline.identity import doc_id, file_path, normalize_url
from rag_pipeline.indexing.cleaning import clean_html
from rag_pipeline.knowledge.workspaces import LightRAGOptions, WorkspacePool
from rag_pipeline.settings import Settings


def insert(settings: Settings, model: Model, texts: list[tuple[str, str]]) -> dict[str, Any]:
    pool = WorkspacePool(LightRAGOptions.from_settings(settings, shared_slots=False))
    workspace = unique_name("cost")

    async def run() -> None:
        rag = await pool.workspace(workspace)
        await rag.ainsert([t for _, t in texts], ids=[doc_id(workspace, u) for u, _ in texts],
                          file_paths=[file_path(u) for u, _ in texts])

    model.reset()
    started = time.monotonic()
    try:
        pool.run(run(), timeout=3600)
    finally:
        pool.close()
    stats = model.stats()
    n = len(texts)
    return {"pages": n, "seconds": round(time.monotonic() - started, 1),
            "llm_calls_per_page": round(stats["chat_calls"] / n, 2),
            "prompt_tokens_per_page": round(stats["prompt_tokens"] / n),
            "completion_tokens_per_page": round(stats["completion_tokens"] / n),
            "embedding_tokens_per_page": round(stats["embedding_tokens"] / n),
            "text_chars_per_page": round(sum(len(t) for _, t in texts) / n)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=60)
    parser.add_argument("--out", type=Path, default=RESULTS / "cost.json")
    args = parser.parse_args(argv)
    files = corpus(args.pages, offset=600)
    pages = [(normalize_url(f"https://cost.bench.test/{p.name}"),
              p.read_text(errors="replace")) for p in files]
    naive = [(u, re.sub(r"\n\s*\n+", "\n\n", get_text(h)).strip()) for u, h in pages]
    cleaned = [(u, clean_html(h).text) for u, h in pages]
    with bench_stack() as settings:
        model = Model(settings)
        model.set(latency_ms=0)
        results = {"machine": machine(),
                   "pre_extracted_get_text": insert(settings, model, naive),
                   "re_extracted": insert(settings, model, cleaned)}
    rows = [[name, r["llm_calls_per_page"], r["prompt_tokens_per_page"],
             r["completion_tokens_per_page"], r["embedding_tokens_per_page"],
             r["text_chars_per_page"]] for name, r in results.items() if name != "machine"]
    print_table(f"Cost per page ({args.pages} postgresql-doc-15 pages)",
                ["text", "LLM calls", "prompt tokens", "completion tokens",
                 "embedding tokens", "chars"], rows)
    write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
