"""What is indexed of a page: the crawler's pre-extracted text or our re-extraction of its
HTML (TEXT_SOURCE), headed by the page's title."""

from __future__ import annotations

from rag_pipeline.indexing.cleaning import CODE_MARK, CleanedPage, clean_html
from rag_pipeline.indexing.rendering import SPACES, normalise_whitespace
from rag_pipeline.vocabulary import TextSource


def normalise_text(text: str) -> str:
    """Whitespace normalisation for pre-extracted text (keeps paragraph breaks)."""
    return normalise_whitespace(text.replace("\x00", "").replace(CODE_MARK, ""))


def page_text(extracted_text: str, extracted_title: str, html: str | None,
              text_source: TextSource) -> CleanedPage:
    """The text to index: the crawler's pre-extracted text, or a re-extraction from HTML,
    headed by the page's title."""
    if text_source == TextSource.PREFER_EXTRACTED and extracted_text.strip():
        title = SPACES.sub(" ", extracted_title).strip()
        return CleanedPage(title=title, text=titled(title, normalise_text(extracted_text)),
                           source="extracted")
    cleaned = clean_html(html or "")
    title = SPACES.sub(" ", extracted_title).strip() or cleaned.title
    if not cleaned.text and extracted_text.strip():
        return CleanedPage(title=title, text=titled(title, normalise_text(extracted_text)),
                           source="extracted")
    return CleanedPage(title=title, text=titled(title, cleaned.text), source="html")


def titled(title: str, text: str) -> str:
    """The page's title as its first heading, unless the text already opens with it: a
    question that names the page finds its chunks, and the first chunk says what page it
    is from (LightRAG keeps no title of its own)."""
    if not title or not text:
        return text
    first = text.split("\n", 1)[0].lstrip("#").strip().casefold()
    if first and first in title.casefold():
        return text
    return f"# {title}\n\n{text}"
