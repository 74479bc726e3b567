"""The identity of a page in LightRAG: normalised URL, document id, file_path, content hash.

- `doc_id` is stable for (collection_id, normalised url) and always fits LightRAG's
  varchar(255) ids, whatever the URL's length (the URL itself is kept as metadata).
- `file_path` is unique and readable. LightRAG keeps only the last path segment of a
  file_path and rejects a second document with the same one, so the whole URL is folded
  into one segment: `docs.example.com|guides|index.html`.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_FILE_PATH = 240
DOC_ID_PREFIX = "page-"


class InvalidUrl(ValueError):
    pass


def normalize_url(url: str) -> str:
    """Scheme and host lower-cased, default port and fragment dropped, credentials dropped.

    Path and query are kept as they are: servers may treat their case and order as
    meaningful.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidUrl(f"must be http or https, got {parts.scheme or 'no scheme'!r}")
    try:
        host = (parts.hostname or "").rstrip(".")
        port = parts.port
    except ValueError as exc:  # a port that is not a number or out of range
        raise InvalidUrl(f"has an invalid port ({exc})") from None
    if not host:
        raise InvalidUrl("has no host")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise InvalidUrl("has a host that is not a valid internationalised domain name") from None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def doc_id(collection_id: str, normalized_url: str) -> str:
    digest = hashlib.sha256(f"{collection_id}\n{normalized_url}".encode()).hexdigest()
    return f"{DOC_ID_PREFIX}{digest[:40]}"


def file_path(normalized_url: str) -> str:
    """One readable path segment per page, unique for the URL."""
    parts = urlsplit(normalized_url)
    rest = parts.path + (f"?{parts.query}" if parts.query else "")
    # Percent-escape the characters given a meaning here first, so the mapping is one-to-one.
    # LightRAG reads "name.[engine].ext" as a parser hint: brackets are escaped too.
    for char, escaped in (("%", "%25"), ("|", "%7C"), ("[", "%5B"), ("]", "%5D"),
                          ("\\", "%5C")):
        rest = rest.replace(char, escaped)
    readable = parts.netloc + rest.replace("/", "|")
    if len(readable) > MAX_FILE_PATH:
        digest = hashlib.sha256(normalized_url.encode()).hexdigest()[:12]
        readable = f"{readable[: MAX_FILE_PATH - 13]}~{digest}"
    return readable


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
