"""Every knob of rag-pipeline in one place, read from the environment and an optional `.env`.

The variable names are the ones the design and the README use (`KAFKA_BOOTSTRAP_SERVERS`,
`POSTGRES_HOST`, ...): `model` holds the `Settings` object (defaults, descriptions,
validation), `loading` reads it (`load_settings()` turns a validation failure into one
readable message per variable, without echoing secret values), `views` the typed view each
consumer reads.
"""

from rag_pipeline.settings.loading import (
    SettingsError,
    describe_error,
    env_files,
    env_files_by_absolute_path,
    env_name,
    load_settings,
)
from rag_pipeline.settings.model import (
    ENV_FILE,
    LOCAL_ENV_FILE,
    MIB,
    MIN_KAFKA_MESSAGE_BYTES,
    SECRET_FIELDS,
    Settings,
    default_of,
)
from rag_pipeline.settings.views import postgres_conninfo, reveal

__all__ = ["ENV_FILE", "LOCAL_ENV_FILE", "MIB", "MIN_KAFKA_MESSAGE_BYTES", "SECRET_FIELDS",
           "Settings", "SettingsError", "default_of", "describe_error", "env_files",
           "env_files_by_absolute_path", "env_name", "load_settings", "postgres_conninfo",
           "reveal"]
