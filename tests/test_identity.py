"""Document identity: URL normalisation, doc ids, file paths that never collide."""

from __future__ import annotations

import pytest

from rag_pipeline.identity import InvalidUrl, content_hash, doc_id, file_path, normalize_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTPS://Docs.Example.COM/Guide", "https://docs.example.com/Guide"),
        ("https://docs.example.com:443/a", "https://docs.example.com/a"),
        ("http://docs.example.com:80/a", "http://docs.example.com/a"),
        ("http://docs.example.com:8080/a", "http://docs.example.com:8080/a"),
        ("https://docs.example.com/a#section-2", "https://docs.example.com/a"),
        ("https://docs.example.com", "https://docs.example.com/"),
        ("https://user:secret@docs.example.com/a", "https://docs.example.com/a"),
        ("https://docs.example.com/a?b=1&a=2", "https://docs.example.com/a?b=1&a=2"),
        ("https://bücher.example/x", "https://xn--bcher-kva.example/x"),
    ],
)
def test_normalize_url(url, expected):
    assert normalize_url(url) == expected


@pytest.mark.parametrize("url", ["ftp://x.com/a", "javascript:alert(1)", "https://", "/relative",
                                 "https://x.com:99999/"])
def test_invalid_urls(url):
    with pytest.raises(InvalidUrl):
        normalize_url(url)


def test_same_page_same_id_other_collection_other_id():
    url = normalize_url("https://a.com/x#frag")
    assert doc_id("c1", url) == doc_id("c1", normalize_url("HTTPS://A.COM:443/x"))
    assert doc_id("c1", url) != doc_id("c2", url)


def test_doc_id_fits_lightrag_varchar_255_for_any_url():
    url = normalize_url("https://a.com/search?q=" + "x" * 10_000)
    assert len(doc_id("c", url)) <= 255


def test_colliding_basenames_get_distinct_single_segment_file_paths():
    a = file_path(normalize_url("https://a.com/x/index.html"))
    b = file_path(normalize_url("https://a.com/y/index.html"))
    assert a != b
    assert "/" not in a and "/" not in b
    assert a == "a.com|x|index.html"


@pytest.mark.parametrize(
    ("u1", "u2"),
    [("https://a.com/x|y", "https://a.com/x/y"),
     ("https://a.com/x/", "https://a.com/x"),
     ("https://a.com/[x]", "https://a.com/%5Bx%5D")],
)
def test_file_path_is_one_to_one(u1, u2):
    assert file_path(normalize_url(u1)) != file_path(normalize_url(u2))


def test_long_urls_get_bounded_unique_file_paths():
    base = "https://a.com/" + "p" * 500
    one, two = file_path(normalize_url(base + "1")), file_path(normalize_url(base + "2"))
    assert len(one) <= 240 and len(two) <= 240 and one != two


def test_lightrag_parser_hint_syntax_is_escaped():
    assert "[" not in file_path(normalize_url("https://a.com/name.[native].pdf"))


def test_content_hash_changes_with_content():
    assert content_hash("a") == content_hash("a") != content_hash("b")
