"""LightRAG's chunks, each headed by where it is in its page: `Page title > Section >
Subsection`.

LightRAG cuts a page into token windows; a window in the middle of a long page carries none
of the words that say what it is about (the page's title, its section's heading), so a
question that names them finds only the page's first chunk, or another page. The cleaned
text keeps the headings as `#` lines (`indexing/rendering.py`) and the page title is its
first heading (`indexing/page_text.py`); each chunk gets the headings above its start as a
first line. The windows themselves are LightRAG's own (`chunking_by_token_size`).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

HEADING = re.compile(r"^(#{1,6}) +(\S.*)$", re.M)
FENCE = re.compile(r"^```", re.M)
SEPARATOR = " > "
# Admonition titles (`<div class="note"><h3>Note</h3>`) are headings of a box, not of the
# text after it: they would name every chunk that follows.
ADMONITIONS = frozenset({"note", "tip", "warning", "caution", "important", "danger", "hint",
                         "attention", "see also"})


def heading_spans(content: str) -> list[tuple[int, int, str]]:
    """(offset, level, text) of each `#` heading outside fenced code blocks."""
    fences = [m.start() for m in FENCE.finditer(content)]
    out = []
    for m in HEADING.finditer(content):
        inside_code = sum(1 for f in fences if f < m.start()) % 2 == 1
        if not inside_code and m.group(2).strip().casefold() not in ADMONITIONS:
            out.append((m.start(), len(m.group(1)), m.group(2).strip()))
    return out


def path_at(headings: list[tuple[int, int, str]], start: int, chunk: str) -> list[str]:
    """The headings a chunk starting at `start` sits under (its own first heading excluded:
    the chunk shows it)."""
    stack: list[tuple[int, str]] = []
    for offset, level, text in headings:
        if offset >= start:
            break
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, text))
    opening = HEADING.match(chunk.lstrip())
    if opening:
        while stack and stack[-1][0] >= len(opening.group(1)):
            stack.pop()
    return [text for _level, text in stack]


def headed_chunks(tokenizer: Any, content: str, split_by_character: str | None,
                  split_by_character_only: bool, chunk_overlap_token_size: int,
                  chunk_token_size: int) -> list[dict[str, Any]]:
    from lightrag.chunker import chunking_by_token_size

    # `_emit_source_span`: where each window starts in `content` (LightRAG's own offsets;
    # tests/test_cleaning.py holds them to it).
    chunks = chunking_by_token_size(tokenizer, content, split_by_character,
                                    split_by_character_only, chunk_overlap_token_size,
                                    chunk_token_size, _emit_source_span=True)
    headings = heading_spans(content)
    for chunk in chunks:
        span = chunk.pop("_source_span", None)
        if not headings or span is None:
            continue
        path = path_at(headings, span["start"], chunk["content"])
        if path:
            header = SEPARATOR.join(path)
            chunk["content"] = f"{header}\n\n{chunk['content']}"
            chunk["tokens"] += len(tokenizer.encode(header)) + 1
    return chunks


async def headed_chunks_async(*args: Any) -> list[dict[str, Any]]:
    """LightRAG calls a custom chunker on its event loop: tokenizing a long page there would
    hold every other page of the run, so it runs in a thread."""
    return await asyncio.to_thread(headed_chunks, *args)
