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


DESIGN = (Path(__file__).resolve().parent.parent / "docs" / "design.md").read_text()


def vocabulary_table() -> str:
    return DESIGN.split("**Vocabulary**", 1)[1].split("\n\n**", 1)[0]


def test_every_enum_of_the_vocabulary_is_in_the_design_table_with_its_values():
    import enum

    from rag_pipeline import vocabulary

    table = vocabulary_table()
    enums = [v for v in vars(vocabulary).values()
             if isinstance(v, type) and issubclass(v, enum.StrEnum) and v is not enum.StrEnum]
    assert len(enums) >= 10
    for kind in enums:
        assert f"`{kind.__name__}`" in table, kind.__name__
        if kind is not Reason:  # the reason codes have the README's own table
            row = next(line for line in table.splitlines() if f"`{kind.__name__}`" in line)
            for member in kind:
                assert member.value in row, (kind.__name__, member.value)


def test_one_name_for_the_reason_code_and_another_for_the_sentence():
    table = vocabulary_table()
    for name in ("reason", "error_msg", "detail", "delivery_error"):
        assert f"| `{name}` |" in table, name
    package = Path(__file__).resolve().parent.parent / "rag_pipeline"
    old_names = re.compile(r"\b(error_code|last_error|declared_dead_reason)\b")
    found = [f"{p.relative_to(package)}" for p in package.rglob("*.py")
             if p.name != "schema.py" and old_names.search(p.read_text())]
    assert found == []  # (schema.py keeps them in the migrations that renamed them)
