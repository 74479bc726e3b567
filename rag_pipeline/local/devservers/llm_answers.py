"""What the stand-in model answers (`local/devservers/llm.py` serves it): entities and
relations in LightRAG's delimiter format from the capitalised terms of a text, short answers
built from the prompt, and feature-hashed bag-of-words embeddings. Deterministic: the same
input always gets the same answer."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from itertools import pairwise

import numpy as np

TUPLE = "<|#|>"
COMPLETE = "<|COMPLETE|>"
MAX_ENTITIES = 6
CAPITALISED = re.compile(r"\b[A-Z][A-Za-z0-9_]{2,}(?:[ -][A-Z][A-Za-z0-9_]{2,}){0,2}\b")
WORD = re.compile(r"\w+")
STOPWORDS = frozenset(
    """The This That These Those There Then When Where What Which While With Without For From
    Into Onto Also And But Not Note See Use Using Each Every Some Any All Its Their Our You
    Your Here However Otherwise Example Examples Returns Default Chapter Section Table""".split()
)


# Real embedding spaces are anisotropic: unrelated texts still have cosine similarity
# ~0.2-0.4. A shared component gives the stand-in the same range, so LightRAG's default
# cosine threshold (0.2) behaves as it does with a real model.
SHARED_COMPONENT = 0.7


def hashed_embeddings(texts: list[str], dim: int) -> np.ndarray:
    """Feature hashing of lower-cased words and word pairs, plus a shared component."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        words = [w.lower() for w in WORD.findall(text)]
        features = words + [a + " " + b for a, b in pairwise(words)]
        for feature in features or ["<empty>"]:
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            value = int.from_bytes(digest, "little")
            out[row, value % dim] += 1.0 if (value >> 40) & 1 else -1.0
        norm = float(np.linalg.norm(out[row]))
        out[row] = out[row] / norm if norm else 1.0 / np.sqrt(dim)
    out[:, 0] += SHARED_COMPONENT
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _section(text: str, start: str, end: str | None = None) -> str:
    i = text.find(start)
    if i < 0:
        return ""
    rest = text[i + len(start):]
    if end:
        j = rest.find(end)
        if j >= 0:
            rest = rest[:j]
    return rest


def _sentence_with(text: str, term: str) -> str:
    i = text.find(term)
    start = max(text.rfind(".", 0, i) + 1, text.rfind("\n", 0, i) + 1, 0)
    stop = text.find(".", i + len(term))
    sentence = text[start:stop if stop > 0 else len(text)].strip()
    return re.sub(r"\s+", " ", sentence)[:240] or term


def extract_entities(text: str) -> str:
    counts: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    for match in CAPITALISED.finditer(text):
        term = match.group(0).strip()
        if term.split()[0] in STOPWORDS:
            continue
        counts[term] += 1
        first_seen.setdefault(term, match.start())
    chosen = sorted(counts, key=lambda t: (-counts[t], first_seen[t]))[:MAX_ENTITIES]
    lines = []
    for term in chosen:
        kind = "Method" if term.isupper() else "Concept"
        desc = _sentence_with(text, term).replace(TUPLE, " ")
        lines.append(f"entity{TUPLE}{term}{TUPLE}{kind}{TUPLE}{term} is described as: {desc}")
    for a, b in pairwise(chosen):
        lines.append(f"relation{TUPLE}{a}{TUPLE}{b}{TUPLE}co-occurrence{TUPLE}"
                     f"{a} and {b} appear in the same text.")
    lines.append(COMPLETE)
    return "\n".join(lines)


def _description(json_line: str) -> str:
    try:
        value = json.loads(json_line)
    except json.JSONDecodeError:
        return json_line
    return str(value.get("description", "")) if isinstance(value, dict) else str(value)


INPUT_FENCE = "---Input Text---\n```"


def extraction_input(user: str) -> str:
    """The chunk an extraction prompt asks about: LightRAG fences it with ``` under Input
    Text, before ---Output---. The chunk may hold fences of its own (code blocks), so the
    input ends at the last fence, not the first."""
    start = user.find(INPUT_FENCE)
    if start < 0:
        return user
    text = user[start + len(INPUT_FENCE):]
    end = text.rfind("---Output---")
    text = (text if end < 0 else text[:end]).rstrip()
    return text.removesuffix("```")


def extraction_key(text: str) -> str:
    """How the stand-in and the fault accounting name one chunk's text."""
    return hashlib.sha1(text.strip().encode()).hexdigest()


def respond(system: str, user: str) -> tuple[str, str]:
    """Classify a chat request by LightRAG's prompt and answer it deterministically."""
    if "Knowledge Graph Specialist responsible for extracting" in system:
        if "Based on the last extraction task" in user:
            return "glean", COMPLETE
        return "extract", extract_entities(extraction_input(user))
    if "synthesize a list of descriptions" in (system + user):
        descriptions = _section(system + user, "Description List:", "---Output---")
        parts = [_description(line) for line in re.findall(r"^\{.*\}$", descriptions, re.M)]
        summary = " ".join(p for p in parts if p)[:600] or "Summary of the descriptions."
        return "summary", summary
    if "high_level_keywords" in (system + user):
        query = _section(system + user, "User Query:", "\n").strip()
        words = [w for w in WORD.findall(query) if len(w) > 3]
        return "keywords", json.dumps({"high_level_keywords": words[:2],
                                       "low_level_keywords": words[:6]})
    context = _section(system + user, "---Context---")
    snippet = re.sub(r"\s+", " ", context).strip()[:700]
    return "answer", ("[stand-in model: this is not a real LLM answer] Retrieved context: "
                      + (snippet or "(none)"))
