"""Structured log lines: one JSON object per event, with the ids known at that point.

Every component (sensor, runs, reconciliation) logs through `event_line`, with the same
field names (job_id, request_id, collection_id, run_id) and the same reason codes as the
ledger and the dead letter topic, so one grep or one log query follows a job end to end.
"""

from __future__ import annotations

import json
from typing import Any


def event_line(event: str, **fields: Any) -> str:
    return json.dumps({"event": event, **{k: v for k, v in fields.items() if v is not None}},
                      default=str, ensure_ascii=False)
