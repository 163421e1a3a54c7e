"""The committed JSON Schema: fresh, carried by every spec, and in agreement with pydantic."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from unetdsl.loader import load_file
from unetdsl.schema import SHIPPED, generate_schema, schema_line, schema_text
from unetdsl.spec.models import Spec

from .conftest import ROOT, SPECS

SCHEMA_FILE = ROOT / "schemas" / "unetdsl.schema.json"
SCHEMA_LINE = "# yaml-language-server: $schema=../schemas/unetdsl.schema.json"


def test_committed_schema_is_fresh() -> None:
    assert SCHEMA_FILE.read_text() == schema_text(), "stale schema: run `make schema` and commit it"
    assert SHIPPED.read_text() == schema_text(), "stale shipped schema: run `make schema` and commit it"


def test_written_specs_point_at_the_shipped_schema(tmp_path: Path) -> None:
    line = schema_line(tmp_path)
    target = Path(line.removeprefix("# yaml-language-server: $schema="))
    assert not target.is_absolute() and (tmp_path / target).resolve() == SHIPPED.resolve()
    assert Path(schema_line().split("=", 1)[1]) == SHIPPED  # printed: absolute


def test_schema_is_valid_draft_2020_12_with_descriptions() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["in_channels"]["description"] == "Channels of the input."
    level = schema["$defs"]["EncoderLevel"]["properties"]
    assert "description" in level["activation"] and "silu" in level["activation"]["description"]


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_carries_the_schema_line_and_passes_both(path: Path) -> None:
    assert SCHEMA_LINE in path.read_text().splitlines()[:3]
    data = load_file(str(path)).data
    jsonschema.Draft202012Validator(generate_schema()).validate(data)
    Spec.model_validate(data, strict=True)


# --- jsonschema and pydantic agree on type mutations --------------------------------------------
def leaves(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(data, dict):
        for k, v in data.items():
            yield from leaves(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from leaves(v, (*path, i))
    yield path, data


def mutations(value: Any) -> list[Any]:
    out: list[Any] = [None, True, "64", 64, 2.5, [value], {"x": value}, "silu", -1, 0]
    if isinstance(value, int) and not isinstance(value, bool):
        out += [float(value), str(value), value + 1]
    if isinstance(value, str):
        out += [value.upper(), value + "x"]
    return out


def put(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    data = copy.deepcopy(data)
    if not path:
        return value
    node = data
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return data


def documented_difference(original: Any, mutated: Any) -> bool:
    """JSON Schema's `integer` is a mathematical type: 64.0 is an integer to it. pydantic in strict
    mode refuses 64.0 where an int is expected (docs/reliability.md: 'JSON Schema and pydantic')."""
    return isinstance(mutated, float) and mutated.is_integer()


def pydantic_accepts(data: Any) -> bool:
    try:
        Spec.model_validate(data, strict=True)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_jsonschema_and_pydantic_agree_on_type_mutations(path: Path) -> None:
    validator = jsonschema.Draft202012Validator(generate_schema())
    data = load_file(str(path)).data
    disagreements = []
    checked = 0
    for leaf_path, original in list(leaves(data)):
        for mutated_value in mutations(original):
            mutated = put(data, leaf_path, mutated_value)
            by_schema, by_pydantic = validator.is_valid(mutated), pydantic_accepts(mutated)
            checked += 1
            if by_schema != by_pydantic and not documented_difference(original, mutated_value):
                disagreements.append((leaf_path, mutated_value, by_schema, by_pydantic))
    assert checked > 100
    assert not disagreements, disagreements[:10]
