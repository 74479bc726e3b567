"""Logs as one JSON object per line (LOG_FORMAT=json), or text for people (LOG_FORMAT=text).

Every component logs its events with `events.event_line`; in JSON mode such a line becomes
the object itself, with timestamp, level and logger added, so one log query follows a job by
job_id, collection_id, run_id or request_id from staging to its status. Messages are cut at
MAX_MESSAGE characters: no page content beyond a bounded excerpt reaches a log.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

MAX_MESSAGE = 2000


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()[:MAX_MESSAGE]
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
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
            entry["event"] = "log"
            entry["message"] = message
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)[-MAX_MESSAGE:]
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    """The root logger of this process writes `log_format` lines to stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
