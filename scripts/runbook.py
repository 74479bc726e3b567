#!/usr/bin/env python3
"""Write docs/runbook.md from deploy/prometheus/alerts.yml: one section per alert (the
anchor its runbook_url names), from the rule's expression, summary and description."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"][0][
        "rules"]
    out = ["# Runbook: rag-pipeline's alerts", "",
           "One section per alert of `deploy/prometheus/alerts.yml` (each alert's `runbook_url`",
           "points here): when it fires, what it means and where to look first. Written by",
           "`python scripts/runbook.py` from the rules: edit the rule, then run it.", ""]
    for rule in rules:
        notes = rule["annotations"]
        expr = " ".join(rule["expr"].split())
        during = f" for {rule['for']}" if rule.get("for") else ""
        description = " ".join(notes["description"].split())
        out += [f"## {rule['alert']}", "",
                f"**Severity:** {rule['labels']['severity']}. **Fires when:** `{expr}`{during}.",
                "", f"{notes['summary']}.", "", description, ""]
    (ROOT / "docs" / "runbook.md").write_text("\n".join(out))


if __name__ == "__main__":
    main()
