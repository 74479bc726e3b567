"""The Docker deployment (Dockerfile, deploy/docker/), checked as far as a machine without a
container engine allows (docs/deployment.md says what was and was not run):

- the Compose file is loaded by Compose's own loader (compose-go, go/cmd/composecheck) and
  every service's command, port and variable agrees with the code;
- the deployment's dagster.yaml loads as a real Dagster instance on PostgreSQL, with the
  DockerRunLauncher configured and validated by Dagster's config machinery;
- the image's install steps run in a clean virtual environment from the build context
  .dockerignore leaves (no workshop), with the launchers' packages, and its command serves
  the code location there, answering the Compose file's health check.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from rag_pipeline.local.stack.deployment import create_databases, drop_databases, free_port
from rag_pipeline.settings import Settings, env_name

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "docker"
DOCKERFILE = (ROOT / "Dockerfile").read_text()
REQUIRED = {"POSTGRES_PASSWORD": "compose-secret", "OPENAI_API_KEY": "sk-compose",
            "API_TOKENS": "compose-token-0123456789",
            "GO_BACKEND_URL": "http://go-api.internal:8080", "DOCKER_GID": "998"}
PIPELINE_SERVICES = ("code", "webserver", "daemon", "exporter", "api", "migrate", "topics")


def composecheck(go_bin: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in REQUIRED}
    return subprocess.run([str(go_bin / "composecheck"), "-f", str(DEPLOY / "docker-compose.yml")],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def compose(go_bin) -> dict:
    done = composecheck(go_bin, REQUIRED)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def dockerfile_instructions(name: str) -> list[str]:
    """The texts of a Dockerfile instruction, in order (continuation lines joined)."""
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.removeprefix(name + " ").strip() for line in joined.splitlines()
            if line.startswith(name + " ")]


def dockerfile_instruction(name: str) -> str:
    [text] = dockerfile_instructions(name)
    return text


def image_command() -> list[str]:
    return json.loads(dockerfile_instruction("CMD"))


def compose_file() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def health_check() -> list[str]:
    """The code server's health check (the Compose file's: the image has none)."""
    test = compose_file()["services"]["code"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    return test[1:]


def build_context(target: Path) -> Path:
    """The files `docker build` would send: the checkout minus what .dockerignore names."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(directory: str, names: list[str]) -> set[str]:
        relative = Path(directory).relative_to(ROOT)
        out = set()
        for name in names:
            path = (relative / name).as_posix()
            # Docker's rules: a pattern matches from the context's root; `**/` anywhere.
            if any(fnmatch.fnmatch(name, p.removeprefix("**/")) if p.startswith("**/")
                   else fnmatch.fnmatch(path, p) for p in patterns):
                out.add(name)
        return out

    shutil.copytree(ROOT, target, ignore=ignored, symlinks=True)
    return target


def test_compose_names_every_secret_it_needs(go_bin):
    done = composecheck(go_bin, {k: v for k, v in REQUIRED.items() if k != "POSTGRES_PASSWORD"})
    assert done.returncode == 1
    assert "required variable POSTGRES_PASSWORD is missing a value" in done.stderr


def test_compose_services_agree_with_the_code(compose):
    services = compose["services"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]
    # The code server: the image's own command, serving the project's code location.
    code = services["code"]
    assert code["command"] == image_command()
    grpc_args = code["command"][code["command"].index("grpc") + 1:]
    assert grpc_args[grpc_args.index("-m") + 1] == pyproject["module_name"]
    assert code["command"][code["command"].index("--location-name") + 1] == \
        pyproject["code_location_name"]
    assert code["environment"]["DAGSTER_CURRENT_IMAGE"] == code["image"]
    # Webserver and daemon reach it through the workspace the image carries.
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    [entry] = workspace["load_from"]
    grpc = entry["grpc_server"]
    assert grpc["host"] == "code" and grpc["location_name"] == pyproject["code_location_name"]
    assert str(grpc["port"]) == code["command"][code["command"].index("-p") + 1]
    dagster_home = re.search(r"DAGSTER_HOME=(\S+)", DOCKERFILE).group(1)
    copies = [line.split()[1:] for line in DOCKERFILE.splitlines() if line.startswith("COPY ")]
    assert ["deploy/docker/dagster.yaml", "deploy/docker/workspace.yaml",
            f"{dagster_home}/"] in copies
    for name, dagster_command in (("webserver", "dagster-webserver"),
                                  ("daemon", "dagster-daemon")):
        command = services[name]["command"]
        assert command[command.index("-w") + 1] == f"{dagster_home}/workspace.yaml"
        # Dagster's command, its root logger in JSON too (observability/dagster_process.py).
        assert command[:4] == ["python", "-m", "rag_pipeline.observability.dagster_process",
                               dagster_command] and command[-2:] == ["--log-format", "json"]
    # The code server too: run containers start with the command it names (its module).
    assert code["command"][:6] == ["python", "-m", "rag_pipeline.observability.dagster_process",
                                   "dagster", "api", "grpc"]
    # The exporter listens where Compose publishes it.
    exporter = services["exporter"]
    metrics_port = int(exporter["environment"]["METRICS_PORT"])
    assert [p["target"] for p in exporter["ports"]] == [metrics_port]
    # The query service: the CLI's `api`, listening where Compose publishes it, checked by
    # its readiness route.
    api = services["api"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[api["command"][0]] == "rag_pipeline.operations.cli:run"
    assert api["command"][1:] == ["api"]
    # The one-shot steps: the pipeline's processes start after both succeeded.
    assert services["migrate"]["command"] == ["rag-pipeline", "migrate"]
    assert services["topics"]["command"] == ["rag-pipeline", "kafka", "ensure-topics"]
    for name in ("code", "api"):
        assert services[name]["depends_on"]["migrate"]["condition"] == \
            "service_completed_successfully"
    assert services["code"]["depends_on"]["topics"]["condition"] == \
        "service_completed_successfully"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert dockerfile_instructions("HEALTHCHECK") == []  # run containers would inherit it
    # Run containers are kept after they exit and write compute logs the webserver reads.
    launcher = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    assert launcher["run_launcher"]["config"]["container_kwargs"]["auto_remove"] is False
    [logs_volume] = launcher["run_launcher"]["config"]["container_kwargs"]["volumes"]
    volume, mount = logs_volume.split(":")
    assert mount == launcher["compute_logs"]["config"]["base_dir"]
    assert compose["volumes"]["compute_logs"]["name"] == volume
    assert f"compute_logs:{mount}" in " ".join(
        str(v) for v in compose_file()["services"]["webserver"]["volumes"])
    assert [p["target"] for p in api["ports"]] == [int(api["environment"]["API_PORT"])]
    assert f":{api['environment']['API_PORT']}/readyz" in " ".join(api["healthcheck"]["test"])
    # Runs get containers on the Compose network.
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    network = instance["run_launcher"]["config"]["network"]
    assert network in {n.get("name") for n in compose["networks"].values()}


def test_every_variable_is_a_setting_and_reaches_the_run_containers(compose):
    settings_names = {env_name(f) for f in Settings.model_fields}
    launcher = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())["run_launcher"]["config"]
    for name in PIPELINE_SERVICES:
        environment = compose["services"][name]["environment"]
        unknown = set(environment) - settings_names - {"DAGSTER_CURRENT_IMAGE"}
        assert not unknown, f"{name}: {unknown} are not settings"
        # What the code server has, every run container gets (DockerRunLauncher env_vars).
        if name == "code":
            assert set(launcher["env_vars"]) == set(environment) - {"DAGSTER_CURRENT_IMAGE"}
        # The values Compose resolves are valid settings.
        Settings(_env_file=None, **{k.lower(): v for k, v in environment.items()
                                    if k != "DAGSTER_CURRENT_IMAGE"})


def test_the_deployment_instance_loads_with_the_docker_run_launcher(stack, settings, tmp_path,
                                                                   unique, monkeypatch):
    import dagster as dg

    dagster_db = f"deploy_{unique}"
    create_databases(settings, f"deploy_pipeline_{unique}", dagster_db)
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    for key, value in {"POSTGRES_HOST": settings.postgres_host,
                       "POSTGRES_PORT": str(settings.postgres_port),
                       "POSTGRES_USER": settings.postgres_user,
                       "DAGSTER_POSTGRES_DB": dagster_db}.items():
        monkeypatch.setenv(key, value)
    try:
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            launcher = instance.run_launcher
            assert type(launcher).__name__ == "DockerRunLauncher"
            assert launcher.networks == ["rag_pipeline"]
            assert "POSTGRES_PASSWORD" in launcher.env_vars
            limits = instance.get_concurrency_config().run_queue_config
            assert limits.max_concurrent_runs == 4
            assert [(t["key"], t["limit"]) for t in limits.tag_concurrency_limits] == [
                ("dagster/partition", 1)]
            assert instance.get_runs() == []  # its storage answers
    finally:
        drop_databases(settings, f"deploy_pipeline_{unique}", dagster_db)


def test_the_image_install_serves_the_code_location_and_answers_its_health_check(
        stack, settings, tmp_path):
    """The Dockerfile's RUN pip installs, in order, in a clean virtual environment (pip's cache
    allowed) inside the build context .dockerignore leaves; then the launchers' packages
    import, the workshop is absent, the daemon's liveness check runs, and the image's CMD
    serves the code location, answering the Compose file's health check."""
    venv = tmp_path / "image"
    context = build_context(tmp_path / "context")
    assert not (context / "rag_pipeline" / "local").exists()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installs = [run.split("&&")[0].strip() for run in dockerfile_instructions("RUN")]
    assert [shlex.split(i)[:2] for i in installs] == [["pip", "install"]] * 2
    assert "--require-hashes" in installs[0]
    for install in installs:
        argv = [a for a in shlex.split(install) if a != "--no-cache-dir"]
        done = subprocess.run([str(venv / "bin" / "pip"), *argv[1:]], cwd=context,
                              timeout=1200, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    python = str(venv / "bin" / "python")
    probe = ("import importlib.util, dagster_docker, dagster_k8s, dagster_postgres, "
             "rag_pipeline.definitions, rag_pipeline.observability.exporter, "
             "rag_pipeline.serving.server; "
             "print(importlib.util.find_spec('rag_pipeline.local'))")
    port = str(free_port())
    command = image_command()
    command[command.index("-p") + 1] = port
    check = health_check()
    check[check.index("-p") + 1] = port
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "RAG_PIPELINE_ENV_FILE": "",
           "DAGSTER_HOME": str(tmp_path), "POSTGRES_HOST": settings.postgres_host,
           "POSTGRES_PORT": str(settings.postgres_port),
           "POSTGRES_PASSWORD": settings.postgres_password.get_secret_value(),
           "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers}
    imported = subprocess.run([python, "-c", probe], env=env, capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
    assert imported.returncode == 0 and imported.stdout.strip() == "None", imported.stderr
    commands = subprocess.run([str(venv / "bin" / "rag-pipeline"), "--help"], env=env,
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert {"migrate", "kafka", "api"} <= set(commands.stdout.split()), commands.stderr
    assert "stack" not in commands.stdout.split()
    liveness = subprocess.run([str(venv / "bin" / "dagster-daemon"), "liveness-check"],
                              env=env, capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)
    # No daemon runs here: the check itself runs and says so (no import error).
    assert liveness.returncode == 1 and "Traceback" not in liveness.stderr, liveness.stderr
    assert subprocess.run(check, env=env, capture_output=True, timeout=60).returncode != 0
    server = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if subprocess.run(check, env=env, capture_output=True, timeout=60).returncode == 0:
                break
            assert server.poll() is None, server.stdout.read().decode()[-3000:]
            time.sleep(2)
        else:
            pytest.fail("the image's command did not answer its health check in 180 s")
    finally:
        server.terminate()
        server.wait(30)
