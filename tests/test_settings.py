"""Settings: one object, env names as documented, clear errors that never show secrets."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rag_pipeline.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_the_documented_ones(monkeypatch):
    for name in ("KAFKA_GROUP_ID", "KAFKA_TOPIC", "KAFKA_AUTO_OFFSET_RESET", "MAX_RAG_INSTANCES",
                 "RAG_INSTANCE_TTL_SECONDS", "MAX_RETRIES", "RETRY_BACKOFF", "POSTGRES_DB",
                 "OPENAI_EMBEDDING_MODEL", "OPENAI_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert (s.kafka_group_id, s.kafka_topic, s.kafka_auto_offset_reset) == (
        "rag-processor", "indexing_jobs", "earliest")
    assert (s.max_rag_instances, s.rag_instance_ttl_seconds, s.max_retries) == (10, 300, 3)
    assert s.retry_backoff == 1.0 and s.postgres_db == "mcpdocs"
    assert (s.openai_embedding_model, s.openai_llm_model) == (
        "text-embedding-3-small", "gpt-4o-mini")


def test_missing_password_names_the_variable(monkeypatch):
    monkeypatch.delenv("POSTGRES_PASSWORD")
    with pytest.raises(SettingsError, match=r"POSTGRES_PASSWORD is not set"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [("POSTGRES_PORT", "abc", r"POSTGRES_PORT: .*integer.*'abc'"),
     ("POSTGRES_PORT", "70000", r"POSTGRES_PORT: .*65535"),
     ("KAFKA_AUTO_OFFSET_RESET", "middle", r"KAFKA_AUTO_OFFSET_RESET: .*'earliest' or 'latest'"),
     ("KAFKA_MAX_MESSAGE_BYTES", "1000", r"KAFKA_MAX_MESSAGE_BYTES: must be at least 16777216"),
     ("GO_BACKEND_URL", "not a url", r"GO_BACKEND_URL: must be an http"),
     ("KAFKA_BOOTSTRAP_SERVERS", "nohost", r"KAFKA_BOOTSTRAP_SERVERS: must be host:port"),
     ("TEXT_SOURCE", "magic", r"TEXT_SOURCE: .*prefer_extracted")],
)
def test_invalid_values_name_the_variable_and_what_it_expects(monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert re.search(expected, str(err.value)), str(err.value)
    assert "Expected:" in str(err.value) or "must" in str(err.value)


def test_secret_values_never_appear_in_errors(monkeypatch):
    monkeypatch.setenv("POSTGRES_PASSWORD", "hunter2-very-secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-should-not-leak")
    monkeypatch.setenv("POSTGRES_PORT", "not-a-port")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "hunter2" not in str(err.value) and "sk-test" not in str(err.value)
    monkeypatch.delenv("POSTGRES_PORT")
    settings = Settings(postgres_password="hunter2-very-secret", _env_file=None)
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())


def test_postgres_workspace_is_refused(monkeypatch):
    monkeypatch.setenv("POSTGRES_WORKSPACE", "everything")
    with pytest.raises(SettingsError, match="POSTGRES_WORKSPACE is set"):
        load_settings()


def test_dotenv_file_is_read(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("KAFKA_TOPIC=from_dotenv\n")
    monkeypatch.delenv("KAFKA_TOPIC", raising=False)
    monkeypatch.setenv("RAG_PIPELINE_ENV_FILE", str(env_file))
    assert load_settings().kafka_topic == "from_dotenv"


def test_model_endpoint_falls_back_to_the_stand_in(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    s = load_settings()
    assert s.uses_stand_in_model and s.model_base_url == s.dev_llm_url
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    s = load_settings()
    assert not s.uses_stand_in_model and s.model_base_url == "https://api.openai.com/v1"


def test_env_example_lists_every_setting():
    example = (ROOT / ".env.example").read_text()
    names = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, flags=re.M))
    assert names == {name.upper() for name in Settings.model_fields}


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", readme, flags=re.M))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_precedence_is_environment_then_dotenv_then_local_env(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("KAFKA_TOPIC=from_dotenv\nKAFKA_GROUP_ID=group_dotenv\n")
    (tmp_path / "local.env").write_text("KAFKA_TOPIC=from_local\nKAFKA_DLQ_TOPIC=dlq_local\n"
                                        "KAFKA_GROUP_ID=group_local\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAG_PIPELINE_ENV_FILE")
    for name in ("KAFKA_TOPIC", "KAFKA_DLQ_TOPIC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAFKA_GROUP_ID", "group_exported")
    s = load_settings()
    assert (s.kafka_group_id, s.kafka_topic, s.kafka_dlq_topic) == (
        "group_exported", "from_dotenv", "dlq_local")


def test_env_init_writes_the_local_password_and_no_dotenv(tmp_path):
    # `make up` runs `rag-pipeline env init`. It used to write a .env pinning every default,
    # which Dagster's CLI then loaded over exported variables.
    done = subprocess.run([sys.executable, "-m", "rag_pipeline.local.cli", "env", "init"],
                          cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "local.env" in done.stdout
    assert not (tmp_path / ".env").exists()
    settings = [line for line in (tmp_path / "local.env").read_text().splitlines()
                if line and not line.startswith("#")]
    assert [line.split("=")[0] for line in settings] == ["POSTGRES_PASSWORD"]
    assert (tmp_path / "local.env").stat().st_mode & 0o077 == 0


def test_a_dagster_process_started_as_documented_uses_exported_values(tmp_path):
    # The README's way: a Dagster CLI process in the checkout after `make up`, with settings
    # exported for other services. The value the process uses is the exported one: here an
    # invalid KAFKA_BOOTSTRAP_SERVERS that must make loading the code location fail.
    subprocess.run([sys.executable, "-m", "rag_pipeline.local.cli", "env", "init"],
                   cwd=tmp_path, capture_output=True, check=True)
    shutil.copy(ROOT / "workspace.yaml", tmp_path / "workspace.yaml")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAG_PIPELINE_", "KAFKA_", "POSTGRES_", "DAGSTER_HOME"))}
    dagster = str(Path(sys.executable).parent / "dagster")

    def validate(**exported: str) -> subprocess.CompletedProcess:
        return subprocess.run([dagster, "definitions", "validate", "-w", "workspace.yaml"],
                              cwd=tmp_path, env={**env, **exported}, capture_output=True,
                              text=True, timeout=300)

    assert validate().returncode == 0  # local.env's password is read
    refused = validate(KAFKA_BOOTSTRAP_SERVERS="no-port-here")
    assert refused.returncode != 0
    assert "KAFKA_BOOTSTRAP_SERVERS" in refused.stdout + refused.stderr


def test_a_copied_env_example_changes_nothing(tmp_path, monkeypatch):
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAG_PIPELINE_ENV_FILE")
    monkeypatch.setenv("KAFKA_GROUP_ID", "group_exported")
    monkeypatch.setenv("POSTGRES_PORT", "6543")
    s = load_settings()
    assert (s.kafka_group_id, s.postgres_port) == ("group_exported", 6543)
    from rag_pipeline.settings.dotenv_shadow import shadowed_variables

    assert shadowed_variables(str(tmp_path)) == []


def test_dagster_cli_warns_when_its_env_file_overrides_an_exported_variable(tmp_path):
    """Dagster's CLI loads .env over the environment; the code location names what it
    overrode (never a value), and nothing when the file agrees with the environment."""
    (tmp_path / ".env").write_text("KAFKA_GROUP_ID=from-dotenv\nKAFKA_TOPIC=same\n")
    env = {**os.environ, "RAG_PIPELINE_ENV_FILE": "", "KAFKA_GROUP_ID": "exported",
           "KAFKA_TOPIC": "same"}
    dagster = Path(sys.executable).parent / "dagster"
    done = subprocess.run([str(dagster), "definitions", "validate", "-m",
                           "rag_pipeline.definitions"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    [warning] = [json.loads(line) for line in done.stderr.splitlines()
                 if "env_file_overrides_environment" in line]
    assert warning["variables"] == ["KAFKA_GROUP_ID"]
    assert "from-dotenv" not in json.dumps(warning)
