"""The adapter that holds every use of Dagster beyond its public API
(`rag_pipeline/dagster_internals.py`), called against real Dagster instances: a Dagster
upgrade that moves one of these fails here, by name, before the code location breaks.

Setting up ticks and heartbeats needs Dagster's own record types: they are imported here,
in the test, and nowhere in the package."""

from __future__ import annotations

import ast
import logging
import time
from pathlib import Path

import dagster as dg

from rag_pipeline import dagster_internals

PACKAGE = Path(__file__).resolve().parent.parent / "rag_pipeline"


@dg.op
def noop() -> None:
    pass


@dg.job
def noop_job() -> None:
    noop()


@dg.op
def says_hello(context) -> None:  # Dagster reads the annotation: none here
    context.log.info('{"event": "hello"}')


@dg.job(executor_def=dg.in_process_executor)
def in_process_job() -> None:
    says_hello()


def test_a_run_reported_failed_is_failed_and_counted():
    with dg.instance_for_test() as instance:
        run = instance.create_run_for_job(job_def=noop_job)
        dagster_internals.report_run_failed(instance, run, "declared dead by the test")
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        failed = dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])
        assert dagster_internals.count_runs(instance, failed) == 1
        assert dagster_internals.count_runs(instance, dg.RunsFilter(job_name="other")) == 0


def test_the_run_queue_limit_is_read_from_the_instance():
    limit = {"concurrency": {"runs": {"max_concurrent_runs": 4}}}
    with dg.instance_for_test(overrides=limit) as instance:
        assert dagster_internals.max_concurrent_runs(instance) == 4


def test_daemon_heartbeats_are_read_as_times():
    from dagster._daemon.types import DaemonHeartbeat

    with dg.instance_for_test() as instance:
        assert dagster_internals.daemon_heartbeats(instance) == {}
        beat = time.time()
        instance.add_daemon_heartbeat(DaemonHeartbeat(beat, "SENSOR", None, None))
        assert dagster_internals.daemon_heartbeats(instance) == {"SENSOR": beat}


def test_the_last_tick_of_a_sensor_is_found_by_its_name():
    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.remote_origin import (
        RegisteredCodeLocationOrigin,
        RemoteInstigatorOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        TickData,
        TickStatus,
    )

    repository = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("test"), "repo")
    origin = RemoteInstigatorOrigin(repository, "indexing_jobs_sensor")
    with dg.instance_for_test() as instance:
        assert dagster_internals.last_sensor_tick(instance, "indexing_jobs_sensor") is None
        instance.add_instigator_state(InstigatorState(origin, InstigatorType.SENSOR,
                                                      InstigatorStatus.RUNNING))
        for stamp, cursor in ((100.0, "first"), (200.0, "latest")):
            instance.create_tick(TickData(
                instigator_origin_id=origin.get_id(), instigator_name="indexing_jobs_sensor",
                instigator_type=InstigatorType.SENSOR, status=TickStatus.SUCCESS,
                timestamp=stamp, cursor=cursor, selector_id=origin.get_selector().get_id(),
                run_ids=[]))
        tick = dagster_internals.last_sensor_tick(instance, "indexing_jobs_sensor")
        assert (tick.timestamp, tick.cursor) == (200.0, "latest")
        assert dagster_internals.last_sensor_tick(instance, "another_sensor") is None


def test_no_module_of_the_package_but_the_adapter_imports_dagster_internals():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "dagster_internals.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.relative_to(PACKAGE)}: {n}" for n in names
                          if n.startswith("dagster._")]
    assert offenders == []


def test_a_sensor_context_log_echoes_through_the_handler_given(monkeypatch):
    from dagster._core.definitions import instigation_logger

    monkeypatch.setattr(instigation_logger, "create_console_logger",
                        instigation_logger.create_console_logger)  # restored after the test
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    dagster_internals.instigation_console_through(handler)
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, sensor_name="indexing_jobs_sensor")
        context.log.info('{"event": "sensor_tick", "staged": 3}')
    assert [r.getMessage() for r in seen] == ['{"event": "sensor_tick", "staged": 3}']


def test_a_run_whose_config_names_no_logger_logs_through_the_logger_given(monkeypatch):
    from dagster._core.execution import context_creation_job

    monkeypatch.setattr(context_creation_job, "default_system_loggers",
                        context_creation_job.default_system_loggers)  # restored after the test
    seen: list[logging.LogRecord] = []

    @dg.logger
    def capture(_init_context: dg.InitLoggerContext) -> logging.Logger:
        logger = logging.Logger("capture", level=logging.INFO)
        handler = logging.Handler()
        handler.emit = seen.append  # type: ignore[method-assign]
        logger.addHandler(handler)
        return logger

    dagster_internals.default_run_logger(capture)
    with dg.instance_for_test() as instance:
        # As a run worker executes a launched run (execute_in_process names its loggers).
        result = dg.execute_job(dg.reconstructable(in_process_job), instance)
        assert result.success
    # Our events at INFO; Dagster's own (RUN_START, STEP_SUCCESS: DEBUG) stay in its event
    # log, not on the console.
    assert [r.dagster_meta["orig_message"] for r in seen] == ['{"event": "hello"}']


def test_a_code_server_started_through_dagster_process_names_it_for_its_run_workers(tmp_path):
    """The command the Docker and Kubernetes run launchers run for a run's worker is the one
    the code server names: through dagster_process, whose logging is JSON from the start."""
    import os
    import subprocess
    import sys

    from dagster._api.list_repositories import sync_list_repositories_grpc
    from dagster._grpc.client import DagsterGrpcClient

    from rag_pipeline.local.stack.deployment import free_port
    from rag_pipeline.observability import dagster_process

    (tmp_path / "defs.py").write_text("import dagster as dg\ndefs = dg.Definitions()\n")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", dagster_process.MODULE, "dagster", "api", "grpc", "-f",
         str(tmp_path / "defs.py"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp_path, env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = DagsterGrpcClient(port=port, host="127.0.0.1")
        deadline = time.monotonic() + 120
        while True:
            try:
                client.ping("")
                break
            except Exception:
                assert time.monotonic() < deadline and server.poll() is None, "no code server"
                time.sleep(0.5)
        assert sync_list_repositories_grpc(client).entry_point == [
            sys.executable, "-m", "rag_pipeline.observability.dagster_process", "dagster"]
    finally:
        server.terminate()
        server.wait(60)
