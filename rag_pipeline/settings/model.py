"""The Settings model: every knob of rag-pipeline with its default, its description and
its validation (the README's configuration table is generated from it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag_pipeline.contract import ContentLimits
from rag_pipeline.settings.views import (
    model_api_key,
    model_base_url,
    postgres_conninfo,
    reveal,
    uses_stand_in_model,
)
from rag_pipeline.vocabulary import TextSource

MIB = 1024 * 1024

# Kafka's own ceiling for one message must stay at or above this (docs/design.md, section 2).
MIN_KAFKA_MESSAGE_BYTES = 16 * MIB

# Where settings come from, highest first: the process environment, `.env` (the user's own
# file), `local.env` (written by `rag-pipeline env init` for the local stack: its random
# PostgreSQL password and nothing else), the defaults. RAG_PIPELINE_ENV_FILE and
# RAG_PIPELINE_LOCAL_ENV_FILE name other files; RAG_PIPELINE_ENV_FILE="" reads no file.
ENV_FILE = ".env"
LOCAL_ENV_FILE = "local.env"
SECRET_FIELDS = frozenset({"postgres_password", "openai_api_key", "kafka_sasl_password",
                           "go_api_token", "api_tokens"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=(LOCAL_ENV_FILE, ENV_FILE),
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="host:port[,host:port] of the Kafka brokers"
    )
    kafka_group_id: str = Field("rag-processor", description="consumer group for lag tools")
    kafka_topic: str = Field("indexing_jobs", description="topic the crawler publishes to")
    kafka_dlq_topic: str = Field("indexing_jobs_dlq", description="dead letter topic")
    kafka_results_topic: str = Field(
        "indexing_job_results", description="topic of the optional result events"
    )
    kafka_auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where to start a partition that has no stored offset"
    )
    kafka_topic_partitions: int = Field(
        12, ge=1, description="partitions of indexing_jobs (`rag-pipeline kafka ensure-topics`)"
    )
    kafka_dlq_partitions: int = Field(3, ge=1, description="partitions of the DLQ and results")
    kafka_replication_factor: int = Field(
        1, ge=1, description="replicas of each topic ensure-topics creates (3 in production)"
    )
    kafka_retention_hours: float = Field(
        168, gt=0, description="how long indexing_jobs and the results keep a message"
    )
    kafka_dlq_retention_hours: float = Field(
        720, gt=0, description="how long the DLQ keeps a dead letter"
    )
    kafka_max_message_bytes: int = Field(
        20 * MIB, description="largest Kafka message accepted end to end (>= 16 MiB)"
    )
    publish_results: bool = Field(
        False, description="also publish each job outcome to KAFKA_RESULTS_TOPIC"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how clients talk to the brokers (librdkafka security.protocol)"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism when KAFKA_SECURITY_PROTOCOL is SASL_*"
    )
    kafka_sasl_username: str = Field("", description="SASL user when the protocol is SASL_*")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password when the protocol is SASL_* (secret)"
    )
    kafka_ssl_ca_location: str = Field(
        "", description="PEM file of the CA that signed the brokers' certificates (SSL, "
        "SASL_SSL); empty: the system's CAs"
    )

    # --- Sensor budgets (each tick must end well inside Dagster's 60 s gRPC limit) -----------
    sensor_interval_seconds: int = Field(5, ge=1, description="minimum seconds between ticks")
    sensor_max_messages: int = Field(2000, ge=1, description="messages read per tick at most")
    sensor_max_bytes: int = Field(
        64 * MIB, ge=MIB, description="message bytes held in memory per tick at most"
    )
    sensor_time_budget_seconds: float = Field(
        20.0, gt=0, le=45, description="seconds a tick may spend reading Kafka"
    )
    run_batch_bytes: int = Field(
        32 * MIB, ge=MIB, description="payload bytes a run holds in memory at once"
    )
    run_idle_seconds: float = Field(
        30.0, ge=0, description="seconds a run with nothing left waits for new pages of its "
        "collection before it ends (none when other collections wait for a run slot)"
    )
    run_max_seconds: float = Field(
        600.0, ge=10, description="after this long a run yields to other collections waiting "
        "for a run slot: it finishes its pages and ends; a new run takes the rest"
    )

    # --- Processing --------------------------------------------------------------------------
    max_payload_bytes: int = Field(
        50 * MIB, ge=1024, description="cap on a page's decompressed HTML (gzip bomb guard)"
    )
    max_text_bytes: int = Field(
        8 * MIB, ge=1024, description="cap on the text indexed for one page (model cost guard)"
    )
    text_source: TextSource = Field(
        TextSource.PREFER_EXTRACTED,
        description="use content.text when present, or always re-extract from content.html",
    )
    max_workers: int = Field(
        0, ge=0, description="pages one run indexes in parallel (LightRAG "
        "max_parallel_insert); 0: three per LLM_MAX_CONCURRENCY, enough to keep the model busy"
    )
    max_retries: int = Field(3, ge=0, description="attempts after the first before a job is dead")
    retry_backoff: float = Field(1.0, gt=0, description="base seconds of exponential backoff")

    # --- LightRAG ----------------------------------------------------------------------------
    max_rag_instances: int = Field(10, ge=1, description="LightRAG instances kept per process")
    rag_instance_ttl_seconds: int = Field(
        300, ge=1, description="idle seconds before a LightRAG instance is finalized"
    )
    lightrag_graph_storage: Literal["PGTableGraphStorage", "PGGraphStorage"] = Field(
        "PGTableGraphStorage", description="PGGraphStorage needs Apache AGE"
    )
    llm_max_concurrency: int = Field(
        8, ge=1, description="LLM requests in flight across all concurrent runs"
    )
    embedding_max_concurrency: int = Field(
        8, ge=1, description="embedding requests in flight across all concurrent runs"
    )

    # --- The query service (`rag-pipeline api`) ----------------------------------------------
    api_host: str = Field("127.0.0.1", description="address the query service listens on")
    api_port: int = Field(8400, ge=1, le=65535, description="port of the query service")
    api_tokens: SecretStr | None = Field(
        None, description="bearer tokens of the query service, comma-separated; `TOKEN:a|b` "
        "limits a token to collections (ids or aliases) a and b (secret)"
    )
    api_allow_anonymous: bool = Field(
        False, description="serve without API_TOKENS (only on a loopback API_HOST)"
    )
    query_max_chars: int = Field(2000, ge=3, description="longest question accepted")
    query_max_top_k: int = Field(100, ge=1, description="largest top_k a query may ask for")
    query_max_concurrency: int = Field(
        8, ge=1, description="queries answered at once; more get 429"
    )
    query_llm_max_concurrency: int = Field(
        4, ge=1, description="model requests in flight for queries (their own budget, apart "
        "from indexing's LLM_MAX_CONCURRENCY)"
    )
    query_timeout_seconds: float = Field(
        120.0, gt=0, description="deadline of one query (retrieval and answer)"
    )

    # --- PostgreSQL (LightRAG tables and the rag_pipeline ledger) ---------------------------
    postgres_host: str = Field("127.0.0.1", description="PostgreSQL host")
    postgres_port: int = Field(5432, ge=1, le=65535, description="PostgreSQL port")
    postgres_user: str = Field("postgres", description="PostgreSQL user")
    postgres_password: SecretStr = Field(description="PostgreSQL password (required)")
    postgres_db: str = Field("mcpdocs", description="database of LightRAG and the ledger")
    dagster_postgres_db: str = Field("dagster", description="database of Dagster's storage")
    postgres_sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca",
                              "verify-full"] = Field(
        "prefer", description="TLS to PostgreSQL (libpq sslmode), for the ledger and LightRAG "
        "alike; Dagster's storage takes libpq's PGSSLMODE"
    )
    postgres_sslrootcert: str = Field(
        "", description="PEM file of the CA that signed the server's certificate (verify-ca, "
        "verify-full); empty: the system's CAs"
    )
    ledger_pool_size: int = Field(
        4, ge=2, le=50, description="PostgreSQL connections of the ledger pool per process "
        "(docs/deployment.md, connection budget)"
    )
    lightrag_pool_size: int = Field(
        8, ge=2, le=100, description="PostgreSQL connections of LightRAG's pool per run process "
        "(docs/deployment.md, connection budget)"
    )

    # --- Models ------------------------------------------------------------------------------
    openai_api_key: SecretStr | None = Field(
        None, description="OpenAI key; unset means the local stand-in model"
    )
    openai_base_url: str | None = Field(
        None, description="any OpenAI-compatible endpoint, e.g. https://api.openai.com/v1"
    )
    openai_embedding_model: str = Field("text-embedding-3-small", description="embedding model")
    openai_llm_model: str = Field("gpt-4o-mini", description="LLM for entity extraction")
    embedding_dim: int = Field(1536, ge=8, le=2000, description="embedding dimensions")
    dev_llm_url: str = Field(
        "http://127.0.0.1:8081/v1", description="the local stand-in model (no OPENAI_API_KEY)"
    )
    model_timeout_seconds: float = Field(120.0, gt=0, description="timeout of one model request")

    # --- Go backend --------------------------------------------------------------------------
    go_backend_url: str = Field(
        "http://127.0.0.1:8080", description="base URL of the Go API that receives job statuses"
    )
    go_api_timeout_seconds: float = Field(10.0, gt=0, description="timeout of one status PATCH")
    go_api_token: SecretStr | None = Field(
        None, description="bearer token sent with every status PATCH, if the Go API wants one "
        "(secret)"
    )
    outbox_max_backoff_seconds: float = Field(
        300.0, gt=0, description="cap of the backoff between two delivery attempts of a status"
    )

    # --- Reconciliation ----------------------------------------------------------------------
    reconcile_cron: str = Field("*/5 * * * *", description="schedule of reconcile_stuck_jobs")
    run_heartbeat_timeout_seconds: int = Field(
        60, ge=20, description="a run silent this long is declared dead: failed in Dagster, "
        "its jobs requeued, its claims and lock taken away (it beats every 5 s; a run whose "
        "process is gone from PostgreSQL is declared dead after 15 s)"
    )
    run_stall_timeout_seconds: int = Field(
        300, ge=60, description="a run with pages in flight that shows no progress (no "
        "model answer, retry or error, no page settled) this long fails, and its jobs go to "
        "a new run; must exceed MODEL_TIMEOUT_SECONDS"
    )
    run_start_timeout_seconds: int = Field(
        60, ge=30, description="a run launched (or queued with a free slot) this long "
        "without a first heartbeat is declared dead the same way (raise it where runs wait "
        "for a node or an image pull, e.g. on Kubernetes)"
    )
    queued_job_grace_seconds: int = Field(
        120, ge=0, description="a queued job this old with no run gets one"
    )

    # --- Retention ---------------------------------------------------------------------------
    retention_days: float = Field(
        30.0, ge=0, description="a finished job's payload (message, cleaned text) is pruned "
        "this many days after it finished, and Dagster runs that ended before then are "
        "deleted (each job and partition keeps its latest success); job rows, outcomes and "
        "LightRAG stay; 0 keeps everything"
    )
    retention_cron: str = Field("17 3 * * *", description="schedule of apply_retention")
    retire_superseded_after_seconds: float = Field(
        86_400.0, ge=0, description="a collection superseded under its alias (a newer crawl "
        "or rebuild answers now) is dropped by apply_retention this long after: a grace "
        "period to compare or roll back; 0 retires at the next pass")

    # --- Operations --------------------------------------------------------------------------
    metrics_host: str = Field("127.0.0.1", description="address the metrics exporter listens "
                              "on (0.0.0.0 in a container)")
    metrics_port: int = Field(9108, ge=1, le=65535, description="port of the metrics exporter "
                              "(/metrics, /healthz, /readyz)")
    daemon_heartbeat_tolerance_seconds: float = Field(
        120.0, gt=0, description="the exporter reports the dagster-daemon down once its last "
        "heartbeat is this old (it beats every 30 s; a busy host delays one)")
    log_format: Literal["json", "text"] = Field(
        "json", description="logs as one JSON object per line, or text for people")

    # --- Local stack -------------------------------------------------------------------------
    stack_dir: Path = Field(Path(".stack"), description="folder of the local stack's data")
    kafka_controller_port: int = Field(9093, ge=1, le=65535, description="KRaft controller port")
    kafka_sasl_port: int | None = Field(
        None, ge=1, le=65535, description="port of a SASL_PLAINTEXT listener (PLAIN, user "
        "ragpipeline, password in <STACK_DIR>/kafka/sasl-password) the local Kafka adds, to "
        "try KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT against; unset: none"
    )
    kafka_advertised_port: int | None = Field(
        None, ge=1, le=65535,
        description="port the local Kafka tells clients to use (a TCP proxy in front of it)",
    )
    dagster_port: int = Field(3000, ge=1, le=65535, description="port of the Dagster UI")

    @field_validator("kafka_max_message_bytes")
    @classmethod
    def _at_least_16_mib(cls, value: int) -> int:
        if value < MIN_KAFKA_MESSAGE_BYTES:
            raise ValueError(f"must be at least {MIN_KAFKA_MESSAGE_BYTES} (16 MiB)")
        return value

    @field_validator("go_backend_url", "dev_llm_url", "openai_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError("must be host:port[,host:port...]")
        return value

    @model_validator(mode="after")
    def _postgres_tls(self) -> Settings:
        if self.postgres_sslrootcert and not Path(self.postgres_sslrootcert).is_file():
            raise ValueError(
                f"POSTGRES_SSLROOTCERT={self.postgres_sslrootcert} is not a readable file; give "
                "the path of the CA's PEM file, or leave it empty for the system's CAs")
        return self

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
                self.kafka_sasl_username and reveal(self.kafka_sasl_password)):
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD (and KAFKA_SASL_MECHANISM, "
                f"{self.kafka_sasl_mechanism} now); set them or use PLAINTEXT / SSL")
        if self.kafka_ssl_ca_location and not Path(self.kafka_ssl_ca_location).is_file():
            raise ValueError(
                f"KAFKA_SSL_CA_LOCATION={self.kafka_ssl_ca_location} is not a readable file; "
                "give the path of the CA's PEM file, or leave it empty for the system's CAs")
        return self

    @model_validator(mode="after")
    def _stall_after_model_timeout(self) -> Settings:
        if self.run_stall_timeout_seconds <= self.model_timeout_seconds:
            raise ValueError(
                f"RUN_STALL_TIMEOUT_SECONDS ({self.run_stall_timeout_seconds}) must exceed "
                f"MODEL_TIMEOUT_SECONDS ({self.model_timeout_seconds:g}): one slow model request "
                "is not a stall; raise the first or lower the second")
        return self

    @model_validator(mode="after")
    def _no_postgres_workspace(self) -> Settings:
        # LightRAG lets POSTGRES_WORKSPACE override every instance's workspace, which would
        # merge all collections into one (docs/design.md, section 6).
        if os.environ.get("POSTGRES_WORKSPACE"):
            raise ValueError(
                "POSTGRES_WORKSPACE is set: it would put every collection into one LightRAG "
                "workspace; unset it (rag-pipeline sets one workspace per collection_id)"
            )
        return self

    # --- Derived values ----------------------------------------------------------------------
    @property
    def uses_stand_in_model(self) -> bool:
        return uses_stand_in_model(self)

    @property
    def model_base_url(self) -> str:
        return model_base_url(self)

    @property
    def model_api_key(self) -> str:
        return model_api_key(self)

    @property
    def content_limits(self) -> ContentLimits:
        return ContentLimits.from_settings(self, self)

    @property
    def stack_path(self) -> Path:
        return self.stack_dir.expanduser().resolve()

    def postgres_conninfo(self, dbname: str | None = None) -> str:
        return postgres_conninfo(self, dbname)

    def postgres_kwargs(self) -> dict[str, str]:
        return {"password": self.postgres_password.get_secret_value()}


def default_of(name: str) -> Any:
    """A setting's default, for the places that must offer one of their own (a job's run
    config edited in the UI): stated once, here."""
    return Settings.model_fields[name].default
