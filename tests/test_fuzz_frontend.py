"""Whatever the bytes, the front end answers with a ResolvedSpec or a SpecError, nothing else."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unetdsl import SpecError, resolve_spec
from unetdsl.spec.resolved import ResolvedSpec

from .conftest import SPECS, TINY

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(source: Any) -> str:
    try:
        result, _ = resolve_spec(source)
    except SpecError as exc:
        assert exc.problems and all(p.message for p in exc.problems)
        str(exc)  # rendering never fails
        return "error"
    assert isinstance(result, ResolvedSpec)
    return "ok"


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    outcome_text = data.decode("utf-8", errors="replace")
    outcome(outcome_text if "\n" in outcome_text else outcome_text + "\n")


YAML_TOKENS = st.sampled_from(
    [": ", "- ", "[", "]", "{", "}", ", ", "\n", "  ", "&a ", "*a", "!!str ", "? ", "'", '"', "#", "---\n",
     "no", "010", "1e-5", "true", "null", "channels", "levels", "encoder", "64", "-1", "\t", "|", ">", "%YAML 1.1\n"]
)


@FUZZ
@given(st.lists(YAML_TOKENS, max_size=60))
def test_random_yaml_token_soup(tokens: list[str]) -> None:
    outcome("".join(tokens) + "\n")


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5000), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.sampled_from(["silu", "auto", "group", "conv", "nearest", "sinusoidal", "unet"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)


def paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += paths(v, (*prefix, i))
    return out


BASES = [yaml.safe_load(TINY)] + [yaml.safe_load(p.read_text()) for p in SPECS]


@FUZZ
@given(st.sampled_from(BASES), st.data())
def test_mutated_specs_as_dicts_and_yaml(base: dict[str, Any], data: st.DataObject) -> None:
    spec = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 3))):
        targets = paths(spec)
        target = data.draw(st.sampled_from(targets[1:] or targets))
        node = spec
        for part in target[:-1]:
            node = node[part]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and isinstance(node, dict):
            node.pop(target[-1], None)
        elif action == "add" and isinstance(node, dict):
            node[data.draw(st.text(min_size=1, max_size=8))] = data.draw(VALUES)
        else:
            node[target[-1]] = data.draw(VALUES)
    outcome(spec)
    try:
        text = yaml.safe_dump(spec, allow_unicode=True)
    except yaml.YAMLError:
        return
    outcome(text)
