"""Cleaning HTML into text for RAG: content and structure kept, boilerplate gone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rag_pipeline.indexing.cleaning import clean_html
from rag_pipeline.indexing.page_text import page_text

SAMPLES = Path(__file__).parent / "samples"
# The demo's real pages; the ones the tests need besides them are in tests/samples.
DEMO_SAMPLES = Path(__file__).parent.parent / "rag_pipeline" / "local" / "samples"


def sample(name: str) -> str:
    path = SAMPLES / name if (SAMPLES / name).exists() else DEMO_SAMPLES / name
    return path.read_text(encoding="utf-8")


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_docs_page_keeps_content_and_structure():
    page = clean_html(sample("docs_page_with_boilerplate.html"))
    text = page.text
    assert page.title == "Getting Started | Example Docs"
    assert text.startswith("# Getting Started with Widgetizer")
    assert "## Install" in text and "## Configure" in text
    assert "```\npip install widgetizer==2.1\nwidgetizer --version\n```" in text
    assert "- Create widgets.toml in your project." in text
    assert "workers | 4 | threads serving widgets" in text


@pytest.mark.parametrize(
    "boilerplate",
    ["Skip to content", "cookies", "API reference", "Configuration", "Home / Guides",
     "Edit this page", "Privacy", "newsletter", "window.analytics", "font-family"],
)
def test_docs_page_drops_boilerplate(boilerplate):
    assert boilerplate not in clean_html(sample("docs_page_with_boilerplate.html")).text


def test_real_postgres_page_keeps_every_section_and_code_block():
    html = sample("ddl-alter.html")
    text = clean_html(html).text
    # The last sections are what trafilatura drops; they must be here.
    assert "### 5.6.7. Renaming a Column" in text
    assert "ALTER TABLE products RENAME COLUMN product_no TO product_number;" in text
    assert "### 5.6.8. Renaming a Table" in text
    pres = re.findall(r"<pre[^>]*>(.*?)</pre>", html, flags=re.S)
    assert pres
    for pre in pres:
        assert squash(re.sub(r"<[^>]+>", "", pre).replace("&gt;", ">").replace("&lt;", "<")
                      .replace("&amp;", "&")) in squash(text)
    # Navigation header and footer of the DocBook page are gone.
    assert "Prev" not in text and "Next" not in text and "Home" not in text


def test_real_reference_page_keeps_synopsis_and_examples():
    text = clean_html(sample("sql-createtable.html")).text
    assert "## Synopsis" in text and "## Examples" in text and "## Compatibility" in text
    assert "CREATE TABLE films (" in text


def test_whitespace_is_normalised():
    text = clean_html(sample("tutorial-join.html")).text
    assert "\n\n\n" not in text
    assert not any(line != line.strip() for line in text.splitlines() if not line.startswith(" "))


def test_article_page_uses_article_extraction():
    story = " ".join(f"Sentence number {i} of the story about the harbour." for i in range(40))
    html = f"""<html><head><meta property="og:type" content="article">
    <title>Harbour</title></head><body><div class="menu"><a href="/">Home</a></div>
    <article><h1>Harbour reopens</h1><p>{story}</p></article>
    <div class="related"><a href="/x">Other story one</a> <a href="/y">Other story two</a></div>
    </body></html>"""
    text = clean_html(html).text
    assert "Sentence number 39 of the story" in text
    assert "Other story" not in text


@pytest.mark.timeout(60)  # run-away time fails the test; no timing assertion
@pytest.mark.parametrize("depth", [5_000, 10_000])
def test_deep_nesting_does_not_crash_or_lose_text(depth):
    html = "<html><body>" + "<div>" * depth + "<p>deep text here</p>" + "</div>" * depth
    html += "<script>var x = 1;</script><p>" + "after the nesting, " * 20 + "</p></body></html>"
    page = clean_html(html)
    assert "deep text here" in page.text
    assert "after the nesting" in page.text
    assert "var x" not in page.text


@pytest.mark.parametrize("html", ["", "   ", "<html></html>", "\x00\x00", "<<<>>>",
                                  "<script>only()</script>"])
def test_degenerate_html_gives_empty_text(html):
    assert clean_html(html).text.strip("<> ") == ""


def test_prefer_extracted_text_uses_crawler_text():
    page = page_text("  Crawler   text\n\n\n\nsecond  ", "T", "<p>html text</p>",
                     "prefer_extracted")
    assert (page.text, page.title, page.source) == ("# T\n\nCrawler text\n\nsecond", "T",
                                                    "extracted")


SPHINX_FAQ = """<html><head><title>Programming FAQ — Python 3 documentation</title></head><body>
<div class="body" role="main"><section id="programming-faq">
<h1>Programming FAQ<a class="headerlink" href="#programming-faq">¶</a></h1>
<section id="how-do-i-run-a-program"><h2><a class="toc-backref" href="#id2">How do I run a
program?</a><a class="headerlink" href="#x">¶</a></h2>
<p>""" + "Run it with the interpreter and pass the script's path as its argument. " * 6 + """</p>
</section></section></div></body></html>"""


def test_a_heading_whose_text_is_a_link_keeps_its_text_and_drops_its_pilcrow():
    text = clean_html(SPHINX_FAQ).text
    assert "## How do I run a program?" in text
    assert "# Programming FAQ" in text
    assert "¶" not in text


def test_the_page_title_heads_the_indexed_text_unless_the_text_opens_with_it():
    page = page_text("", "Joins Between Tables", SPHINX_FAQ, "reextract")
    assert page.text.startswith("# Joins Between Tables\n\n# Programming FAQ")
    # The crawler's title holds the first heading: not repeated.
    page = page_text("", "Programming FAQ — Python 3 documentation", SPHINX_FAQ, "reextract")
    assert page.text.startswith("# Programming FAQ\n\n## How do I run")


def test_reextract_ignores_crawler_text():
    html = "<html><body><main><p>" + "html text " * 30 + "</p></main></body></html>"
    page = page_text("crawler text", "", html, "reextract")
    assert page.source == "html" and page.text.startswith("html text")


def test_empty_crawler_text_falls_back_to_html():
    html = "<html><body><p>" + "words from the page " * 10 + "</p></body></html>"
    page = page_text("", "", html, "prefer_extracted")
    assert page.source == "html" and "words from the page" in page.text


def test_a_table_of_contents_page_keeps_its_links_rather_than_nothing():
    html = sample("tutorial-sql.html")
    text = clean_html(html).text
    assert text.startswith("## Chapter 2. The SQL Language")
    assert "2.6. Joins Between Tables" in text


def test_every_chunk_is_headed_by_the_title_and_sections_above_where_it_starts():
    from rag_pipeline.knowledge.chunking import headed_chunks
    from rag_pipeline.knowledge.workspaces import offline_tokenizer

    body = "Words about cursors and how they move through rows. " * 40
    text = (f"# Cursors\n\n{body}\n\n## Declaring Cursors\n\n{body}\n\n### Note\n\nA box.\n\n"
            f"### Opening Cursors\n\n{body}\n\n```\n# a shell comment, not a heading\n"
            f"{body}\n```\n\n{body}")
    chunks = headed_chunks(offline_tokenizer(), text, None, False, 20, 200)
    assert len(chunks) > 5
    assert chunks[0]["content"].startswith("# Cursors")  # the first chunk shows its title
    later = [c["content"].split("\n\n", 1)[0] for c in chunks[1:]]
    assert later[0] == "Cursors"
    assert "Cursors > Declaring Cursors" in later
    # The admonition's title and the code block's comment are no sections.
    assert later[-1] == "Cursors > Declaring Cursors > Opening Cursors"
    assert not any("Note" in h or "shell comment" in h for h in later)
    # The windows are LightRAG's own: without its header each chunk is a piece of the text.
    for chunk in chunks[1:]:
        assert chunk["content"].split("\n\n", 1)[1][:50] in text
