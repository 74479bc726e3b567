"""The Go backend's reference status handler (go/statushandler): its `go test` on the real
PostgreSQL (schemas made by GORM's AutoMigrate; go/migrations checked against them), and
the shared status sequences it is tested with, checked against the keys the pipeline
writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from rag_pipeline.ledger.outbox import idempotency_key
from rag_pipeline.ledger.records import ReportedStatus
from rag_pipeline.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SEQUENCES = json.loads((ROOT / "contract" / "vectors" / "status_sequences.json").read_text())
GO_TESTS = ("TestSharedStatusSequences",
            "TestConcurrentRedeliveredReorderedReportsKeepCountersExact",
            "TestPagesAreAddedOnlyWhileCrawling",
            "TestTheMigrationsBringTheSeedTablesToWhatAutoMigrateMakes")


def test_the_go_handler_applies_each_state_change_once_on_postgresql(stack, settings: Settings):
    go = shutil.which("go")
    assert go, "the Go toolchain is missing: make test needs it (scripts/require-tools test)"
    dsn = (f"{settings.postgres_conninfo()} "
           f"password={settings.postgres_password.get_secret_value()}")
    done = subprocess.run([go, "test", "-count=1", "-v", "./statushandler"], cwd=ROOT / "go",
                          env={**os.environ, "STATUSHANDLER_DATABASE_URL": dsn},
                          capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "--- SKIP" not in out, out[-4000:]
    for name in GO_TESTS:
        assert f"--- PASS: {name} " in out, out[-4000:]


def test_the_sequences_use_the_keys_the_pipeline_writes():
    keyed = [step for case in SEQUENCES["cases"] for step in case["steps"] if "report" in step]
    assert len(keyed) > 10
    for step in keyed:
        status = ReportedStatus(step["body"]["status"])
        assert idempotency_key(step["job_id"], status, step["report"]) == step["idempotency_key"]
