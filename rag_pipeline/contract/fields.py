"""The rules of single fields, shared by every kind of message on `indexing_jobs` and by the
records this project writes: identifiers, aliases, text safe for PostgreSQL, reason codes
for what pydantic refused."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rag_pipeline.vocabulary import Reason

COLLECTION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a UUID is one of these
# A name people choose for a collection (`pg-docs`, `docs.example.com`): lower case, so one
# alias is never two; it ends where it starts, with a letter or digit.
ALIAS = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
ALIAS_RULE = ("must be 1-64 of the characters a-z 0-9 . _ -, start and end with a letter or "
              "digit, and not be a UUID (that is a collection id)")
# A UUID as the Go side writes it (8-4-4-4-12 hex digits), or its 32 digits without hyphens.
UUID = re.compile(r"[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")
MAX_INT64 = 2**63 - 1
MAX_URL_LENGTH = 16 * 1024
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
MAX_ERROR_MSG = 4000


def check_collection_id(value: str) -> str:
    # It becomes a LightRAG workspace and part of SQL rows: letters, digits, _ and - only.
    if not COLLECTION_ID.fullmatch(value):
        raise ValueError("must be a UUID or 1-64 of the characters A-Z a-z 0-9 _ -")
    return value


def check_alias(value: str | None) -> str | None:
    if value is None:
        return None
    if not ALIAS.fullmatch(value) or UUID.fullmatch(value):
        raise ValueError(ALIAS_RULE)
    return value


def clean_str(value: str) -> str:
    """Text safe for PostgreSQL: no NUL, no lone surrogates (from JSON "\\ud800")."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


def clean_json(value: Any) -> Any:
    """`clean_str` applied to every string of a JSON value (keys included)."""
    if isinstance(value, str):
        return clean_str(value)
    if isinstance(value, dict):
        return {clean_str(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    return value


@dataclass(frozen=True)
class Rejection:
    """A message that cannot be processed: its reason code, a sentence, what could be read."""

    reason: str
    detail: str
    job_id: int | None = None
    collection_id: str | None = None

    @property
    def error_msg(self) -> str:
        return f"{self.reason}: {self.detail}"


def reason_of(error: dict[str, Any]) -> tuple[str, str]:
    loc = [str(p) for p in error.get("loc", ())]
    field = ".".join(loc)
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    kind = error.get("type", "")
    if kind == "json_invalid":
        return Reason.INVALID_JSON, f"the message is not valid JSON ({message})"
    if not loc and kind in ("model_type", "model_attributes_type", "dict_type"):
        return Reason.NOT_AN_OBJECT, "the message is JSON but not an object"
    if kind == "missing":
        return Reason.MISSING_FIELD.about(field), f"required field {field} is missing"
    if loc and loc[0] == "collection_id":
        return Reason.INVALID_COLLECTION_ID, f"collection_id {message}"
    if loc and loc[0] == "alias":
        return Reason.INVALID_ALIAS, f"alias {message}"
    if loc and loc[0] in ("url", "parent_url") and kind == "value_error":
        return Reason.INVALID_URL, f"{field} {message}"
    return Reason.INVALID_FIELD.about(field), f"field {field}: {message}"
