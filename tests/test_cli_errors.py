"""The CLI's one place that turns failures into exit codes: every kind of failure a command can
meet gets its code and a message, never a bare trace (except a bug, which says it is one)."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest

import unetdsl
from unetdsl import cli
from unetdsl.errors import InternalError
from unetdsl.frontend import resolve_spec

from .conftest import ROOT, TINY

SPEC = str(ROOT / "specs" / "tiny.yaml")


def failing(exc: BaseException) -> Callable[..., int]:
    def handler(args: object) -> int:
        raise exc
    return handler


@pytest.mark.parametrize("exc,code,says", [
    (KeyboardInterrupt(), 130, "interrupted"),
    (BrokenPipeError(), 0, ""),
    (OSError(errno.ENOSPC, "No space left on device"), 1, "error: No space left on device (standard output)"),
    (PermissionError(errno.EACCES, "Permission denied", "/x/y"), 1, "error: Permission denied (/x/y)"),
    (InternalError("an invariant broke"), 3, "internal error (a bug in unetdsl"),
    (ZeroDivisionError("boom"), 3, "ZeroDivisionError: boom"),
])
def test_every_failure_has_its_exit_code(exc: BaseException, code: int, says: str, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(cli.COMMANDS, "validate", failing(exc))
    assert cli.main(["validate", SPEC]) == code
    assert says in capsys.readouterr().err


def test_warnings_are_printed_and_do_not_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "bn.yaml"
    spec.write_text(TINY.replace("norm: {groups: 2}", "norm: {type: batch}"))
    assert cli.main(["resolve", str(spec)]) == 0
    assert "warning:" in capsys.readouterr().err


def test_the_front_end_takes_every_kind_of_source() -> None:
    resolved, _ = resolve_spec(TINY)
    spec = unetdsl.load_spec(TINY).spec
    assert resolve_spec(spec)[0].spec_id == resolved.spec_id  # a Spec
    assert resolve_spec(spec, ["in_channels=4"])[0].in_channels == 4  # a Spec with overrides
    assert resolve_spec(resolved, ["out_channels=2"])[0].out_channels == 2  # a ResolvedSpec with overrides
    with pytest.raises(unetdsl.SpecError, match="cannot read a spec from a int"):
        resolve_spec(5)  # type: ignore[arg-type]
    with pytest.raises(unetdsl.SpecError, match="a spec is a mapping of settings"):
        resolve_spec("- a\n- b\n")
    with pytest.raises(unetdsl.SpecError, match="is a single value, not a section"):
        resolve_spec(TINY, ["in_channels.x=1"])
    appended, _ = resolve_spec(TINY, ["encoder.levels.2={channels: 8, blocks: 1}"])
    assert len(appended.encoder) == 3
