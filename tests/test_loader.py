"""The YAML loader: YAML 1.2 scalars, positions, and the bounds that keep bombs cheap."""

from __future__ import annotations

import math
import time
import tracemalloc

import pytest

from unetdsl.errors import SpecError
from unetdsl.loader import MAX_BYTES, MAX_DEPTH, MAX_NODES, load_text
from unetdsl.scalars import resolve_plain


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True), ("false", False), ("null", None), ("~", None), ("", None),
        ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("True", "True"), ("Y", "Y"),
        ("10", 10), ("-3", -3), ("+7", 7), ("0", 0), ("0x1F", 31), ("0o17", 15),
        ("1e-5", 1e-5), ("1.0e-6", 1e-6), (".5", 0.5), ("3.", 3.0), ("-.inf", -math.inf),
        ("1:30", "1:30"), ("2001-12-14", "2001-12-14"), ("silu", "silu"),
    ],
)
def test_plain_scalars_follow_yaml_1_2_core(text: str, value: object) -> None:
    got = resolve_plain(text)
    assert got == value and type(got) is type(value)


def test_nan_is_a_float() -> None:
    assert math.isnan(resolve_plain(".nan"))


@pytest.mark.parametrize("text", ["010", "-007", "1_000", "1_0"])
def test_ambiguous_numbers_are_refused(text: str) -> None:
    with pytest.raises(SpecError) as info:
        load_text(f"a:\n  b: {text}\n", "x.yaml")
    (p,) = info.value.problems
    assert (p.location.line, p.location.col, p.dotted_path) == (2, 6, "a.b")  # type: ignore[union-attr]
    assert "ambiguous" in p.message and p.hint and "write" in p.hint


def test_quoted_scalars_stay_strings() -> None:
    data = load_text("a: '10'\nb: \"true\"\nc: 'no'\n").data
    assert data == {"a": "10", "b": "true", "c": "no"}


def test_positions_of_values_and_keys() -> None:
    loaded = load_text("top:\n  list:\n    - {x: 1}\n    - y\n", "f.yaml")
    pos = loaded.positions
    assert pos.values[("top", "list", 0, "x")] == (3, 11)
    assert pos.keys[("top", "list", 0, "x")] == (3, 8)
    assert pos.values[("top", "list", 1)] == (4, 7)
    # a missing path falls back to its nearest present ancestor
    loc = pos.location(("top", "list", 0, "missing"))
    assert loc is not None and (loc.line, loc.col) == (3, 7)


def test_duplicate_keys_name_both_lines() -> None:
    with pytest.raises(SpecError) as info:
        load_text("a: 1\nb: 2\na: 3\n", "d.yaml")
    (p,) = info.value.problems
    assert "line 1" in p.message and "line 3" in p.message
    assert (p.location.line, p.location.col) == (3, 1)  # type: ignore[union-attr]


def test_all_loader_problems_reported_at_once() -> None:
    with pytest.raises(SpecError) as info:
        load_text("a: 010\nb: !!str x\nc: 1\nc: 2\n")
    assert [p.dotted_path for p in info.value.problems] == ["a", "b", "c"]


def test_oversized_input_refused_before_parsing() -> None:
    text = "a: " + "x" * MAX_BYTES
    with pytest.raises(SpecError, match="at most"):
        load_text(text)


def test_deep_nesting_refused_without_recursion_error() -> None:
    # 200k levels would overflow PyYAML's recursive composer; ours counts events.
    with pytest.raises(SpecError, match=f"deeper than {MAX_DEPTH}"):
        load_text("a: " + "[" * 200_000 + "]" * 200_000)


def test_alias_bomb_is_cheap() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    text = "\n".join(lines) + "\n"  # ~700 bytes -> 10**9 values if expanded
    assert len(text) < 1000
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(SpecError, match=f"more than {MAX_NODES}"):
        load_text(text)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 32 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert elapsed < 5.0  # generous: it is ~20 ms; the bound is about runaway expansion, not speed


def test_recursive_alias_is_bounded() -> None:
    with pytest.raises(SpecError):
        load_text("a: &a [*a]\n")


def test_bad_bytes_are_a_spec_error() -> None:
    with pytest.raises(SpecError, match="not UTF-8"):
        load_text(b"a: \xff\xfe\n")


def test_empty_and_comment_only() -> None:
    for text in ("", "# nothing\n", "---\n"):
        with pytest.raises(SpecError, match="empty"):
            load_text(text)
