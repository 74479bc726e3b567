"""A single-node Apache Kafka 4 broker in KRaft mode (combined broker + controller).

The jars come from Maven Central through Maven (`kafka-pom.xml`), Maven's own cache keeps
later starts offline; the broker runs on the machine's Java 17.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from rag_pipeline.local.stack.processes import (
    ServiceProcess,
    StackError,
    require_free_port,
    wait_until,
)
from rag_pipeline.settings import Settings

KAFKA_READY_TIMEOUT_S = 90


def kafka_host_port(settings: Settings) -> tuple[str, int]:
    first = settings.kafka_bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host, int(port)


def _require_tool(name: str, what: str) -> str:
    path = shutil.which(name)
    if path is None:
        package = "openjdk-17-jre-headless" if name == "java" else "maven"
        raise StackError(
            f"{name} was not found on PATH: the local Kafka needs {what}. Install it "
            f"(Debian: apt-get install {package}) or point KAFKA_BOOTSTRAP_SERVERS at an "
            "existing broker."
        )
    return path


def resolve_kafka_jars(libs_dir: Path) -> Path:
    """Copy the broker's jars into `libs_dir` (once); Maven caches them in ~/.m2."""
    marker = libs_dir / ".complete"
    if marker.exists():
        return libs_dir
    mvn = _require_tool("mvn", "Maven to fetch the Kafka jars from Maven Central")
    libs_dir.mkdir(parents=True, exist_ok=True)
    pom = resources.files("rag_pipeline.local.stack").joinpath("kafka-pom.xml")
    with resources.as_file(pom) as pom_path:
        result = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(pom_path),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={libs_dir}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise StackError(
            "Maven could not fetch the Kafka jars (org.apache.kafka:kafka_2.13) from Maven "
            "Central. Check the network or proxy settings for Maven (~/.m2/settings.xml), "
            f"or point KAFKA_BOOTSTRAP_SERVERS at an existing broker.\nMaven said:\n{tail}"
        )
    marker.write_text("ok\n")
    return libs_dir


# The user of the local broker's SASL listener (KAFKA_SASL_PORT); its password is made once
# per stack and kept in <STACK_DIR>/kafka/sasl-password.
SASL_USER = "ragpipeline"  # JAAS option names take no hyphen


def sasl_password(root: Path) -> str:
    """The local SASL listener's password, made on first use (readable by its owner only)."""
    path = root / "sasl-password"
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(16))
    return path.read_text().strip()


def server_properties(settings: Settings, data_dir: Path, sasl_password: str = "") -> str:
    host, port = kafka_host_port(settings)
    ctrl = settings.kafka_controller_port
    advertised = settings.kafka_advertised_port or port
    max_bytes = settings.kafka_max_message_bytes
    listeners = [f"PLAINTEXT://{host}:{port}", f"CONTROLLER://{host}:{ctrl}"]
    advertised_listeners = [f"PLAINTEXT://{host}:{advertised}"]
    sasl: list[str] = []
    if settings.kafka_sasl_port:
        # A listener that wants SASL/PLAIN credentials, as managed Kafka services do: the
        # production connection settings are tried against it.
        listeners.append(f"SASL_PLAINTEXT://{host}:{settings.kafka_sasl_port}")
        advertised_listeners.append(f"SASL_PLAINTEXT://{host}:{settings.kafka_sasl_port}")
        sasl = ["sasl.enabled.mechanisms=PLAIN",
                "listener.name.sasl_plaintext.plain.sasl.jaas.config="
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'user_{SASL_USER}="{sasl_password}";']
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers={host}:{ctrl}",
            f"listeners={','.join(listeners)}",
            f"advertised.listeners={','.join(advertised_listeners)}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
            "SASL_PLAINTEXT:SASL_PLAINTEXT",
            *sasl,
            f"log.dirs={data_dir}",
            f"num.partitions={settings.kafka_topic_partitions}",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=12",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            # Crawled pages can be large: 10 MB of HTML is ~13.3 MB after base64.
            f"message.max.bytes={max_bytes}",
            f"replica.fetch.max.bytes={max_bytes}",
            f"socket.request.max.bytes={max(104857600, 2 * max_bytes)}",
            # Topics are created explicitly, with the partition counts the design asks for.
            "auto.create.topics.enable=false",
            "",
        ]
    )


class KafkaService:
    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.stack_path / "kafka"
        self.process = ServiceProcess(self.name, settings.stack_path)

    @property
    def address(self) -> str:
        host, port = kafka_host_port(self.settings)
        return f"{host}:{port}"

    def healthy(self) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            admin = AdminClient(
                {"bootstrap.servers": self.settings.kafka_bootstrap_servers, "log_level": 0}
            )
            metadata = admin.list_topics(timeout=2)
        except Exception:
            return False
        return bool(metadata.brokers)

    def start(self) -> None:
        if self.process.pid is not None:
            wait_until(self.healthy, KAFKA_READY_TIMEOUT_S, "Kafka", self.process.log_file)
            self.create_topics()
            return
        host, port = kafka_host_port(self.settings)
        if host not in ("127.0.0.1", "localhost"):
            raise StackError(
                f"KAFKA_BOOTSTRAP_SERVERS={self.settings.kafka_bootstrap_servers} is not local: "
                "the local stack only starts a broker on 127.0.0.1. Unset it, or do not use "
                "`stack up` for an existing broker."
            )
        require_free_port(host, port, "Kafka", "KAFKA_BOOTSTRAP_SERVERS")
        require_free_port(host, self.settings.kafka_controller_port, "Kafka controller",
                          "KAFKA_CONTROLLER_PORT")
        if self.settings.kafka_sasl_port:
            require_free_port(host, self.settings.kafka_sasl_port, "Kafka SASL listener",
                              "KAFKA_SASL_PORT")
        java = _require_tool("java", "Java 17 or newer to run the broker")
        libs = resolve_kafka_jars(self.root / "libs")
        data_dir = self.root / "data"
        config = self.root / "server.properties"
        config.write_text(server_properties(self.settings, data_dir, sasl_password(self.root)))
        log_config = resources.files("rag_pipeline.local.stack").joinpath("kafka-log4j2.properties")
        log_config_path = self.root / "log4j2.properties"
        log_config_path.write_text(log_config.read_text())
        classpath = f"{libs}/*"
        if not (data_dir / "meta.properties").exists():
            format_storage(java, classpath, log_config_path, config, random_cluster_id())
        self.process.start(
            [java, "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
             f"-Dlog4j2.configurationFile={log_config_path}", "-cp", classpath,
             "kafka.Kafka", str(config)]
        )
        wait_until(self.healthy, KAFKA_READY_TIMEOUT_S, "Kafka", self.process.log_file)
        self.create_topics()

    def create_topics(self) -> None:
        """What `rag-pipeline kafka ensure-topics` does in a deployment (idempotent)."""
        from confluent_kafka.admin import AdminClient

        from rag_pipeline.kafka_io import KafkaOptions, client_config
        from rag_pipeline.kafka_topics import TopicsError, ensure_topics, wanted_topics

        admin = AdminClient(client_config(KafkaOptions.from_settings(self.settings)))
        try:
            ensure_topics(admin, wanted_topics(self.settings))
        except TopicsError as exc:
            raise StackError(str(exc)) from None

    def stop(self) -> bool:
        return self.process.stop(timeout=30)


def random_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id: URL-safe base64 of 16 random bytes, never starting with "-".

    One id in 64 would start with "-", which command-line parsers take for an option;
    Kafka's own `Uuid.randomUuid()` draws again in that case, and so do we.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes()).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def format_storage(java: str, classpath: str, log_config: Path, config: Path,
                   cluster_id: str) -> None:
    """Format a KRaft node's storage (`kafka-storage format --standalone`)."""
    result = subprocess.run(
        [java, "-cp", classpath, f"-Dlog4j2.configurationFile={log_config}",
         # `--cluster-id=ID` as one argument: even an id that starts with "-" is a value.
         "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config),
         "--standalone"],
        capture_output=True, text=True, timeout=120,
    )
    if result.returncode != 0:
        raise StackError(f"Formatting Kafka's storage failed:\n{result.stderr[-2000:]}")
