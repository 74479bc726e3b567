"""The Kubernetes deployment (deploy/helm/: values for Dagster's official chart, the exporter's
manifest, Prometheus's scrape config), checked as far as a machine without a cluster, Helm or
the chart allows (docs/deployment.md says what was and was not run):

- what the values decide for a fresh install (the Secret is the operator's, TLS, no
  superuser, kept run Jobs) and the release hooks (migrate, ensure-topics) that are ours;
  the chart's own templates are not re-implemented here, nor rendered (no Helm, no chart);
- the user deployment, the Secret, the exporter and the scrape config agree with the code;
- every resources block was written by the footprint benchmark and is a valid quantity.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from rag_pipeline.settings import Settings, env_name
from tests.test_metrics import tool

ROOT = Path(__file__).resolve().parent.parent
HELM = ROOT / "deploy" / "helm"
VALUES = yaml.safe_load((HELM / "values.yaml").read_text())
RELEASE, NAMESPACE = "dagster", "rag-pipeline"  # as the values' header installs it
SETTINGS = {env_name(name): field for name, field in Settings.model_fields.items()}
SECRET_SETTINGS = {name for name, field in SETTINGS.items()
                   if SecretStr in getattr(field.annotation, "__args__", (field.annotation,))}


def user_deployment() -> dict[str, Any]:
    [deployment] = VALUES["dagster-user-deployments"]["deployments"]
    return deployment


def test_the_values_install_on_a_fresh_cluster():
    """What `helm install` needs from these values (the chart itself is not rendered here:
    docs/deployment.md): the storage password's Secret is the operator's, so the chart must
    not generate one of the same name; TLS to PostgreSQL for Dagster's storage as for the
    pipeline; no superuser anywhere."""
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


def test_the_release_hooks_migrate_and_ensure_the_topics_before_the_code():
    jobs = {m["metadata"]["name"]: m for m in VALUES["extraManifests"]}
    deployment = user_deployment()
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    commands = {}
    for name, job in jobs.items():
        assert job["kind"] == "Job"
        hooks = job["metadata"]["annotations"]
        assert set(hooks["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}, name
        [container] = job["spec"]["template"]["spec"]["containers"]
        assert container["image"] == image
        assert scripts[container["command"][0]] == "rag_pipeline.operations.cli:run"
        commands[tuple(container["command"][1:])] = int(hooks["helm.sh/hook-weight"])
        env = {item["name"]: item["value"] for item in container["env"]}
        assert set(env) <= set(SETTINGS)
        assert [s["secretRef"]["name"] for s in container["envFrom"]] == ["rag-pipeline"]
        Settings(_env_file=None, postgres_password="from-the-secret",
                 **{k.lower(): v for k, v in env.items()})
        if container["command"][1] == "migrate":  # the database the code server uses
            user_env = {item["name"]: item["value"] for item in deployment["env"]}
            assert {k: env[k] for k in env if k.startswith("POSTGRES_")} == {
                k: v for k, v in user_env.items() if k.startswith("POSTGRES_")}
    assert commands == {("migrate",): 0, ("kafka", "ensure-topics"): 1}


def test_the_per_collection_limit_is_the_one_of_every_deployment():
    queued = VALUES["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    for path in (ROOT / "dagster.yaml", ROOT / "deploy" / "docker" / "dagster.yaml"):
        runs = yaml.safe_load(path.read_text())["concurrency"]["runs"]
        assert (queued["maxConcurrentRuns"], queued["tagConcurrencyLimits"]) == (
            runs["max_concurrent_runs"], runs["tag_concurrency_limits"]), path
        dequeue = yaml.safe_load(path.read_text())["run_queue"]["dequeue_interval_seconds"]
        assert queued["dequeueIntervalSeconds"] == dequeue, path
        retention = yaml.safe_load(path.read_text())["retention"]
        for kind in ("sensor", "schedule"):
            assert VALUES["retention"][kind]["purgeAfterDays"] == \
                retention[kind]["purge_after_days"], path


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
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]  # runs get env and Secret
    env = {item["name"]: item["value"] for item in deployment["env"]}
    assert set(env) <= set(SETTINGS), set(env) - set(SETTINGS)
    assert not set(env) & SECRET_SETTINGS, "secrets come from the Secret, never from values"
    Settings(_env_file=None, postgres_password="from-the-secret",
             **{k.lower(): v for k, v in env.items()})
    assert [s["name"] for s in deployment["envSecrets"]] == ["rag-pipeline"]


def test_the_secret_holds_exactly_the_secret_settings():
    header = (HELM / "values.yaml").read_text().split("\n\n", 1)[0]
    secret = header.split("create secret generic rag-pipeline", 1)[1].split("kubectl", 1)[0]
    assert set(re.findall(r"--from-literal=(\w+)=", secret)) == SECRET_SETTINGS


def test_the_exporter_and_its_scrape_config_agree_with_the_code():
    deployment, service = yaml.safe_load_all((HELM / "exporter.yaml").read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[container["command"][0]] == "rag_pipeline.observability.exporter:main"
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert set(env) - {"DAGSTER_HOME", "DAGSTER_PG_PASSWORD"} <= set(SETTINGS)
    port = int(env["METRICS_PORT"])
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert service["spec"]["ports"][0]["port"] == port
    assert service["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    from rag_pipeline.observability.exporter import HEALTH_DEADLINE_SECONDS

    assert container["readinessProbe"]["timeoutSeconds"] > HEALTH_DEADLINE_SECONDS
    [volume] = deployment["spec"]["template"]["spec"]["volumes"]
    assert volume["configMap"]["name"] == f"{RELEASE}-instance"
    [mount] = container["volumeMounts"]
    assert mount["mountPath"] == f"{env['DAGSTER_HOME']}/dagster.yaml"
    scrape = yaml.safe_load((HELM / "prometheus-scrape.yml").read_text())
    [job] = scrape["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [
        f"{service['metadata']['name']}.{NAMESPACE}.svc:{port}"]
    check = subprocess.run([tool("promtool"), "check", "config", "prometheus-scrape.yml"],
                           cwd=HELM, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_query_service_manifest_agrees_with_the_code():
    deployment, service = yaml.safe_load_all((HELM / "api.yaml").read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[container["command"][0]] == "rag_pipeline.operations.cli:run"
    assert container["command"][1:] == ["api"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert set(env) <= set(SETTINGS)
    port = int(env["API_PORT"])
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert service["spec"]["ports"][0]["port"] == port
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # The tokens come from the Secret, never from the manifest.
    assert "API_TOKENS" not in env
    assert [s["secretRef"]["name"] for s in container["envFrom"]] == ["rag-pipeline"]
    paths = {container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")}
    assert paths == {"/readyz", "/healthz"}


@pytest.mark.parametrize("path", ["values.yaml", "exporter.yaml", "api.yaml"])
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
