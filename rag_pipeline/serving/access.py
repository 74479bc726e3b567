"""Who may ask what: bearer tokens from API_TOKENS, each for every collection or for some.

API_TOKENS is a comma-separated list; an entry `TOKEN` opens every collection, `TOKEN:a|b`
only the collections with id or alias a or b. Tokens are compared in constant time, and all
of them are compared, so a token's position in the list leaks nothing either.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass, field

from rag_pipeline.vocabulary import QueryRefusal

MIN_TOKEN_CHARS = 16


class Refused(Exception):
    """A request the service does not serve: its HTTP status, reason and a message that
    says what to do."""

    def __init__(self, status: int, reason: QueryRefusal, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


@dataclass(frozen=True)
class Grant:
    """What one caller may read: every collection (`refs` None) or those named."""

    refs: frozenset[str] | None = None

    def allows(self, ref: str, collection_id: str, alias: str | None) -> bool:
        return self.refs is None or bool({ref, collection_id, alias} & self.refs)


@dataclass(frozen=True)
class Access:
    tokens: tuple[tuple[bytes, Grant], ...] = field(repr=False)
    anonymous: bool  # no token configured: every caller is let in (loopback only)

    @classmethod
    def parse(cls, api_tokens: str, allow_anonymous: bool, host: str) -> Access:
        """The tokens of API_TOKENS; a ValueError says what is wrong with them (never the
        token itself) or why the service must not start without any."""
        tokens = []
        for n, entry in enumerate(e.strip() for e in api_tokens.split(",") if e.strip()):
            token, colon, refs = entry.partition(":")
            token = token.strip()
            if len(token) < MIN_TOKEN_CHARS:
                raise ValueError(f"API_TOKENS entry {n + 1} has a token shorter than "
                                 f"{MIN_TOKEN_CHARS} characters; use a random one, e.g. "
                                 "`openssl rand -hex 24`")
            names = frozenset(r.strip() for r in refs.split("|") if r.strip())
            if colon and not names:
                raise ValueError(f"API_TOKENS entry {n + 1} ends with ':' but names no "
                                 "collection; write TOKEN:alias-or-id|... or only TOKEN")
            tokens.append((token.encode(), Grant(names or None)))
        if not tokens:
            if not allow_anonymous:
                raise ValueError("API_TOKENS is empty: the query service would answer anyone. "
                                 "Set API_TOKENS (secret), or API_ALLOW_ANONYMOUS=true to serve "
                                 "without tokens on a loopback API_HOST")
            if not is_loopback(host):
                raise ValueError(f"API_ALLOW_ANONYMOUS serves without tokens only on a loopback "
                                 f"address, and API_HOST is {host}; set API_TOKENS")
        return cls(tuple(tokens), anonymous=not tokens)

    def grant(self, authorization: str | None) -> Grant:
        """The caller's grant from its Authorization header, or Refused (401)."""
        if self.anonymous:
            return Grant()
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Refused(401, QueryRefusal.UNAUTHORIZED,
                          "send `Authorization: Bearer <token>` with one of API_TOKENS")
        found = None
        candidate = presented.strip().encode()
        for token, grant in self.tokens:
            if hmac.compare_digest(token, candidate) and found is None:
                found = grant
        if found is None:
            raise Refused(401, QueryRefusal.UNAUTHORIZED,
                          "the bearer token is not one of API_TOKENS")
        return found


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
