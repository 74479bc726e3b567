"""The run logger (a Dagster definition): Dagster's console logger, with each line one flat
JSON object (observability/logs.py, RunEventFormatter) when LOG_FORMAT=json."""

from __future__ import annotations

import logging

import dagster as dg

from rag_pipeline.observability.logs import RunEventFormatter


@dg.logger(
    {"log_level": dg.Field(str, is_required=False, default_value="INFO"),
     "name": dg.Field(str, is_required=False, default_value="dagster")},
    description="A run's events on stderr, one JSON object per line with the run's ids.",
)
def json_run_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    config = init_context.logger_config
    run_logger = logging.Logger(config["name"], level=config["log_level"])
    handler = logging.StreamHandler()
    handler.setFormatter(RunEventFormatter())
    run_logger.addHandler(handler)
    return run_logger
