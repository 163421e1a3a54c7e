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


def test_build_failure_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from unetdsl import resources

    out = str(tmp_path / "t.pt")
    if not torch.cuda.is_available():
        assert cli.main(["build", SPEC, "-o", out, "--device", "cuda"]) == 2
        assert "no CUDA device is available" in capsys.readouterr().err
    # finite weights whose output overflows to Inf: refused before anything is written
    model = unetdsl.build_model(SPEC, seed=0)
    with torch.no_grad():
        model.head.conv.weight.fill_(3e38)
    weights = tmp_path / "nan.safetensors"
    unetdsl.save(model, weights)
    assert cli.main(["build", SPEC, "-o", out, "--weights", str(weights)]) == 1
    assert "the sample forward produced NaN or Inf" in capsys.readouterr().err
    assert not Path(out).exists()
    # a zero-initialised output layer: the export check would compare zeros, and says so
    assert cli.main(["build", SPEC, "-o", out, "--set", "init={zero_out: true}"]) == 0
    assert "outputs zeros (init.zero_out)" in capsys.readouterr().err
    # a long build is announced (a machine doing one forward a minute)
    monkeypatch.setattr(resources, "MEASURE_ABOVE_FLOPS", 0)
    monkeypatch.setattr(resources, "conv_flops_per_second", lambda device: 5e6 / 60)
    monkeypatch.setattr(resources, "attention_scores_per_second", lambda device: float("inf"))
    monkeypatch.setattr(resources, "elementwise_bytes_per_second", lambda device: float("inf"))
    assert cli.main(["build", SPEC, "-o", out]) == 0
    err = capsys.readouterr().err
    assert "note: this build takes" in err and "3 check forwards of 5.26 MFLOP" in err and "about 3 minutes" in err


def test_summary_options(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert cli.main(["summary", SPEC, "--size", "32,16", "--batch", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sample_size"] == [32, 16] and data["batch"] == 3 and data["name"] == "tiny"
    assert data["levels"][0]["part"] == "stem" and data["levels"][0]["resolution"] == [32, 16]
    for bad in (["--size", "15"], ["--size", "16,16,16"]):
        assert cli.main(["summary", SPEC, *bad]) == 2
        assert "sizes must be multiples of 2" in capsys.readouterr().err
    for flag, bad in (("--batch", "0"), ("--batch", "x"), ("--size", "2000000"), ("--seed", "-1")):
        command = "build" if flag == "--seed" else "summary"
        with pytest.raises(SystemExit) as exit_:
            cli.main([command, SPEC, flag, bad])
        assert exit_.value.code == 2
        assert "expected a whole number" in capsys.readouterr().err


def test_inspect_a_file_without_a_stored_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain), metadata={"unetdsl/spec_id": "sha256:0123456789abcdef"})
    assert cli.main(["inspect", str(plain)]) == 0
    out = capsys.readouterr().out
    assert "spec_id: sha256:0123456789abcdef" in out and "spec:" not in out


def test_convert_errors_are_located_not_traced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"_class_name": "UNet2DModel", "sample_size": 32}')
    assert cli.main(["convert", "diffusers", str(folder), "-o", str(folder / "config.json")]) == 1
    assert "error:" in capsys.readouterr().err
    assert cli.main(["convert", "diffusers", str(folder), "-o", str(tmp_path / "s.yaml"),
                     "--weights", str(tmp_path / "w.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
