"""The Kubernetes deployment, checked as far as a machine without a cluster or Dagster's
chart allows (docs/deployment.md says what was and was not run):

- deploy/helm/values.yaml, the values for Dagster's official chart: what they decide for a
  fresh install (the Secret is the operator's, TLS, no superuser, kept run Jobs, one
  concurrency idiom, Kafka's SASL and CA). The chart's own templates are neither rendered
  (the chart is on no registry reachable here) nor re-implemented;
- deploy/helm/rag-pipeline, our own chart, rendered and linted by a real Helm: the release
  steps as hooks, the exporter with a Dagster instance of its own (loaded against the test
  PostgreSQL), the query service, all named after the release;
- every resources block was written by a benchmark and is a valid quantity.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from rag_pipeline.local.stack.deployment import free_port
from rag_pipeline.settings import Settings, env_name
from tests.helpers import json_log_lines
from tests.test_metrics import tool

ROOT = Path(__file__).resolve().parent.parent
HELM = ROOT / "deploy" / "helm"
CHART = HELM / "rag-pipeline"
VALUES = yaml.safe_load((HELM / "values.yaml").read_text())
OURS = yaml.safe_load((CHART / "values.yaml").read_text())
RELEASE, NAMESPACE = "rag-pipeline", "rag-pipeline"  # as the values' header installs it
TOOLS = ROOT / ".stack-test" / "tools"
SETTINGS = {env_name(name): field for name, field in Settings.model_fields.items()}
SECRET_SETTINGS = {name for name, field in SETTINGS.items()
                   if SecretStr in getattr(field.annotation, "__args__", (field.annotation,))}
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def user_deployment() -> dict[str, Any]:
    [deployment] = VALUES["dagster-user-deployments"]["deployments"]
    return deployment


@functools.cache
def stand_in_ca() -> str:
    """One file for every check of this module (removed when the test process exits)."""
    ca = tempfile.NamedTemporaryFile("w", suffix=".crt", delete=False)  # noqa: SIM115
    ca.write("stand-in for the mounted CA certificate\n")
    ca.close()
    atexit.register(os.unlink, ca.name)
    return ca.name


def settings_from(env: dict[str, str]) -> Settings:
    """The settings a process with `env` (and the Secrets) would load; errors if invalid.
    Kafka's CA file is the pod's mount: here a stand-in file of the same name."""
    values = {k.lower(): v for k, v in env.items() if k in SETTINGS}
    if values.get("kafka_ssl_ca_location"):
        values["kafka_ssl_ca_location"] = stand_in_ca()
    return Settings(_env_file=None, postgres_password="from-the-secret",
                    kafka_sasl_password="from-the-secret", **values)


@pytest.fixture(scope="module")
def helm() -> str:
    """Helm on PATH (scripts/install-test-services), or built here by scripts/install-helm."""
    found = shutil.which("helm") or (TOOLS / "helm" if (TOOLS / "helm").exists() else None)
    if found is None:
        subprocess.run([str(ROOT / "scripts" / "install-helm"), str(TOOLS)], check=True,
                       timeout=1500)
        found = TOOLS / "helm"
    return str(found)


def render(helm: str, *overrides: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Our chart as `helm template` renders it for RELEASE: {(kind, name): manifest}."""
    sets = [arg for value in overrides for arg in ("--set", value)]
    out = subprocess.run([helm, "template", RELEASE, str(CHART), "-n", NAMESPACE, *sets],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return {(m["kind"], m["metadata"]["name"]): m
            for m in yaml.safe_load_all(out.stdout) if m}


def container_of(manifest: dict[str, Any]) -> dict[str, Any]:
    [container] = manifest["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def test_the_values_install_on_a_fresh_cluster():
    """What `helm install` of Dagster's chart needs from these values: the storage
    password's Secret is the operator's, so the chart must not generate one of the same
    name; TLS to PostgreSQL for Dagster's storage as for the pipeline; no superuser."""
    assert VALUES["global"]["postgresqlSecretName"]
    assert VALUES["generatePostgresqlPasswordSecret"] is False
    pg = VALUES["postgresql"]
    assert pg["enabled"] is False and pg["postgresqlParams"]["sslmode"] == "require"
    env = {item["name"]: item["value"] for item in user_deployment()["env"]}
    assert env["POSTGRES_SSLMODE"] == "require"
    assert "postgres" not in {pg["postgresqlUsername"], env["POSTGRES_USER"]}
    # A finished run's Job stays for inspection.
    k8s = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
    assert k8s["runK8sConfig"]["jobSpecConfig"]["ttlSecondsAfterFinished"] >= 3600
    # No key the chart does not know (it would be ignored: nothing renders it).
    assert "extraManifests" not in VALUES


def test_kafka_sasl_and_its_ca_reach_the_code_server_and_runs():
    deployment = user_deployment()
    env = {item["name"]: item["value"] for item in deployment["env"]}
    settings = settings_from(env)
    assert settings.kafka_security_protocol == "SASL_SSL" and settings.kafka_sasl_username
    [mount] = deployment["volumeMounts"]
    assert env["KAFKA_SSL_CA_LOCATION"].startswith(mount["mountPath"] + "/")
    [volume] = deployment["volumes"]
    assert volume["name"] == mount["name"] and volume["secret"]["secretName"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]  # runs get env and mounts


def test_run_concurrency_is_the_instance_idiom_of_every_deployment():
    """One idiom: the instance's `concurrency:` (Dagster's chart refuses it beside the run
    coordinator's own limits), the same as both dagster.yaml's."""
    assert VALUES["concurrency"]["enabled"]
    runs = VALUES["concurrency"]["runs"]
    queued = VALUES["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert not {"maxConcurrentRuns", "tagConcurrencyLimits"} & set(queued)
    for path in (ROOT / "dagster.yaml", ROOT / "deploy" / "docker" / "dagster.yaml"):
        instance = yaml.safe_load(path.read_text())
        assert (runs["maxConcurrentRuns"], runs["tagConcurrencyLimits"]) == (
            instance["concurrency"]["runs"]["max_concurrent_runs"],
            instance["concurrency"]["runs"]["tag_concurrency_limits"]), path
        assert queued["dequeueIntervalSeconds"] == \
            instance["run_queue"]["dequeue_interval_seconds"], path
        for kind in ("sensor", "schedule"):
            assert VALUES["retention"][kind]["purgeAfterDays"] == \
                instance["retention"][kind]["purge_after_days"], path


def test_the_user_deployment_serves_the_image_code_location_with_settings_only():
    deployment = user_deployment()
    tool_dagster = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]
    assert deployment["dagsterApiGrpcArgs"] == [
        "-m", tool_dagster["module_name"], "--location-name", tool_dagster["code_location_name"],
        "--log-format", "json"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f'"-p", "{deployment["port"]}"' in dockerfile  # the image's own CMD port
    uid = re.search(r"--uid (\d+)", dockerfile).group(1)
    assert deployment["podSecurityContext"]["runAsUser"] == int(uid)
    env = {item["name"]: item["value"] for item in deployment["env"]}
    assert set(env) <= set(SETTINGS), set(env) - set(SETTINGS)
    assert not set(env) & SECRET_SETTINGS, "secrets come from the Secret, never from values"
    settings_from(env)
    assert [s["name"] for s in deployment["envSecrets"]] == ["rag-pipeline"]


def answering(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_webserver_logs_json_from_the_values_environment(tmp_path):
    """The chart starts the webserver with its own command; the variable in the values is
    what makes its lines JSON (checked on the real dagster-webserver)."""
    env = {**os.environ, **VALUES["dagsterWebserver"]["env"], "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    log = tmp_path / "webserver.log"
    port = free_port()
    with log.open("wb") as out:
        webserver = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1",
             "-p", str(port), "--empty-workspace"], env=env, stdout=out,
            stderr=subprocess.STDOUT)
    try:
        # Serving, not only announced: a SIGTERM while uvicorn still starts ends in a bare
        # traceback (uvicorn's, outside any logging this chart's command can configure).
        deadline = time.monotonic() + 120
        while not answering(f"http://127.0.0.1:{port}/server_info"):
            assert webserver.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
    finally:
        webserver.terminate()
        webserver.wait(30)
    assert any(f":{port}" in e["event"] for e in json_log_lines(log))


def test_the_secret_holds_exactly_the_secret_settings():
    header = (HELM / "values.yaml").read_text().split("\n\n", 1)[0]
    secret = header.split("create secret generic rag-pipeline ", 1)[1].split("kubectl", 1)[0]
    assert set(re.findall(r"--from-literal=(\w+)=", secret)) == SECRET_SETTINGS
    assert OURS["secretName"] == "rag-pipeline"
    assert f"create secret generic {OURS['kafkaCaSecretName']} --from-file=ca.crt=" in header


def test_our_chart_lints_and_every_container_gets_the_settings_the_code_expects(helm):
    lint = subprocess.run([helm, "lint", "--strict", str(CHART)], capture_output=True,
                          text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    rendered = render(helm)
    user_env = {item["name"]: item["value"] for item in user_deployment()["env"]}
    image = f"{OURS['image']['repository']}:{OURS['image']['tag']}"
    assert image == "{repository}:{tag}".format(**user_deployment()["image"])
    workloads = [m for (kind, _), m in rendered.items() if kind in ("Job", "Deployment")]
    assert len(workloads) == 4
    for manifest in workloads:
        name = manifest["metadata"]["name"]
        assert name.startswith(f"{RELEASE}-"), name  # named after the release
        container = container_of(manifest)
        assert container["image"] == image
        env = env_of(container)
        assert set(env) <= set(SETTINGS) | {"DAGSTER_HOME"}, name
        assert not set(env) & SECRET_SETTINGS, name
        settings_from(env)
        # The same settings as the code server and runs of Dagster's release.
        shared = set(env) & set(user_env)
        assert {k: env[k] for k in shared} == {k: user_env[k] for k in shared}, name
        assert [s["secretRef"]["name"] for s in container["envFrom"]] == ["rag-pipeline"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert env["KAFKA_SSL_CA_LOCATION"].startswith(mounts["kafka-ca"] + "/"), name


def test_the_release_steps_are_hooks_that_migrate_then_ensure_the_topics(helm):
    rendered = render(helm)
    steps = {}
    for (kind, name), manifest in rendered.items():
        if kind != "Job":
            continue
        hooks = manifest["metadata"]["annotations"]
        assert set(hooks["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}, name
        command = container_of(manifest)["command"]
        assert SCRIPTS[command[0]] == "rag_pipeline.operations.cli:run"
        steps[tuple(command[1:])] = int(hooks["helm.sh/hook-weight"])
        assert manifest["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert steps == {("migrate",): 0, ("kafka", "ensure-topics"): 1}


def test_the_exporter_reads_dagster_storage_through_an_instance_of_its_own(
        helm, stack, settings, tmp_path):
    """Its ConfigMap is named after the release and holds a dagster.yaml that a real
    Dagster loads against a real PostgreSQL (rendered with the test server's address)."""
    import dagster as dg

    from rag_pipeline.observability.exporter import HEALTH_DEADLINE_SECONDS

    rendered = render(helm, f"dagsterStorage.host={settings.postgres_host}",
                      f"dagsterStorage.port={settings.postgres_port}",
                      f"dagsterStorage.username={settings.postgres_user}",
                      f"dagsterStorage.database={settings.dagster_postgres_db}",
                      "dagsterStorage.params.sslmode=disable")
    deployment = rendered[("Deployment", f"{RELEASE}-exporter")]
    container = container_of(deployment)
    assert SCRIPTS[container["command"][0]] == "rag_pipeline.observability.exporter:main"
    env = env_of(container)
    [volume] = [v for v in deployment["spec"]["template"]["spec"]["volumes"]
                if "configMap" in v]
    config_map = rendered[("ConfigMap", volume["configMap"]["name"])]
    assert config_map["metadata"]["name"] == f"{RELEASE}-exporter-instance"
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["mountPath"] == f"{env['DAGSTER_HOME']}/dagster.yaml"
    [password] = [e for e in container["env"] if e["name"] == "DAGSTER_PG_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {
        "name": VALUES["global"]["postgresqlSecretName"], "key": "postgresql-password"}
    (tmp_path / "dagster.yaml").write_text(config_map["data"]["dagster.yaml"])
    os.environ["DAGSTER_PG_PASSWORD"] = settings.postgres_password.get_secret_value()
    try:
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            assert instance.get_runs_count() >= 0
    finally:
        del os.environ["DAGSTER_PG_PASSWORD"]
    # Its storage is the one Dagster's release writes (../values.yaml's postgresql).
    pg, storage = VALUES["postgresql"], OURS["dagsterStorage"]
    assert (storage["host"], storage["port"], storage["username"], storage["database"],
            storage["params"]) == (pg["postgresqlHost"], pg["service"]["port"],
                                   pg["postgresqlUsername"], pg["postgresqlDatabase"],
                                   pg["postgresqlParams"])
    port = int(env["METRICS_PORT"])
    assert [p["containerPort"] for p in container["ports"]] == [port]
    service = rendered[("Service", f"{RELEASE}-exporter")]
    assert service["spec"]["ports"][0]["port"] == port
    assert service["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert container["readinessProbe"]["timeoutSeconds"] > HEALTH_DEADLINE_SECONDS
    scrape = yaml.safe_load((HELM / "prometheus-scrape.yml").read_text())
    [job] = scrape["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [
        f"{service['metadata']['name']}.{NAMESPACE}.svc:{port}"]
    check = subprocess.run([tool("promtool"), "check", "config", "prometheus-scrape.yml"],
                           cwd=HELM, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_query_service_agrees_with_the_code(helm):
    rendered = render(helm)
    deployment = rendered[("Deployment", f"{RELEASE}-api")]
    container = container_of(deployment)
    assert SCRIPTS[container["command"][0]] == "rag_pipeline.operations.cli:run"
    assert container["command"][1:] == ["api"]
    env = env_of(container)
    port = int(env["API_PORT"])
    assert [p["containerPort"] for p in container["ports"]] == [port]
    service = rendered[("Service", f"{RELEASE}-api")]
    assert service["spec"]["ports"][0]["port"] == port
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert "API_TOKENS" not in env  # from the Secret, never from the values
    paths = {container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")}
    assert paths == {"/readyz", "/healthz"}


@pytest.mark.parametrize("path", ["values.yaml", "rag-pipeline/values.yaml"])
def test_every_resources_block_was_measured(path):
    from kubernetes.utils import parse_quantity

    text = (HELM / path).read_text()
    blocks = re.findall(r"# footprint:begin (\w+)\n(.*?)# footprint:end", text, re.S)
    assert blocks
    for role, block in blocks:
        assert re.search(r"# python -m bench.(footprint|serving), commit [0-9a-f]{12}",
                         block), role
        resources = yaml.safe_load(block)["resources"]
        for key in ("cpu", "memory"):
            request = parse_quantity(resources["requests"][key])
            limit = parse_quantity(resources["limits"][key])
            assert 0 < request <= limit, (role, key)
