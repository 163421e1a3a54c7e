"""docs/language.md is generated from the language (unetdsl/reference.py): it must be current,
cover every key of every section, and its error catalogue must show real, located errors."""

from __future__ import annotations

from unetdsl.reference import CATALOGUE, SECTIONS, reference_text
from unetdsl.schema import generate_schema

from .conftest import ROOT


def test_committed_reference_is_current() -> None:
    committed = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    assert committed == reference_text(), "docs/language.md is stale: run `make docs`"


def test_every_key_of_every_section_is_documented() -> None:
    schema = generate_schema()
    text = reference_text()
    documented = {location for _, location, _ in SECTIONS}
    assert documented - {""} == set(schema["$defs"])  # every model has its section
    for node in [schema, *schema["$defs"].values()]:
        for key in node.get("properties", {}):
            assert f"| `{key}`" in text, key


def test_the_catalogue_shows_located_errors() -> None:
    text = reference_text()
    for title, *_ in CATALOGUE:
        section = text.split(f"### {title}\n", 1)[1].split("###", 1)[0]
        assert "spec.yaml:" in section and "^" in section, title  # file:line:col and the caret
