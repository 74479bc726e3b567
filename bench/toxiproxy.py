"""Toxiproxy between the pipeline and Kafka/PostgreSQL, for the network fault scenario.

Built from github.com/Shopify/toxiproxy with the Go toolchain on first use; everything
listens on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.harness import ROOT
from rag_pipeline.local.stack import LocalStack
from rag_pipeline.settings import Settings

TOXIPROXY_VERSION = "v2.12.0"
TOXIPROXY_API = "http://127.0.0.1:28474"


def toxiproxy_binary() -> Path:
    """Toxiproxy's server, built with the Go toolchain once (cached in .stack-bench)."""
    target = ROOT / ".stack-bench" / "toxiproxy" / "toxiproxy-server"
    if target.exists():
        return target
    if shutil.which("go") is None:
        raise SystemExit("network_faults needs Go to build Toxiproxy (go install)")
    gobin = target.parent
    gobin.mkdir(parents=True, exist_ok=True)
    subprocess.run(["go", "install",
                    f"github.com/Shopify/toxiproxy/v2/cmd/server@{TOXIPROXY_VERSION}"],
                   env={**os.environ, "GOBIN": str(gobin)}, check=True, timeout=900)
    (gobin / "server").rename(target)
    return target


class Toxiproxy:
    def __init__(self) -> None:
        self.http = httpx.Client(base_url=TOXIPROXY_API, timeout=10)

    def proxy(self, name: str, listen: str, upstream: str) -> None:
        self.http.post("/proxies", json={"name": name, "listen": listen, "upstream": upstream,
                                         "enabled": True}).raise_for_status()

    def toxic(self, proxy: str, kind: str, attributes: dict[str, Any],
              toxicity: float = 1.0) -> None:
        for stream in ("upstream", "downstream"):
            self.http.post(f"/proxies/{proxy}/toxics", json={
                "name": f"{kind}_{stream}", "type": kind, "stream": stream,
                "toxicity": toxicity, "attributes": attributes}).raise_for_status()

    def clear(self) -> None:
        for name in self.http.get("/proxies").json():
            for toxic in self.http.get(f"/proxies/{name}/toxics").json():
                self.http.delete(f"/proxies/{name}/toxics/{toxic['name']}")


@contextlib.contextmanager
def proxied(settings: Settings, stack: LocalStack) -> Iterator[Settings]:
    """Kafka and PostgreSQL behind Toxiproxy: the settings the pipeline then uses."""
    server = subprocess.Popen([str(toxiproxy_binary()), "-host", "127.0.0.1", "-port",
                               "28474"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    kafka_proxy, pg_proxy = 29192, 25532
    try:
        time.sleep(1)
        proxy = Toxiproxy()
        proxy.proxy("kafka", f"127.0.0.1:{kafka_proxy}", settings.kafka_bootstrap_servers)
        proxy.proxy("postgres", f"127.0.0.1:{pg_proxy}",
                     f"{settings.postgres_host}:{settings.postgres_port}")
        # The broker must send clients back through the proxy.
        advertised = settings.model_copy(update={"kafka_advertised_port": kafka_proxy})
        stack.kafka.stop()
        LocalStack(advertised).kafka.start()
        yield settings.model_copy(update={
            "kafka_bootstrap_servers": f"127.0.0.1:{kafka_proxy}", "postgres_port": pg_proxy,
            "kafka_advertised_port": kafka_proxy})
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        stack.kafka.stop()
        stack.kafka.start()


