"""One vocabulary everywhere: every state, outcome and reason code is an enum member, and
the README documents each one (as test_settings does for the settings)."""

from __future__ import annotations

import re
from pathlib import Path

from rag_pipeline.vocabulary import JobState, OutboxState, Outcome, Reason
from tests.test_contract_vectors import MESSAGES

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
FIELD_REASONS = {Reason.MISSING_FIELD, Reason.INVALID_FIELD}


def readme_section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_every_reason_code_is_in_the_readme_table():
    documented = set(re.findall(r"^\| `([a-z0-9_]+)(?::<field>)?` \|",
                                readme_section("What happens to a page"), flags=re.M))
    assert documented == {r.value for r in Reason}


def test_field_reasons_name_their_field():
    assert Reason.MISSING_FIELD.about("url") == "missing_field:url"
    documented = readme_section("What happens to a page")
    for reason in FIELD_REASONS:
        assert f"`{reason}:<field>`" in documented


def test_every_outcome_and_state_is_in_the_readme():
    section = readme_section("What happens to a page")
    for value in [*Outcome, *JobState, *OutboxState]:
        assert f"`{value}`" in section, value


def test_every_rejection_of_the_shared_vectors_is_a_reason():
    for vector in MESSAGES:
        if vector["expect"] != "accepted":
            assert vector["expect"].split(":", 1)[0] in {r.value for r in Reason}, vector
