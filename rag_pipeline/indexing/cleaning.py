"""HTML -> text fit for RAG: the main content with its structure, without site boilerplate.

Two extractors, chosen per page:

- Pages that declare themselves articles (Open Graph `og:type=article`, schema.org
  Article/NewsArticle/BlogPosting, `article:published_time`, `itemprop=articleBody`) and
  hold no code block go to trafilatura, the best library at separating a story from the
  clutter around it (F1 0.96 on the article benchmark).
- Everything else - documentation, reference pages, anything with code - goes to our own
  structure-preserving extractor. On documentation trafilatura drops whole trailing
  sections and ~2% of code blocks; ours keeps them (docs/benchmarks.md has the figures).

Our extractor (one pass each, no recursion, so 10,000-deep nesting is fine):

1. parse with lxml (libxml2 recovers from broken HTML);
2. drop what is never content: scripts, styles, forms, navigation, headers and footers,
   sidebars, cookie banners, skip links, breadcrumbs, edit-this-page links, hidden elements
   (by tag, ARIA role, and class/id words);
3. pick the main content: a semantic container (`<main>`, `<article>`, `articleBody`, the
   usual content ids of documentation generators), else the smallest element holding 95%
   of the page's paragraph-like text;
4. drop link lists and other link-dense blocks inside it;
5. render: `#` headings, paragraphs, `- ` list items, fenced code blocks kept verbatim,
   tables as `a | b` rows; whitespace normalised.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Literal

import trafilatura
from lxml import etree

from rag_pipeline.indexing.rendering import (
    CODE_MARK,
    HEADINGS,
    SPACES,
    Renderer,
    normalise_whitespace,
)

# trafilatura logs every page it finds little in; our caller decides what is empty.
logging.getLogger("trafilatura").setLevel(logging.ERROR)


# Tags whose content is never page text.
DROP_TAGS = frozenset(
    """script style noscript template svg canvas iframe object embed button input select
    textarea label dialog nav aside menu map area audio video picture source track head link
    meta base""".split()
)
# Page furniture: dropped unless it holds the page's headings (an article's own <header>, an
# ASP.NET page wrapped in one <form>).
FURNITURE_TAGS = frozenset({"header", "footer", "form"})
DROP_ROLES = frozenset(
    """navigation banner contentinfo complementary search menu menubar toolbar dialog
    alertdialog tablist""".split()
)
# Class/id words that mark boilerplate. NEGATIVE_PARTS match any hyphen/underscore part of a
# class token or id ("site-footer"); NEGATIVE_TOKENS only whole tokens ("ads", not "ads-free").
NEGATIVE_PARTS = frozenset(
    """nav navbar navigation navheader navfooter navlinks menu menubar breadcrumb breadcrumbs
    crumbs sidebar sidenav toc footer masthead cookie cookies consent gdpr skiplink share
    sharing social socials related recommended recirculation comments comment disqus advert
    advertisement sponsor sponsored promo newsletter subscribe subscription pagination pager
    prevnext editlink feedback headerlink anchorlink permalink byline""".split()
)
NEGATIVE_TOKENS = frozenset(
    """header skip ad ads banner popup modal overlay edit hidden sr-only visually-hidden
    screen-reader-text noprint print-only tags taglist toolbar rating ratings edit-this-page
    edit-page""".split()
)
# A positive word wins over a negative one: "content-sidebar-wrap" is not a sidebar.
POSITIVE_PARTS = frozenset(
    """article content main body entry post story text prose markdown document documentation
    docs rst page""".split()
)
# Containers that generators of documentation and articles use for the main text, by
# priority: schema.org articleBody, <main>, role=main, <article>, then usual ids and classes.
MAIN_IDS = frozenset({"content", "main-content", "maincontent", "main", "article",
                      "docs-content", "page-content"})
MAIN_CLASSES = frozenset({"markdown-body", "rst-content", "md-content", "theme-doc-markdown",
                          "document", "post-content", "entry-content", "article-body",
                          "article-content"})
MAIN_LEVELS = 6
WORD_SPLIT = re.compile(r"[^a-z0-9]+")
MIN_MAIN_TEXT = 200  # chars: a semantic container with less is not the main content


@dataclass(frozen=True)
class CleanedPage:
    title: str
    text: str
    source: Literal["extracted", "html"]


class TooDeep(Exception):
    """libxml2 stops at 2048 levels of nesting and drops the rest of the document."""


def parse_html(html: str) -> etree._Element | None:
    if not html.strip():
        return None
    # Bytes with an explicit encoding: lxml refuses a str that starts with an XML declaration.
    # Plain etree elements: lxml.html's element classes cost a lookup per node visited.
    parser = etree.HTMLParser(remove_comments=True, remove_pis=True, recover=True,
                              huge_tree=True, encoding="utf-8")
    try:
        root = etree.fromstring(html.encode("utf-8", "replace"), parser=parser)
    except (etree.ParserError, ValueError):
        return None
    if any(e.type_name == "ERR_RESOURCE_LIMIT" for e in parser.error_log):
        raise TooDeep()
    return root


def _plain_text(html: str) -> str:
    """Text of a page lxml cannot hold (pathological nesting), via Python's own parser."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup.find_all(DROP_TAGS):
        tag.decompose()
    return normalise_whitespace(soup.get_text("\n"))


def _class_verdict(el: etree._Element) -> str | None:
    """'negative', 'header' or None, from the element's class and id words."""
    tokens = f"{el.get('class', '')} {el.get('id', '')}".lower().split()
    if not tokens:
        return None
    parts = {p for token in tokens for p in WORD_SPLIT.split(token) if p}
    if parts & POSITIVE_PARTS:
        return None
    if parts & NEGATIVE_PARTS or set(tokens) & NEGATIVE_TOKENS:
        return "header" if "header" in tokens and not parts & NEGATIVE_PARTS else "negative"
    if "header" in parts:
        return "header"
    return None


def _has_heading(el: etree._Element) -> bool:
    return any(True for _ in el.iter("h1", "h2", "h3"))


def _words_of_a_heading(el: etree._Element) -> bool:
    """A heading's own words, whatever their class says: Sphinx writes a section title as
    `<h2><a class="toc-backref">Title</a><a class="headerlink">¶</a></h2>`; the title stays,
    the pilcrow (no word) goes."""
    if not any(True for _ in el.iterancestors(*HEADINGS)):
        return False
    return any(ch.isalnum() for text in el.itertext() for ch in text)


def _is_boilerplate(el: etree._Element, page_text_len: int) -> bool:
    tag = el.tag
    if tag in DROP_TAGS:
        return True
    if el.get("hidden") is not None or el.get("aria-hidden") == "true":
        return True
    style = el.get("style")
    if style and re.search(r"display\s*:\s*none|visibility\s*:\s*hidden", style):
        return True
    if tag in FURNITURE_TAGS:
        return not _has_heading(el)
    role = el.get("role")
    verdict = "negative" if role in DROP_ROLES else _class_verdict(el)
    if verdict is None:
        return False
    if _words_of_a_heading(el):
        return False
    if verdict == "header":  # an article's own header keeps its title
        return not _has_heading(el)
    # A wrapper named after an ad slot or a banner but holding most of the page's text is the
    # page itself ("m-advertisement-off-canvas--pusher").
    return _text_len(el) < 0.5 * page_text_len


def drop_boilerplate(root: etree._Element) -> None:
    page_text_len = _text_len(root)
    doomed = [
        el for el in root.iter()
        if isinstance(el.tag, str) and el.tag not in ("html", "body")
        and _is_boilerplate(el, page_text_len)
    ]
    for el in doomed:
        if el.getparent() is not None:
            _drop_keep_tail(el)


def _drop_keep_tail(el: etree._Element) -> None:
    parent = el.getparent()
    if parent is None:
        return
    tail = el.tail
    if tail and tail.strip():
        prev = el.getprevious()
        if prev is not None:
            prev.tail = (prev.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(el)


def _text_len(el: etree._Element) -> int:
    return sum(len(t.strip()) for t in el.itertext())


def _link_text_len(el: etree._Element) -> int:
    return sum(len(t.strip()) for a in el.iter("a") for t in a.itertext())


def _main_candidates(root: etree._Element) -> list[list[etree._Element]]:
    """Semantic main-content containers, one list per priority level, in one pass."""
    levels: list[list[etree._Element]] = [[] for _ in range(MAIN_LEVELS)]
    for el in root.iter():
        tag = el.tag
        if not isinstance(tag, str):
            continue
        if el.get("itemprop") == "articleBody":
            levels[0].append(el)
        if tag == "main":
            levels[1].append(el)
        if el.get("role") == "main":
            levels[2].append(el)
        if tag == "article":
            levels[3].append(el)
        if el.get("id") in MAIN_IDS:
            levels[4].append(el)
        classes = el.get("class")
        if classes and MAIN_CLASSES.intersection(classes.split()):
            levels[5].append(el)
    return levels


def find_main(root: etree._Element) -> etree._Element:
    body = root.find("body")
    body = body if body is not None else root
    body_len = None
    for level in _main_candidates(root):
        found = [(n, el) for el in level if (n := _text_len(el)) >= MIN_MAIN_TEXT]
        if found:
            best_len, best = max(found, key=lambda pair: pair[0])
            body_len = _text_len(body) if body_len is None else body_len
            # A container holding only a sliver of the page is a teaser, not the page.
            if best_len >= 0.25 * body_len:
                return best
    return _densest_block(body)


def _content_score(el: etree._Element) -> float:
    """How much an element looks like a paragraph of content (0 for short or link text)."""
    content = "".join(el.itertext())
    length = len(content.strip())
    if length < 25:
        return 0.0
    links = sum(len("".join(a.itertext()).strip()) for a in el.iter("a"))
    if links / length > 0.5:
        return 0.0
    return 1 + min(length / 100, 3) + content.count(",")


def _densest_block(body: etree._Element) -> etree._Element:
    """The smallest element holding 95% of the page's paragraph-like content.

    Unlike Readability's parent/grandparent scoring, this keeps every section of a long
    documentation page (sections are siblings; their common parent holds them all).
    """
    totals: dict[etree._Element, float] = {}
    for block in body.iter("p", "pre", "td", "blockquote", "li", "dd"):
        score = _content_score(block)
        if not score:
            continue
        el = block
        for _ in range(200):  # bounded: pathological nesting must not cost O(depth^2)
            totals[el] = totals.get(el, 0.0) + score
            if el is body:
                break
            el = el.getparent()
            if el is None:
                break
    total = totals.get(body, 0.0)
    if not total:
        return body
    node = body
    while True:
        best = max((c for c in node if c in totals), key=totals.__getitem__, default=None)
        if best is None or totals[best] < 0.95 * total or best.tag in ("p", "pre", "li", "td"):
            return node
        node = best


def drop_link_lists(main: etree._Element) -> None:
    """Drop blocks that are mostly links: menus, 'related' lists, tag clouds."""
    doomed = []
    for el in main.iter("ul", "ol", "div", "section", "table", "p", "dl"):
        if el is main:
            continue
        text = _text_len(el)
        if not text:
            continue
        links = _link_text_len(el)
        if (links / text > 0.6 and text < 2000) or (el.tag in ("ul", "ol") and links / text > 0.9):
            doomed.append(el)
    for el in doomed:
        if el.getparent() is not None:
            _drop_keep_tail(el)


def page_title(root: etree._Element) -> str:
    for xpath in ("//meta[@property='og:title']/@content", "//title", "//h1"):
        found = root.xpath(xpath)
        if found:
            value = found[0] if isinstance(found[0], str) else " ".join(found[0].itertext())
            value = SPACES.sub(" ", value).strip()
            if value:
                return value[:500]
    return ""


ARTICLE_SCHEMA_TYPES = frozenset(
    {"article", "newsarticle", "blogposting", "reportagenewsarticle", "analysisnewsarticle",
     "opinionnewsarticle", "reviewnewsarticle", "liveblogposting"}
)


def declares_article(root: etree._Element) -> bool:
    """Whether the page's own metadata says it is an article (news story, blog post)."""
    og_type = root.xpath("string(//meta[@property='og:type']/@content)").strip().lower()
    if og_type == "article":
        return True
    if root.xpath("//meta[@property='article:published_time' or @name='article:published_time']"
                  " | //*[@itemprop='articleBody']"):
        return True
    for script in root.xpath("//script[@type='application/ld+json']"):
        for match in re.finditer(r'"@type"\s*:\s*(\[[^\]]*\]|"[^"]*")', script.text or ""):
            try:
                value = json.loads(match.group(1))
            except json.JSONDecodeError:
                continue
            types = value if isinstance(value, list) else [value]
            if any(str(t).lower() in ARTICLE_SCHEMA_TYPES for t in types):
                return True
    return False


def clean_html(html: str) -> CleanedPage:
    """The main content of an HTML page as structured text, and its title."""
    html = html.replace("\x00", "").replace(CODE_MARK, "")
    try:
        root = parse_html(html)
    except TooDeep:
        return CleanedPage(title="", text=_plain_text(html), source="html")
    if root is None:
        return CleanedPage(title="", text="", source="html")
    title = page_title(root)
    if declares_article(root) and not root.xpath("//pre"):
        story = trafilatura.extract(html, output_format="txt", include_tables=True,
                                    include_comments=False, fast=True)
        if story and story.strip():
            return CleanedPage(title=title, text=normalise_whitespace(story), source="html")
    text = _main_text(root, drop_links=True)
    if not text:
        # A page that is only a list of links (a chapter's table of contents) keeps them.
        text = _main_text(parse_html(html), drop_links=False)
    return CleanedPage(title=title, text=text, source="html")


def _main_text(root: etree._Element | None, drop_links: bool) -> str:
    if root is None:
        return ""
    drop_boilerplate(root)
    main = find_main(root)
    if drop_links:
        drop_link_lists(main)
    return Renderer().render(main)
