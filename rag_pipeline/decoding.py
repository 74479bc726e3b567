"""Decoding a page's `content.html`: strict base64, bounded gzip, charset detection.

Every failure is a `DecodeError` carrying a stable reason code (`bad_base64`, `bad_gzip`,
`too_large`, `unsupported_encoding`) and a sentence for people.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from dataclasses import dataclass

from bs4.dammit import UnicodeDammit

from rag_pipeline.vocabulary import Reason

ENCODINGS = ("gzip+base64", "base64", "identity")
GZIP_MAGIC = b"\x1f\x8b"
# Decompress in slices of this size, so a bomb is refused after at most cap + one slice.
SLICE = 256 * 1024
CHARSET_PARAM = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", re.I)


class DecodeError(Exception):
    """A payload that cannot be decoded: its reason code and what was wrong (`detail`)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedHtml:
    html: str
    byte_size: int
    charset: str


def gunzip(data: bytes, max_bytes: int, keep: bool = True) -> tuple[bytes, int]:
    """Decompress gzip (one or more members) refusing more than `max_bytes` of output.

    With `keep=False` only the size is computed (nothing accumulates): the sensor uses that
    to check a page without holding its HTML.
    """
    out = bytearray()
    total = 0
    remaining = data
    while True:
        inflater = zlib.decompressobj(wbits=31)  # gzip container only
        try:
            while remaining:
                chunk = inflater.decompress(remaining, SLICE)
                total += len(chunk)
                if total > max_bytes:
                    raise DecodeError(
                        Reason.TOO_LARGE,
                        f"content.html expands beyond the {max_bytes} byte limit "
                        "(MAX_PAYLOAD_BYTES); a page this large is refused",
                    )
                if keep:
                    out += chunk
                remaining = inflater.unconsumed_tail
                if inflater.eof:
                    break
            if not inflater.eof:
                # Input ran out mid-stream: flush what remains and check it ended properly.
                tail = inflater.flush()
                total += len(tail)
                if keep:
                    out += tail
                if not inflater.eof:
                    raise DecodeError(Reason.BAD_GZIP, "content.html is truncated gzip data")
        except zlib.error as exc:
            raise DecodeError(Reason.BAD_GZIP,
                              f"content.html is not valid gzip data ({exc})") from None
        rest = inflater.unused_data
        if not rest:
            return bytes(out), total
        if not rest.startswith(GZIP_MAGIC):
            raise DecodeError(Reason.BAD_GZIP, f"content.html has {len(rest)} bytes of garbage "
                              "after the gzip data")
        remaining = rest  # another gzip member (concatenated gzip is valid gzip)


def strict_b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(
            Reason.BAD_BASE64, f"content.html is not valid base64 ({exc})"
        ) from None


def decode_bytes(html: str, encoding: str, max_bytes: int, keep: bool = True) -> tuple[bytes, int]:
    """`content.html` as the raw bytes of the page (and their length)."""
    encoding = encoding.strip().lower()
    if encoding == "identity":
        raw = html.encode("utf-8", "surrogatepass")
    elif encoding == "base64":
        raw = strict_b64decode(html)
    elif encoding == "gzip+base64":
        compressed = strict_b64decode(html)
        if not compressed.startswith(GZIP_MAGIC):
            raise DecodeError(Reason.BAD_GZIP, "content.html is base64 but not gzip data")
        return gunzip(compressed, max_bytes, keep=keep)
    else:
        raise DecodeError(
            Reason.UNSUPPORTED_ENCODING,
            f"content.encoding {encoding!r} is not supported; use one of {', '.join(ENCODINGS)}",
        )
    if len(raw) > max_bytes:
        raise DecodeError(
            Reason.TOO_LARGE, f"content.html is {len(raw)} bytes, above the {max_bytes} byte limit"
        )
    return (raw if keep else b""), len(raw)


def declared_charset(content_type: str) -> str | None:
    match = CHARSET_PARAM.search(content_type or "")
    return match.group(1).lower() if match else None


def bytes_to_text(raw: bytes, content_type: str = "") -> tuple[str, str]:
    """Decode page bytes by BOM, declared charset, <meta charset>, then detection.

    Never raises: undecodable bytes become U+FFFD. NUL characters are dropped (PostgreSQL
    text cannot hold them).
    """
    declared = declared_charset(content_type)
    dammit = UnicodeDammit(raw, known_definite_encodings=[declared] if declared else [],
                           is_html=True)
    text = dammit.unicode_markup
    charset = dammit.original_encoding or "utf-8"
    if text is None:
        text, charset = raw.decode("utf-8", "replace"), "utf-8"
    return text.replace("\x00", ""), charset


def decode_html(html: str, encoding: str, content_type: str, max_bytes: int) -> DecodedHtml:
    raw, size = decode_bytes(html, encoding, max_bytes)
    text, charset = bytes_to_text(raw, content_type)
    return DecodedHtml(html=text, byte_size=size, charset=charset)


def check_decodable(html: str, encoding: str, max_bytes: int) -> int:
    """Validate `content.html` without keeping the page (bounded memory); return its size."""
    return decode_bytes(html, encoding, max_bytes, keep=False)[1]
