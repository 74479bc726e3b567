"""The Kubernetes deployment (deploy/helm/: values for Dagster's official chart, the exporter's
manifest, Prometheus's scrape config), checked as far as a machine without a cluster, Helm or
the chart allows (docs/deployment.md says what was and was not run):

- the dagster.yaml the chart makes from these values (its instance template, mirrored below
  for every key the values set; a key the mirror does not know fails the test) loads as a
  real Dagster instance on PostgreSQL, building and validating dagster-k8s's
  K8sRunLauncher and the queued run coordinator with Dagster's config machinery;
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

from rag_pipeline.local.stack.deployment import create_databases, drop_databases
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


def _only(values: dict[str, Any], known: set[str], where: str) -> dict[str, Any]:
    unknown = set(values) - known
    assert not unknown, f"{where}: {unknown} not mirrored from the chart's templates"
    return values


def chart_instance(values: dict[str, Any]) -> dict[str, Any]:
    """dagster.yaml as the chart's configmap-instance.yaml renders it from these values."""
    pg = _only(values["postgresql"], {"enabled", "postgresqlHost", "postgresqlUsername",
                                      "postgresqlDatabase", "postgresqlScheme",
                                      "postgresqlParams", "service"}, "postgresql")
    postgres_db = {"username": pg["postgresqlUsername"], "password": {"env": "DAGSTER_PG_PASSWORD"},
                   "hostname": pg["postgresqlHost"], "db_name": pg["postgresqlDatabase"],
                   "port": pg["service"]["port"], "params": pg["postgresqlParams"],
                   "scheme": pg["postgresqlScheme"]}
    storage = {"config": {"postgres_db": postgres_db}}
    k8s = _only(values["runLauncher"]["config"]["k8sRunLauncher"], {
        "imagePullPolicy", "loadInclusterConfig", "envConfigMaps", "envSecrets", "envVars",
        "volumeMounts", "volumes", "failPodOnRunFailure", "runK8sConfig"}, "k8sRunLauncher")
    launcher: dict[str, Any] = {
        "load_incluster_config": k8s["loadInclusterConfig"], "job_namespace": NAMESPACE,
        "image_pull_policy": k8s["imagePullPolicy"], "service_account_name": RELEASE,
        "dagster_home": {"env": "DAGSTER_HOME"},
        "instance_config_map": {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
        "postgres_password_secret": {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
        "env_config_maps": [{"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"}] + [
            c["name"] for c in k8s["envConfigMaps"]],
        "env_secrets": [s["name"] for s in k8s["envSecrets"]]}
    for key, chart_key in (("envVars", "env_vars"), ("volumeMounts", "volume_mounts"),
                           ("volumes", "volumes")):
        if k8s[key]:
            launcher[chart_key] = k8s[key]
    if k8s.get("failPodOnRunFailure"):
        launcher["fail_pod_on_run_failure"] = True
    run_k8s = _only(k8s.get("runK8sConfig", {}), {"containerConfig"}, "runK8sConfig")
    if run_k8s:
        launcher["run_k8s_config"] = {"container_config": run_k8s["containerConfig"]}
    daemon = _only(values["dagsterDaemon"], {"enabled", "resources", "runCoordinator",
                                             "runMonitoring", "sensors"}, "dagsterDaemon")
    queued = _only(daemon["runCoordinator"]["config"]["queuedRunCoordinator"],
                   {"maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds"},
                   "queuedRunCoordinator")
    monitoring = daemon["runMonitoring"]
    return {
        "schedule_storage": {"module": "dagster_postgres.schedule_storage",
                             "class": "PostgresScheduleStorage", **storage},
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage",
                        **storage},
        "event_log_storage": {"module": "dagster_postgres.event_log",
                              "class": "PostgresEventLogStorage", **storage},
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher},
        "run_coordinator": {"module": "dagster._core.run_coordinator",
                            "class": "QueuedRunCoordinator",
                            "config": {"max_concurrent_runs": queued["maxConcurrentRuns"],
                                       "tag_concurrency_limits": queued["tagConcurrencyLimits"],
                                       "dequeue_interval_seconds":
                                           queued["dequeueIntervalSeconds"]}},
        "run_monitoring": {"enabled": monitoring["enabled"],
                           "start_timeout_seconds": monitoring["startTimeoutSeconds"],
                           "cancel_timeout_seconds": monitoring["cancelTimeoutSeconds"],
                           "poll_interval_seconds": monitoring["pollIntervalSeconds"],
                           "free_slots_after_run_end_seconds":
                               monitoring["freeSlotsAfterRunEndSeconds"]},
        "sensors": {"use_threads": daemon["sensors"]["useThreads"],
                    "num_workers": daemon["sensors"]["numWorkers"]},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
        **({"retention": {kind: {"purge_after_days": _only(
            values["retention"][kind], {"purgeAfterDays"}, f"retention.{kind}")["purgeAfterDays"]}
            for kind in ("sensor", "schedule") if kind in values["retention"]}}
           if _only(values["retention"], {"enabled", "sensor", "schedule"}, "retention")[
               "enabled"] else {}),
    }


KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: test, user: {token: not-a-real-token}}]
contexts: [{name: test, context: {cluster: test, user: test, namespace: rag-pipeline}}]
current-context: test
"""


def test_the_chart_instance_loads_with_the_k8s_run_launcher(stack, settings, tmp_path, unique,
                                                            monkeypatch):
    import dagster as dg

    config = chart_instance(VALUES)
    # Outside a cluster: this test's PostgreSQL, and a kubeconfig instead of the pod's
    # service account (loading it contacts no server).
    for storage in ("run_storage", "event_log_storage", "schedule_storage"):
        config[storage]["config"]["postgres_db"].update(
            hostname=settings.postgres_host, port=settings.postgres_port,
            username=settings.postgres_user, db_name=f"helm_{unique}")
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    config["run_launcher"]["config"].update(load_incluster_config=False,
                                            kubeconfig_file=str(tmp_path / "kubeconfig"))
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    # What the chart sets on the daemon's and webserver's pods.
    for key, value in {"DAGSTER_PG_PASSWORD": settings.postgres_password.get_secret_value(),
                       "DAGSTER_HOME": "/opt/dagster/dagster_home",
                       "DAGSTER_K8S_INSTANCE_CONFIG_MAP": f"{RELEASE}-instance",
                       "DAGSTER_K8S_PG_PASSWORD_SECRET": VALUES["global"]["postgresqlSecretName"],
                       "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP": f"{RELEASE}-pipeline-env"
                       }.items():
        monkeypatch.setenv(key, value)
    create_databases(settings, f"helm_pipeline_{unique}", f"helm_{unique}")
    try:
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            launcher = instance.run_launcher
            assert type(launcher).__name__ == "K8sRunLauncher"
            assert launcher.job_namespace == NAMESPACE
            assert launcher.env_secrets == ["rag-pipeline"]
            resources = VALUES["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"][
                "containerConfig"]["resources"]
            assert launcher.run_k8s_config["container_config"]["resources"] == resources
            limits = instance.get_concurrency_config().run_queue_config
            assert limits.max_concurrent_runs == 4
            assert [(t["key"], t["value"], t["limit"]) for t in limits.tag_concurrency_limits] == [
                ("dagster/partition", {"applyLimitPerUniqueValue": True}, 1)]
            assert instance.run_monitoring_enabled
            assert instance.get_runs() == []  # its storage answers
            from dagster._core.definitions.run_request import InstigatorType
            from dagster._core.scheduler.instigation import TickStatus

            ticks = instance.get_tick_retention_settings(InstigatorType.SENSOR)
            assert ticks[TickStatus.SKIPPED] == 1 and ticks[TickStatus.SUCCESS] == 7
    finally:
        drop_databases(settings, f"helm_pipeline_{unique}", f"helm_{unique}")


def test_the_per_collection_limit_is_the_one_of_every_deployment():
    queued = VALUES["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    for path in (ROOT / "dagster.yaml", ROOT / "deploy" / "docker" / "dagster.yaml"):
        runs = yaml.safe_load(path.read_text())["concurrency"]["runs"]
        assert (queued["maxConcurrentRuns"], queued["tagConcurrencyLimits"]) == (
            runs["max_concurrent_runs"], runs["tag_concurrency_limits"]), path
        dequeue = yaml.safe_load(path.read_text())["run_queue"]["dequeue_interval_seconds"]
        assert queued["dequeueIntervalSeconds"] == dequeue, path
        assert chart_instance(VALUES)["retention"] == yaml.safe_load(path.read_text())[
            "retention"], path


def test_the_user_deployment_serves_the_image_code_location_with_settings_only():
    deployment = user_deployment()
    tool_dagster = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]
    assert deployment["dagsterApiGrpcArgs"] == [
        "-m", tool_dagster["module_name"], "--location-name", tool_dagster["code_location_name"]]
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
    assert scripts[container["command"][0]] == "rag_pipeline.local.cli:main"
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
