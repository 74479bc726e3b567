"""What every `rag-pipeline` command shares: errors a user can cause become one message and
exit status 2, never a stack trace; the settings; an open ledger at the current schema."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any

import click

from rag_pipeline.settings import Settings, SettingsError, load_settings


class UserError(click.ClickException):
    exit_code = 2


class OperatorError(Exception):
    """A failure the operator can fix; its message says how (shown without a traceback)."""


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the exceptions a user can cause into a message without a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (SettingsError, OperatorError) as exc:
            raise UserError(str(exc)) from None

    return wrapper


def cli_settings() -> Settings:
    return load_settings()


@contextmanager
def open_ledger(settings: Settings, *, check_schema: bool = True) -> Iterator[Any]:
    from rag_pipeline.ledger import JobLedger, LedgerUnavailable

    try:
        ledger = JobLedger(settings.postgres_conninfo(),
                           settings.postgres_password.get_secret_value()).open()
    except LedgerUnavailable as exc:
        raise UserError(str(exc)) from None
    except Exception as exc:
        raise UserError(f"PostgreSQL at {settings.postgres_host}:{settings.postgres_port} is "
                        f"unreachable ({type(exc).__name__}); is the stack up?") from None
    try:
        if check_schema:
            ledger.require_current_schema()
        yield ledger
    except LedgerUnavailable as exc:
        raise UserError(str(exc)) from None
    finally:
        ledger.close()
