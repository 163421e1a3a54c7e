"""Every bad-spec fixture states where its problem must be reported: `# expect: L:C path[; ...]`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from unetdsl import SpecError, resolve_spec
from unetdsl.errors import InternalError

from .conftest import INVALID

EXPECT = re.compile(r"^# expect: (.+)$", re.M)


def expectations(path: Path) -> list[tuple[int, int, str]]:
    m = EXPECT.search(path.read_text())
    assert m, f"{path.name} has no '# expect:' line"
    out = []
    for item in m.group(1).split(";"):
        loc, dotted = item.split()
        line, col = loc.split(":")
        out.append((int(line), int(col), dotted))
    return out


def test_there_are_at_least_40_fixtures() -> None:
    assert len(INVALID) >= 40


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_fixture_reported_at_its_location(path: Path) -> None:
    with pytest.raises(SpecError) as info:
        resolve_spec(path)
    problems = info.value.problems
    found = {(p.location.line, p.location.col, p.dotted_path) for p in problems if p.location}
    for expected in expectations(path):
        assert expected in found, f"expected a problem at {expected}, got {sorted(found)}"
    for p in problems:
        # every problem of a file-borne spec is located in that file, with the line and a caret
        assert p.location is not None and p.location.source == str(path)
        rendered = p.render()
        assert rendered.startswith(f"{path}:{p.location.line}:{p.location.col}: {p.dotted_path}: ")
        if p.location.text is not None:
            assert rendered.rstrip().endswith("^")


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_fixture_never_raises_anything_else(path: Path) -> None:
    try:
        resolve_spec(path.read_text())
    except SpecError:
        pass
    except InternalError:  # pragma: no cover
        pytest.fail("internal error on user input")
