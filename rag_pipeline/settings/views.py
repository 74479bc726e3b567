"""Typed views of the settings, one per consumer.

Each options type of the logic modules (`KafkaOptions`, `ModelOptions`, `LivenessOptions`,
...) is built by one `from_settings` from a view: the `Settings` object itself (CLI, tests,
benchmarks) or a Dagster resource whose fields carry the same names (secrets as `EnvVar`
strings). A view is a Protocol listing exactly the settings its consumer reads, so a wrong
name fails type checking, and `tests/test_settings_views.py` checks every view against
`Settings` and against the resources that are passed as it.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import SecretStr

# A secret: SecretStr in Settings, the resolved EnvVar's str in a resource.
Secret = SecretStr | str


class KafkaClientView(Protocol):
    """What every Kafka client reads (kafka_io.KafkaOptions)."""

    @property
    def kafka_bootstrap_servers(self) -> str: ...
    @property
    def kafka_group_id(self) -> str: ...
    @property
    def kafka_auto_offset_reset(self) -> str: ...
    @property
    def kafka_max_message_bytes(self) -> int: ...
    @property
    def sensor_max_bytes(self) -> int: ...
    @property
    def kafka_security_protocol(self) -> str: ...
    @property
    def kafka_sasl_mechanism(self) -> str: ...
    @property
    def kafka_sasl_username(self) -> str: ...
    @property
    def kafka_sasl_password(self) -> Secret: ...
    @property
    def kafka_ssl_ca_location(self) -> str: ...


class KafkaTopicsView(KafkaClientView, Protocol):
    """The topics and the sensor's per-tick budget (staging.TickBudget, StagingConfig)."""

    @property
    def kafka_topic(self) -> str: ...
    @property
    def kafka_dlq_topic(self) -> str: ...
    @property
    def kafka_results_topic(self) -> str: ...
    @property
    def publish_results(self) -> bool: ...
    @property
    def sensor_max_messages(self) -> int: ...
    @property
    def sensor_time_budget_seconds(self) -> float: ...


class KafkaAdminView(KafkaTopicsView, Protocol):
    """What `rag-pipeline kafka ensure-topics` sets on each topic (kafka_topics.py)."""

    @property
    def kafka_topic_partitions(self) -> int: ...
    @property
    def kafka_dlq_partitions(self) -> int: ...
    @property
    def kafka_replication_factor(self) -> int: ...
    @property
    def kafka_retention_hours(self) -> float: ...
    @property
    def kafka_dlq_retention_hours(self) -> float: ...


class PageView(Protocol):
    """How much a page may carry and which text is indexed (contract.ContentLimits,
    indexing.pages.PageLimits)."""

    @property
    def max_payload_bytes(self) -> int: ...
    @property
    def max_text_bytes(self) -> int: ...
    @property
    def text_source(self) -> str: ...


class DeliveryView(Protocol):
    """The Go API's status endpoint and the outbox's policy (outbox.Outbox)."""

    @property
    def go_backend_url(self) -> str: ...
    @property
    def go_api_timeout_seconds(self) -> float: ...
    @property
    def go_api_token(self) -> Secret: ...
    @property
    def outbox_max_backoff_seconds(self) -> float: ...
    @property
    def retry_backoff(self) -> float: ...


class LivenessView(Protocol):
    """Liveness's timeouts (liveness.options.LivenessOptions)."""

    @property
    def run_heartbeat_timeout_seconds(self) -> int: ...
    @property
    def run_stall_timeout_seconds(self) -> int: ...
    @property
    def run_start_timeout_seconds(self) -> int: ...
    @property
    def max_retries(self) -> int: ...


class PostgresView(Protocol):
    """One PostgreSQL connection string (the ledger, the collection lock, LightRAG)."""

    @property
    def postgres_host(self) -> str: ...
    @property
    def postgres_port(self) -> int: ...
    @property
    def postgres_user(self) -> str: ...
    @property
    def postgres_password(self) -> Secret: ...
    @property
    def postgres_db(self) -> str: ...
    @property
    def postgres_sslmode(self) -> str: ...
    @property
    def postgres_sslrootcert(self) -> str: ...


class ModelView(Protocol):
    """The model endpoints and their bounds (knowledge.models.ModelOptions)."""

    @property
    def openai_api_key(self) -> Secret: ...
    @property
    def openai_base_url(self) -> str | None: ...
    @property
    def dev_llm_url(self) -> str: ...
    @property
    def openai_llm_model(self) -> str: ...
    @property
    def openai_embedding_model(self) -> str: ...
    @property
    def embedding_dim(self) -> int: ...
    @property
    def llm_max_concurrency(self) -> int: ...
    @property
    def embedding_max_concurrency(self) -> int: ...
    @property
    def model_timeout_seconds(self) -> float: ...
    @property
    def max_retries(self) -> int: ...
    @property
    def retry_backoff(self) -> float: ...


class LightRAGView(PostgresView, ModelView, Protocol):
    """LightRAG's storages and its pool of workspaces (knowledge.workspaces.LightRAGOptions)."""

    @property
    def lightrag_pool_size(self) -> int: ...
    @property
    def lightrag_graph_storage(self) -> str: ...
    @property
    def max_rag_instances(self) -> int: ...
    @property
    def rag_instance_ttl_seconds(self) -> int: ...
    @property
    def max_workers(self) -> int: ...


# Every view, for the test that holds them against Settings and the resources.
VIEWS: tuple[type, ...] = (KafkaClientView, KafkaTopicsView, PageView, DeliveryView,
                           LivenessView, PostgresView, ModelView, LightRAGView)


def view_fields(view: type) -> set[str]:
    """The settings a view reads (its properties, inherited ones included)."""
    return {name for klass in view.__mro__ if klass is not Protocol
            for name, value in vars(klass).items() if isinstance(value, property)}


def reveal(value: Secret | None) -> str:
    """A secret's value from Settings (SecretStr) or from a resource (str); "" when unset."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value or ""


def postgres_conninfo(s: PostgresView, dbname: str | None = None) -> str:
    """The libpq connection string of every psycopg connection (the password is passed
    separately, never in it)."""
    from psycopg.conninfo import make_conninfo

    tls = {"sslmode": s.postgres_sslmode}
    if s.postgres_sslrootcert:
        tls["sslrootcert"] = s.postgres_sslrootcert
    return make_conninfo(host=s.postgres_host, port=s.postgres_port, user=s.postgres_user,
                         dbname=dbname or s.postgres_db, **tls)


def uses_stand_in_model(s: ModelView) -> bool:
    return not reveal(s.openai_api_key) and not s.openai_base_url


def model_base_url(s: ModelView) -> str:
    if s.openai_base_url:
        return s.openai_base_url
    return "https://api.openai.com/v1" if reveal(s.openai_api_key) else s.dev_llm_url


def model_api_key(s: ModelView) -> str:
    # The stand-in and most self-hosted servers ignore the key, but the client needs one.
    return reveal(s.openai_api_key) or "not-needed"
