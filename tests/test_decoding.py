"""Decoding content.html: strict base64, bounded gzip, charsets."""

from __future__ import annotations

import base64
import gzip
import tracemalloc
import zlib

import pytest

from rag_pipeline.decoding import DecodeError, check_decodable, decode_html

MIB = 1024 * 1024


def gz_b64(data: bytes) -> str:
    return base64.b64encode(gzip.compress(data)).decode()


def test_round_trip_of_each_encoding():
    html = "<p>héllo</p>".encode()
    for encoding, payload in (("gzip+base64", gz_b64(html)),
                              ("base64", base64.b64encode(html).decode()),
                              ("identity", "<p>héllo</p>")):
        decoded = decode_html(payload, encoding, "text/html; charset=utf-8", MIB)
        assert decoded.html == "<p>héllo</p>"
        assert decoded.byte_size == len(html)


@pytest.mark.parametrize(
    ("payload", "encoding", "code"),
    [
        ("not base64!!", "gzip+base64", "bad_base64"),
        (gz_b64(b"<p>x</p>")[:-4] + " \n" + gz_b64(b"<p>x</p>")[-4:], "gzip+base64", "bad_base64"),
        (base64.b64encode(b"plain, not gzip").decode(), "gzip+base64", "bad_gzip"),
        (base64.b64encode(gzip.compress(b"<p>" * 1000)[:-20]).decode(), "gzip+base64", "bad_gzip"),
        (base64.b64encode(gzip.compress(b"<p>x</p>") + b"GARBAGE").decode(), "gzip+base64",
         "bad_gzip"),
        (base64.b64encode(b"\x1f\x8b\x08\x00broken-deflate-stream").decode(), "gzip+base64",
         "bad_gzip"),
        ("PHA+", "brotli", "unsupported_encoding"),
        ("x" * (MIB + 1), "identity", "too_large"),
    ],
    ids=["not-base64", "whitespace-in-base64", "not-gzip", "truncated-gzip", "trailing-garbage",
         "corrupt-deflate", "unsupported", "identity-too-large"],
)
def test_bad_payloads_are_refused_with_a_reason(payload, encoding, code):
    with pytest.raises(DecodeError) as err:
        decode_html(payload, encoding, "text/html", MIB)
    assert err.value.reason == code
    assert err.value.detail


def test_concatenated_gzip_members_are_valid_gzip():
    payload = base64.b64encode(gzip.compress(b"<p>one</p>") + gzip.compress(b"<p>two</p>"))
    assert decode_html(payload.decode(), "gzip+base64", "", MIB).html == "<p>one</p><p>two</p>"


@pytest.fixture(scope="module")
def gzip_bomb() -> str:
    """1 GiB of zeros, gzip-compressed (about 1 MB), built without holding 1 GiB."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(MIB)
    parts = [deflater.compress(block) for _ in range(1024)]
    parts.append(deflater.flush())
    return base64.b64encode(b"".join(parts)).decode()


@pytest.mark.parametrize("check_only", [True, False])
def test_gzip_bomb_is_refused_within_the_cap_in_bounded_memory(gzip_bomb, check_only):
    cap = 50 * MIB
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError) as err:
            if check_only:
                check_decodable(gzip_bomb, "gzip+base64", cap)
            else:
                decode_html(gzip_bomb, "gzip+base64", "text/html", cap)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.reason == "too_large"
    # Output is refused at cap + one slice: never the 1 GiB the bomb expands to.
    assert peak < (8 * MIB if check_only else cap + 16 * MIB)


def test_declared_charset_is_used():
    html = "<p>café</p>".encode("latin-1")
    decoded = decode_html(base64.b64encode(html).decode(), "base64",
                          "text/html; charset=ISO-8859-1", MIB)
    assert decoded.html == "<p>café</p>"


def test_meta_charset_is_detected():
    html = '<html><head><meta charset="windows-1252"></head><body>“quotes”</body></html>'
    raw = html.encode("cp1252")
    assert "“quotes”" in decode_html(base64.b64encode(raw).decode(), "base64", "", MIB).html


def test_invalid_bytes_and_nul_never_crash():
    raw = b"<p>ok \xff\xfe\xfa bytes \x00 nul</p>"
    decoded = decode_html(base64.b64encode(raw).decode(), "base64", "text/html; charset=utf-8",
                          MIB)
    assert "ok" in decoded.html and "\x00" not in decoded.html


def test_unknown_declared_charset_falls_back():
    raw = b"<p>plain</p>"
    decoded = decode_html(base64.b64encode(raw).decode(), "base64", "text/html; charset=klingon",
                          MIB)
    assert decoded.html == "<p>plain</p>"
