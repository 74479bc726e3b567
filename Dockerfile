# The rag-pipeline image. One image runs every Dagster process of the deployment, as in
# Dagster's deploy_docker example: the code location's gRPC server (the default command),
# dagster-webserver, dagster-daemon, each run's container (DockerRunLauncher or the Helm
# chart's K8sRunLauncher start this image with `dagster api execute_run`), the metrics
# exporter, the query service and the one-shot `rag-pipeline migrate` and `rag-pipeline
# kafka ensure-topics`. Settings come from the environment only (RAG_PIPELINE_ENV_FILE is
# empty: no .env is read).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RAG_PIPELINE_ENV_FILE="" \
    DAGSTER_HOME=/opt/dagster/dagster_home

WORKDIR /opt/dagster/app
# Dependencies first, from the lock with hashes (scripts/lock-image, `make lock`): a code
# edit rebuilds only the layers below. Runtime only: no test, lint or workshop tool.
COPY requirements/image.txt requirements/image.txt
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements/image.txt \
    && useradd --system --uid 10001 --home-dir /opt/dagster --shell /usr/sbin/nologin dagster \
    && mkdir -p "$DAGSTER_HOME" /opt/dagster/compute_logs \
    && chown dagster "$DAGSTER_HOME" /opt/dagster/compute_logs
# The code, without the local workshop (.dockerignore leaves rag_pipeline/local out).
COPY pyproject.toml README.md ./
COPY rag_pipeline ./rag_pipeline
RUN pip install --no-cache-dir --no-deps --no-build-isolation .
COPY deploy/docker/dagster.yaml deploy/docker/workspace.yaml /opt/dagster/dagster_home/
USER dagster

# No HEALTHCHECK here: every run container the DockerRunLauncher starts from this image would
# inherit it (and be reported unhealthy, having no gRPC server). The Compose file checks the
# code server; the Helm chart's probes run `dagster api grpc-health-check` themselves.
EXPOSE 4000
# Through dagster_process: the root logger in JSON, and the run workers this code server
# names for the run launchers start the same way.
CMD ["python", "-m", "rag_pipeline.observability.dagster_process", "dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "4000", "-m", "rag_pipeline.definitions", "--location-name", "rag_pipeline", "--log-format", "json"]
