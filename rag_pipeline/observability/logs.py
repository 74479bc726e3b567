"""Logs as one JSON object per line (LOG_FORMAT=json), or text for people (LOG_FORMAT=text).

Every component logs its events with `events.event_line`; in JSON mode such a line becomes
the object itself, with timestamp, level and logger added, so one log query follows a job by
job_id, collection_id, run_id or request_id from staging to its status. Messages are cut at
MAX_MESSAGE characters: no page content beyond a bounded excerpt reaches a log.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

MAX_MESSAGE = 2000


class JsonFormatter(logging.Formatter):
    """The shape of Dagster's own JSON lines (`--log-format json`), so one process's output
    is one kind of object: `timestamp` (ISO 8601, UTC), `level`, `logger`, `event`. Our
    events put their name in `event` beside their fields; any other line puts its message
    there, as Dagster's do; an exception's traceback is `exc_info`."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()[:MAX_MESSAGE]
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        try:
            event = json.loads(message)
        except ValueError:
            event = None
        if isinstance(event, dict) and "event" in event:
            entry.update(event)
        else:
            entry["event"] = message
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)[-MAX_MESSAGE:]
        return json.dumps(entry, default=str, ensure_ascii=False)


# Loggers that write on their own instead of through the root: LightRAG's (propagate=False,
# its own text handler) and Dagster's (the CLI gives it a handler of its own).
OWN_HANDLER_LOGGERS = ("lightrag", "dagster")


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    """The root logger of this process writes `log_format` lines to stderr; in JSON, the
    loggers with handlers of their own (LightRAG's) write through the same handler."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    _one_handler(handler, log_format)


def configure_process_logging(log_format: str) -> None:
    """A code server or run worker (they import the code location): our lines, LightRAG's
    and Dagster's own alike, as one JSON object per line (LOG_FORMAT=json), never plain text
    beside JSON."""
    if log_format != "json":
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    # Plain console handlers give way to ours; others (a test runner's capture) stay.
    kept = [h for h in root.handlers if type(h) is not logging.StreamHandler
            and not isinstance(h.formatter, JsonFormatter)]
    root.handlers[:] = [*kept, handler]
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    _one_handler(handler, log_format)
    # A sensor's `context.log` writes to a console logger Dagster builds itself (colored
    # text, whatever the CLI's --log-format); it gets ours, which reads Dagster's metadata.
    from rag_pipeline import dagster_internals

    instigation = logging.StreamHandler()
    instigation.setFormatter(RunEventFormatter())
    dagster_internals.instigation_console_through(instigation)


def _one_handler(handler: logging.Handler, log_format: str) -> None:
    """Python warnings become log lines; in JSON, the libraries' own handlers give way and
    an uncaught exception (of the process or of a thread) is a log line, not a bare
    traceback on stderr."""
    logging.captureWarnings(True)
    # Dagster's storage runs Alembic, which narrates every plugin it sets up at INFO.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if log_format != "json":
        return
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    for name in OWN_HANDLER_LOGGERS:
        own = logging.getLogger(name)
        own.handlers[:] = [handler]
        own.propagate = False


def _log_uncaught(kind: type[BaseException], error: BaseException,
                  trace: TracebackType | None) -> None:
    logging.getLogger("uncaught").critical(f"uncaught {kind.__name__}: {error}",
                                           exc_info=(kind, error, trace))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("uncaught").error(
        f"uncaught {args.exc_type.__name__} in thread {name}: {args.exc_value}",
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback))


class RunEventFormatter(JsonFormatter):
    """A run's (or a sensor's) log line as one flat object: Dagster's metadata (run_id,
    job_name, step_key, the Dagster event's type; the sensor's name as `instigator`) beside
    the fields of our event, not our JSON inside Dagster's text."""

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None) or {}
        original = meta.get("orig_message")
        if isinstance(original, str):
            record = logging.makeLogRecord({**record.__dict__, "msg": original, "args": ()})
        entry = json.loads(super().format(record))
        for key in ("run_id", "job_name", "step_key"):
            if meta.get(key):
                entry.setdefault(key, meta[key])
        if meta.get("name"):  # a sensor's or schedule's context.log
            entry.setdefault("instigator", meta["name"])
        event = meta.get("dagster_event")
        if event is not None:
            entry.setdefault("dagster_event", getattr(event, "event_type_value", str(event)))
        return json.dumps(entry, default=str, ensure_ascii=False)
