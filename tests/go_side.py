"""The Go side of the contract in the tests: the module in go/ built once per session, its
status receiver as the Go API, its producer as the crawler."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
GO_MODULE = ROOT / "go"
COMPOSECHECK = ROOT / "tools" / "composecheck"


def build_go(target: Path) -> Path:
    """`go build` the commands of go/ and the Compose checking tool (tools/composecheck, a
    module of its own) into `target` (Go fetches modules from its proxy)."""
    go = shutil.which("go")
    assert go, "the Go toolchain is missing: make test needs it (scripts/require-tools test)"
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run([go, "build", "-o", str(target), "./cmd/..."], cwd=GO_MODULE, check=True,
                   timeout=600)
    subprocess.run([go, "build", "-o", str(target / "composecheck"), "."], cwd=COMPOSECHECK,
                   check=True, timeout=600)
    return target


@contextmanager
def status_receiver(bin_dir: Path, port: int, record: Path, token: str = "") -> Iterator[str]:
    """The Go status receiver on 127.0.0.1:`port` (wanting `token` as bearer if given); its
    base URL."""
    argv = [str(bin_dir / "statusreceiver"), "-listen", f"127.0.0.1:{port}", "-record",
            str(record)]
    env = None
    if token:
        argv += ["-token-env", "STATUS_TOKEN"]
        env = {**os.environ, "STATUS_TOKEN": token}
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, "the Go status receiver exited"
            assert time.monotonic() < deadline, "the Go status receiver did not start"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def publish_with_go(bin_dir: Path, brokers: str, topic: str, folder: Path, base_url: str,
                    first_job_id: int, alias: str = "") -> dict:
    """The Go producer publishes a folder for a new collection, then says the crawl is
    complete; its JSON report."""
    done = subprocess.run([str(bin_dir / "producer"), "-brokers", brokers, "-topic", topic,
                           "-dir", str(folder), "-base-url", base_url,
                           "-first-job-id", str(first_job_id), "-alias", alias],
                          capture_output=True, text=True, timeout=180, check=True)
    return json.loads(done.stdout)


def delete_with_go(bin_dir: Path, brokers: str, topic: str, collection: str, urls: list[str],
                   first_job_id: int) -> dict:
    """The Go producer removes pages from a collection (page_deleted messages); its report."""
    argv = [str(bin_dir / "producer"), "-brokers", brokers, "-topic", topic,
            "-collection", collection, "-first-job-id", str(first_job_id)]
    for url in urls:
        argv += ["-delete", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=True)
    return json.loads(done.stdout)
