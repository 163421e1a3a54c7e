"""Hostile inputs (issue 9): each class found by probing as an attacker gets a clear, located
answer — exit 1 with a message, never exit 3 with a trace. One test per class, several cases each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import unetdsl
from unetdsl import SpecError
from unetdsl.cli import main
from unetdsl.errors import describe
from unetdsl.frontend import resolve_spec

from .conftest import ROOT, TINY

HUGE = "9" * 5000


def problems(source: Any, overrides: Any = ()) -> list[Any]:
    with pytest.raises(SpecError) as info:
        resolve_spec(source, overrides)
    return info.value.problems


# --- 1. numbers past Python's 4,300-digit int limit ----------------------------------------------
@pytest.mark.parametrize("number", [HUGE, "0" + HUGE, "0x" + "f" * 5000, "0o" + "7" * 5000, "-" + HUGE, "1_" + HUGE])
def test_huge_numbers_in_a_file_are_located_refusals(number: str, tmp_path: Path) -> None:
    text = TINY.replace("in_channels: 3", f"in_channels: {number}")
    (p,) = problems(text)
    assert p.path == ("in_channels",) and p.location.line == 3 and p.location.col == 14
    assert "far larger than any setting allows" in p.message
    assert len(p.render()) < 1000  # the value is not echoed in full


def test_huge_numbers_through_every_door(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (p,) = problems(TINY, [f"in_channels={HUGE}"])
    assert str(p.location) == "--set:1:13"
    data = yaml.safe_load(TINY)
    data["in_channels"] = 10**5000  # a Python int of any size, through the API
    (p,) = problems(data)
    assert p.path == ("in_channels",) and "about 5001 digits" in (p.found or "")
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    with pytest.raises(SystemExit) as exit_info:
        main(["build", str(spec), "--seed", HUGE])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--seed: expected a whole number from 0 to 2^64-1" in err and HUGE[:100] not in err
    assert describe(-(10**40)) == "a whole number of about 41 digits"


# --- 2. limits that contradict each other ----------------------------------------------------------
def test_values_at_every_bound_resolve_and_round_trip() -> None:
    """A mirrored decoder level has encoder blocks + 1; a fourier default is 2 x the first channels:
    what the resolver derives from values at their maximum must pass the language's own bounds,
    and the resolved form, written out, must read back to the same spec."""
    text = """\
unetdsl: 1
name: bounds
in_channels: 1
out_channels: 1
sample_size: 16
time: {embedding: fourier}
defaults: {norm: {groups: auto}}
encoder: {levels: [{channels: 8192, blocks: 16}, {channels: 8192, blocks: 16, attention: {heads: 1024}}]}
middle: {blocks: 16}
"""
    resolved, _ = resolve_spec(text)
    assert [len(lv.blocks) for lv in resolved.decoder] == [17, 17]
    assert resolved.time is not None and resolved.time.features == 16384
    again, _ = resolve_spec(resolved.to_spec_data())
    assert again.spec_id == resolved.spec_id
    model = unetdsl.build_model(text, device="meta")
    assert sum(p.numel() for p in model.parameters()) > 1e10


# --- 7. locations --------------------------------------------------------------------------------
def test_nul_bytes_and_bad_utf8_are_reported_where_they_are(tmp_path: Path) -> None:
    (p,) = problems(TINY.replace("out_channels: 3", "out_channels: 3\x00"))
    assert (p.location.line, p.location.col) == (4, 16) and "U+0000" in p.message
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(TINY.replace("name: tiny", "name: ti\xffny").encode("latin-1"))
    (p,) = problems(str(bad))
    assert (p.location.line, p.location.col) == (2, 9) and "0xff" in p.message


def test_override_problems_point_at_the_override() -> None:
    (p,) = problems(TINY, ["nosuch.path=3"])
    assert str(p.location) == "--set:1:1" and "unknown key 'nosuch'" in p.message
    (p,) = problems(TINY, ["encoder.levels.0.chanels=4"])
    assert str(p.location) == "--set:1:18" and p.hint == "did you mean 'channels'?"
    (p,) = problems(TINY, ["x=null"])
    assert str(p.location) == "--set:1:1" and "unknown key 'x'" in p.message
    (p,) = problems(TINY, ["in_channels=null"])
    assert str(p.location) == "--set:1:13" and p.found == "null"


def test_quotes_advice_only_where_unquoted_text_is_a_number() -> None:
    for text, advice in [("'3'", True), ("'３'", False), ("'1_0'", False), ("'0x10'", True), ("'x'", False)]:
        (p,) = problems(TINY.replace("in_channels: 3", f"in_channels: {text}"))
        assert (p.hint is not None and p.hint.startswith("remove the quotes")) is advice, text


# --- 8. smaller ----------------------------------------------------------------------------------
def test_a_long_value_is_echoed_briefly() -> None:
    long = "x" * 900_000
    (p,) = problems(TINY.replace("name: tiny", f"name: {long}"))
    rendered = p.render()
    assert len(rendered) < 1500 and "(900000 characters)" in rendered


def test_api_overrides_as_one_string() -> None:
    resolved, _ = resolve_spec(TINY, "in_channels=5")  # type: ignore[arg-type]
    assert resolved.in_channels == 5
    (p,) = problems(TINY, [5])
    assert "PATH=VALUE" in p.message


def test_validate_to_a_full_disk_is_an_error_not_a_trace(capfd: pytest.CaptureFixture[str]) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "unetdsl.cli", "validate", str(ROOT / "specs" / "tiny.yaml")]
    with open("/dev/full", "w") as full:
        proc = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: No space left on device (standard output)"


def test_describe_is_short_and_safe() -> None:
    assert describe("a\x1b[31mred") == "the string 'a\\x1b[31mred'"
    assert describe([1, 2]) == "a list of 2" and describe({"a": 1}) == "a mapping" and describe(None) == "null"
    assert json.loads(json.dumps(describe(float("nan")))) == "nan"
