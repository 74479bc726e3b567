"""Reading the settings: which files, in which order, and one readable line per bad variable
(never a secret's value)."""

from __future__ import annotations

import os

from pydantic import ValidationError

from rag_pipeline.settings.model import ENV_FILE, LOCAL_ENV_FILE, SECRET_FIELDS, Settings


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the variable and what it expects."""


def env_name(field_name: str) -> str:
    return field_name.upper()


def describe_error(error: dict) -> str:
    """One line for one pydantic error, naming the variable and never echoing a secret."""
    loc = error.get("loc") or ()
    field_name = str(loc[0]) if loc else ""
    field = Settings.model_fields.get(field_name)
    expected = field.description if field and field.description else ""
    if error.get("type") == "missing":
        return f"{env_name(field_name)} is not set: {expected}"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if not field_name:  # a model-level check; its message names the variable itself
        return message
    shown = ""
    if field_name not in SECRET_FIELDS and "input" in error:
        shown = f" (got {str(error['input'])[:80]!r})"
    return f"{env_name(field_name)}: {message}{shown}. Expected: {expected}"


def env_files() -> tuple[str, ...]:
    env_file = os.environ.get("RAG_PIPELINE_ENV_FILE", ENV_FILE)
    if not env_file:
        return ()
    # pydantic-settings: a later file wins over an earlier one.
    return (os.environ.get("RAG_PIPELINE_LOCAL_ENV_FILE", LOCAL_ENV_FILE), env_file)


def env_files_by_absolute_path() -> dict[str, str]:
    """The variables that name this process's settings files, as absolute paths: for a
    process started in another working directory."""
    files = env_files()
    if not files:
        return {"RAG_PIPELINE_ENV_FILE": ""}
    local, own = (os.path.abspath(f) for f in files)
    return {"RAG_PIPELINE_LOCAL_ENV_FILE": local, "RAG_PIPELINE_ENV_FILE": own}


def load_settings(**overrides: object) -> Settings:
    """Read the settings, raising `SettingsError` with one readable line per bad variable."""
    try:
        return Settings(_env_file=env_files() or None,  # type: ignore[call-arg]
                        **overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [describe_error(err) for err in exc.errors(include_url=False)]
        raise SettingsError(
            "Invalid rag-pipeline configuration (environment, .env or local.env):\n  - "
            + "\n  - ".join(lines)
            + "\nSee .env.example and the configuration table in README.md."
        ) from None
