"""`unetdsl build`: summary, the written TorchScript file, its provenance, and failure paths."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from unetdsl import artifacts as export_module
from unetdsl.cli import main
from unetdsl.sample import sample_inputs
from unetdsl.torchscript import load

from .conftest import ROOT


def test_build_writes_a_checked_torchscript_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny.pt"
    assert main(["build", str(ROOT / "specs" / "tiny.yaml"), "-o", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "encoder 1" in stdout and "2x4" in stdout  # level rows, attention heads x head_dim
    assert "parameters   11,831 (" in stdout
    assert "output [2, 3, 16, 16]" in stdout and "reloaded and checked" in stdout
    extra = {"unetdsl/spec_id": "", "unetdsl/spec.json": ""}
    loaded = load(out, extra_files=extra)
    spec = json.loads(extra["unetdsl/spec.json"])
    assert spec["name"] == "tiny" and extra["unetdsl/spec_id"] == b"v2:sha256:98a3b022edb75a87"
    x = torch.randn(1, 3, 32, 32)  # another size works too: the file is not specialised to 16x16
    assert loaded(x, torch.tensor([3])).shape == (1, 3, 32, 32)
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.pt"]  # no temporary file left


@pytest.mark.parametrize(("flags", "stored"), [
    (["--freeze"], "frozen; 20 convolution weights packed for oneDNN when loaded (a CPU-only file)"),
    (["--freeze", "--no-prepack"], "frozen (weights are constants of the graph)"),
])
def test_build_freeze_packs_convolutions_unless_told_not_to(flags: list[str], stored: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny.pt"
    assert main(["build", str(ROOT / "specs" / "tiny.yaml"), "-o", str(out), *flags]) == 0
    assert "reloaded and checked" in capsys.readouterr().out
    assert main(["inspect", str(out)]) == 0
    assert f"torchscript: {stored}" in capsys.readouterr().out


@pytest.mark.parametrize(("flags", "said"), [
    (["--format", "onnx", "--freeze"], "--freeze applies to --format torchscript only, not onnx"),
    (["--format", "aoti", "--freeze"], "not aoti (an aoti package is always frozen)"),
    (["--no-prepack"], "--no-prepack applies to --freeze (TorchScript) and --format aoti only"),
    (["--format", "export", "--no-prepack"], "--no-prepack applies to"),
])
def test_build_refuses_options_that_would_do_nothing(flags: list[str], said: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.out"
    assert main(["build", str(ROOT / "specs" / "tiny.yaml"), "-o", str(out), *flags]) == 2
    assert said in capsys.readouterr().err and not out.exists()


def test_build_default_output_name_is_the_spec_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["build", str(ROOT / "specs" / "tiny.yaml"), "--set", "name=renamed"]) == 0
    assert (tmp_path / "renamed.pt").exists()


def test_failed_check_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny.pt"
    out.write_bytes(b"previous")
    real = export_module.FORMATS["torchscript"]

    def off_by_one(path: Path, device: torch.device) -> Callable[..., torch.Tensor]:
        runner = real.load(path, device)
        return lambda inputs: runner(inputs) + 1.0  # the reloaded file's answer is off

    monkeypatch.setitem(export_module.FORMATS, "torchscript", replace(real, load=off_by_one))
    assert main(["build", str(ROOT / "specs" / "tiny.yaml"), "-o", str(out)]) == 1
    assert "disagrees with the eager model" in capsys.readouterr().err
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.pt"]


def test_build_invalid_spec_exits_1_before_building(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["build", str(ROOT / "specs" / "tiny.yaml"), "--set", "defaults.norm.groups=3", "-o",
                 str(tmp_path / "x.pt")])
    assert code == 1 and "--set:1:" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_sample_inputs_follow_the_spec() -> None:
    from unetdsl.frontend import resolve_spec

    r, _ = resolve_spec(ROOT / "specs" / "adm-imagenet64-cond.yaml")
    inputs = sample_inputs(r, batch=3)
    assert inputs.x.shape == (3, 3, 64, 64) and inputs.y is not None and int(inputs.y.max()) < 1000


# --- refused before the build (issue 22, classes 13 and 15): what the format cannot do is said first,
# never a guard failure or "a bug in unetdsl" after minutes of building
SMALL = (ROOT / "specs" / "tiny.yaml").read_text()


def small_spec(tmp_path: Path, size: int) -> Path:
    path = tmp_path / f"s{size}.yaml"
    path.write_text(SMALL.replace("sample_size: 16", f"sample_size: {size}"))
    return path


@pytest.mark.parametrize("fmt", ["export", "aoti"])
@pytest.mark.parametrize("size", [2, 3])  # tiny downsamples by 2: 2 is the smallest legal size, 3 (refused
def test_torch_export_formats_refuse_sizes_their_program_cannot_take(  # by the language) and 4 pass the rule
        fmt: str, size: int, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    monkeypatch.setattr("unetdsl.api.compile_spec", lambda *a, **k: built.append("built"))  # nothing may be built
    spec = small_spec(tmp_path, size)
    code = main(["build", str(spec), "--format", fmt, "-o", str(tmp_path / "m.aoti.pt2")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and not built and not (tmp_path / "m.aoti.pt2").exists()
    if size == 2:
        assert f"the {fmt} format's program takes spatial sizes from 4" in err and "sample size [2, 2]" in err
    else:
        assert "multiple of" in err  # the language's own rule comes first


def test_export_at_twice_the_factor_runs_at_every_checked_size(tmp_path: Path) -> None:
    spec = small_spec(tmp_path, 4)  # the smallest size torch.export takes
    assert main(["build", str(spec), "--format", "export", "-o", str(tmp_path / "m.pt2")]) == 0
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    assert program(torch.randn(1, 3, 4, 4), torch.tensor([1])).shape == (1, 3, 4, 4)


@pytest.mark.parametrize("name", ["x.pt", "x.onnx", "x", "x.pt2.bak"])
def test_aoti_refuses_a_name_its_loader_cannot_read_before_building(name: str, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    monkeypatch.setattr("unetdsl.api.compile_spec", lambda *a, **k: built.append("built"))
    code = main(["build", str(ROOT / "specs" / "tiny.yaml"), "--format", "aoti", "-o", str(tmp_path / name)])
    err = capsys.readouterr().err
    assert code == 1 and not built and "an AOTInductor package is a .pt2 file" in err and "bug" not in err
    # the library says the same
    import unetdsl

    monkeypatch.undo()

    model = unetdsl.build_model(ROOT / "specs" / "tiny.yaml", seed=0)
    with pytest.raises(export_module.ExportError, match=r"\.pt2 file"):
        unetdsl.export(model, tmp_path / name, format="aoti")
    assert list(tmp_path.iterdir()) == []
