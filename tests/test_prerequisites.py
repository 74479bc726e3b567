"""Every make target says which tool is missing, and how to get it, before it starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("bash", "make", "java", "mvn", "apt-get", "dpkg", "go", "grep", "chromium",
         "prometheus", "promtool")


def machine_without(tmp_path: Path, *absent: str) -> dict[str, str]:
    """An environment whose PATH holds the machine's tools except `absent`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        if tool not in absent and (found := shutil.which(tool)):
            (bin_dir / tool).symlink_to(found)
    (bin_dir / "python3").symlink_to(sys.executable)
    return {**os.environ, "PATH": str(bin_dir)}


def make(target: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", f"tools-{target}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("target", ["up", "test", "bench", "reliability"])
def test_a_machine_with_every_tool_passes(tmp_path, target):
    if not all(shutil.which(t) for t in ("java", "mvn", "go", "prometheus", "promtool")):
        pytest.fail("this machine lacks java, mvn, go or prometheus, which make test needs")
    done = make(target, machine_without(tmp_path))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("target", "absent", "said"), [
    ("test", "go", "make test: go is missing: the Go side of the contract"),
    ("test", "prometheus", "make test: prometheus is missing: the metrics test scrapes"),
    ("up", "java", "make up: java is missing: the local Kafka broker runs on Java 17"),
    ("up", "mvn", "make up: mvn is missing: Maven fetches the Kafka jars"),
    ("test", "apt-get", "make test: apt-get is missing: the real pages of the tests"),
    ("screenshots", "chromium", "make screenshots: chromium is missing"),
])
def test_a_missing_tool_is_named_with_how_to_install_it(tmp_path, target, absent, said):
    done = make(target, machine_without(tmp_path, absent))
    assert done.returncode == 2
    assert said in done.stderr
    assert "Install it:" in done.stderr


def test_an_old_python_is_refused_by_name(tmp_path):
    env = machine_without(tmp_path)
    fake = tmp_path / "python3.9"
    fake.write_text("#!/bin/bash\nif [ \"$1\" = -V ]; then echo 'Python 3.9.2'; exit 0; fi\n"
                    "exit 1\n")
    fake.chmod(0o755)
    done = subprocess.run(["make", "-s", "tools-up", f"PYTHON={fake}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "Python 3.11 or 3.12 is missing" in done.stderr and "3.9.2" in done.stderr
