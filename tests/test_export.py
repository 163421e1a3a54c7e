"""Deployment artifacts: every spec to every format, each reloaded the way a deployment loads it
and compared with eager; provenance inside; atomic writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unetdsl import build_model, export
from unetdsl import torchscript as ts
from unetdsl.artifacts import FORMATS, ExportCheckError, ExportError
from unetdsl.fsutil import TMP_PREFIX
from unetdsl.inspect import InspectError, read_metadata

from .conftest import MECHANICS, ROOT, SPECS, TINY, label

HEAVY = {"adm-imagenet64-cond", "ldm-kl-f8-encoder", "ldm-kl-f8-decoder"}


def nonzero(model: torch.nn.Module) -> torch.nn.Module:
    """Give zero-initialised tensors (init.zero_out) random values: a check that compares two
    all-zero outputs proves nothing."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def small(path: Path) -> torch.nn.Module:
    # the architecture of the spec, checked at its smallest sample size to keep the suite quick
    # (every artifact is dynamic in batch and spatial size; the check also runs a second size)
    model = build_model(path)
    factor = model.spec.downsampling_factor
    size = 2 * factor if model.spec.model != "decoder" else 4
    return nonzero(build_model(path, overrides=[f"sample_size={size}"]))


# `make test-heavy`: the ADM spec's exports (~3 minutes; `make test` exports its miniature twin to
# TorchScript) and DDPM CIFAR-10's ONNX and torch.export (~1 minute: ddpm-digits has its blocks,
# vae-tiny its asymmetric downsampling padding; its TorchScript stays in `make test`, and
# benchmarks/export_throughput.py exports it to all three)
HEAVIEST = {"adm-imagenet64-cond", "ddpm-cifar10"}
# the LDM KL-f8 halves' ONNX files too (~30 s): vae-tiny's ONNX has the same blocks; their
# torch.export and TorchScript stay in `make test`; and ddpm-digits' ONNX (~25 s): tiny's ONNX has its
# blocks (2D, self-attention, conv down, nearest up), its torch.export stays
# and text-tiny's (~55 s): tests/test_conditions.py exports its blocks (a depth-2 transformer with linear
# projections attending to a context) to ONNX, with conditions besides
HEAVY_ONNX = {"ldm-kl-f8-encoder", "ldm-kl-f8-decoder", "ddpm-digits", "text-tiny"}
CASES = [
    pytest.param(spec, fmt, id=f"{label(spec)}-{fmt}",
                 marks=([pytest.mark.slow] if spec.stem in HEAVY and fmt != "torchscript" else [])
                 + ([pytest.mark.heavy] if (spec.stem in HEAVIEST and (fmt != "torchscript" or spec != twin))
                    or (spec.stem in HEAVY_ONNX and fmt == "onnx") else []))
    # (aoti compiles C++ for a minute or more per spec: tests/test_cpp_example.py compiles one
    # package and checks it from Python, from C++ and with inspect)
    for original, twin in zip(SPECS, MECHANICS, strict=True) for spec in dict.fromkeys([twin, original])
    for fmt in FORMATS if fmt != "aoti" and (spec == original or fmt == "torchscript")
]


@pytest.mark.parametrize(("spec", "fmt"), CASES)
def test_every_spec_exports_to_every_format(spec: Path, fmt: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = small(spec)
    target = tmp_path / f"model{FORMATS[fmt].suffix}"
    report = export(model, target, format=fmt)
    assert report.path == target and target.exists()
    assert len(report.checks) == 2 and report.checks[0][0][0] == 2 and report.checks[1][0][0] == 3
    assert report.checks[0][0][2:] != report.checks[1][0][2:]  # a second spatial size too
    assert report.max_abs_diff < 1e-4
    meta = read_metadata(target)
    assert meta["unetdsl/spec_id"] == model.spec.spec_id and meta["unetdsl/format"] == fmt
    assert meta["unetdsl/dtype"] == "float32" and meta["unetdsl/device"] == "cpu"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_torchscript_on_cpu(dtype: torch.dtype, tmp_path: Path) -> None:
    model = build_model(TINY, dtype=dtype)
    report = export(model, tmp_path / "m.pt", format="torchscript")
    assert read_metadata(tmp_path / "m.pt")["unetdsl/dtype"] == str(dtype).removeprefix("torch.")
    assert report.max_abs_diff < 0.1


def test_onnx_bfloat16_on_cpu_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no bfloat16 convolution"):
        export(build_model(TINY, dtype=torch.bfloat16), tmp_path / "m.onnx", format="onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_file_its_runtime_cannot_load_is_a_check_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import unetdsl.artifacts as ex

    real = ex.FORMATS["torchscript"]

    def refuses(path: Path, device: torch.device) -> ex.Runner:
        raise RuntimeError("unsupported operator")

    monkeypatch.setitem(ex.FORMATS, "torchscript", ex.Format(real.suffix, real.write, refuses, real.loader_name))
    with pytest.raises(ExportCheckError, match="cannot load the written file"):
        export(build_model(TINY), tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_frozen_torchscript(tmp_path: Path) -> None:
    report = export(build_model(TINY), tmp_path / "m.pt", format="torchscript", freeze=True)
    assert 0.0 <= report.max_abs_diff < 1e-5  # freezing folds constants: equal up to float rounding


def test_interrupted_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "m.pt"
    export(build_model(TINY), target)
    before = target.read_bytes()

    def dies_mid_write(module: torch.jit.ScriptModule, path: Path, extra: dict[str, str]) -> None:
        Path(path).write_bytes(b"half a zip")
        raise KeyboardInterrupt  # what Ctrl-C mid-export looks like

    monkeypatch.setattr(ts, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        export(build_model(TINY.replace("dim: 16", "dim: 32")), target)
    assert target.read_bytes() == before
    assert ts.load(target)(torch.randn(1, 3, 16, 16), torch.tensor([1])).shape == (1, 3, 16, 16)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / f"{TMP_PREFIX}m.pt.abc123"
    stale.write_bytes(b"left by kill -9")
    other = tmp_path / f"{TMP_PREFIX}other.pt.abc123"  # another target's: not ours to touch
    other.write_bytes(b"x")
    export(build_model(TINY), tmp_path / "m.pt")
    assert not stale.exists() and other.exists()


def test_a_failed_check_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import unetdsl.artifacts as ex

    real = ex.FORMATS["torchscript"]
    broken = ex.Format(real.suffix, real.write, lambda p, d: (lambda inp: real.load(p, d)(inp) * 1.01),
                       real.loader_name)
    monkeypatch.setitem(ex.FORMATS, "torchscript", broken)
    with pytest.raises(ExportCheckError, match="disagrees with the eager model"):
        export(build_model(TINY), tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_and_foreign_models(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="known: torchscript, export, onnx"):
        export(build_model(TINY), tmp_path / "m.x", format="tflite")
    with pytest.raises(ExportError, match="build_model"):
        export(torch.nn.Linear(2, 2), tmp_path / "m.pt")


def test_options_that_would_do_nothing_are_refused(tmp_path: Path) -> None:
    model = build_model(TINY)
    with pytest.raises(ExportError, match="freeze applies to the torchscript format only, not onnx"):
        export(model, tmp_path / "m.onnx", format="onnx", freeze=True)
    with pytest.raises(ExportError, match="always frozen"):
        export(model, tmp_path / "m.aoti.pt2", format="aoti", freeze=True)
    for fmt, freeze in (("torchscript", False), ("export", False)):
        with pytest.raises(ExportError, match="prepack=False applies to frozen TorchScript"):
            export(model, tmp_path / "m.pt", format=fmt, freeze=freeze, prepack=False)
    assert list(tmp_path.iterdir()) == []


def test_inspect_reads_without_running_code(tmp_path: Path) -> None:
    target = tmp_path / "m.pt"
    export(build_model(TINY), target)
    code = (f"import sys; from unetdsl.inspect import read_metadata; m = read_metadata({str(target)!r}); "
            "assert m['unetdsl/spec_id'].startswith('v2:sha256:'); assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InspectError, match="unreadable"):
        read_metadata(junk)
    plain = tmp_path / "plain.pt"
    ts.save(ts.script(torch.nn.Linear(2, 2)), plain, {})
    with pytest.raises(InspectError, match="no unetdsl provenance"):
        read_metadata(plain)


def test_cli_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from unetdsl.cli import main

    target = tmp_path / "tiny.pt"
    assert main(["build", str(ROOT / "specs" / "tiny.yaml"), "-o", str(target)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(target)]) == 0
    out = capsys.readouterr().out
    assert "spec_id: v2:sha256:98a3b022edb75a87" in out and "format: torchscript" in out and "name: tiny" in out
    assert main(["inspect", str(tmp_path / "nope.pt")]) == 1


def test_cli_build_cuda_without_a_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    from unetdsl.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["build", str(ROOT / "specs" / "tiny.yaml"), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fmt", ["torchscript", "export", "onnx", "aoti"])
def test_cuda_half_precision_exports(dtype: torch.dtype, fmt: str, tmp_path: Path) -> None:
    if fmt == "onnx" and "CUDAExecutionProvider" not in pytest.importorskip("onnxruntime").get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider (onnxruntime-gpu)")
    model = nonzero(build_model(ROOT / "specs" / "ddpm-cifar10.yaml", device="cuda", dtype=dtype))
    report = export(model, tmp_path / f"m{FORMATS[fmt].suffix}", format=fmt)
    assert read_metadata(report.path)["unetdsl/device"] == "cuda"


def test_onnx_of_a_cuda_model_needs_the_cuda_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA model's ONNX file is checked on the CUDA provider or not made: the CPU provider would
    check another program (and has no bfloat16 convolution). The refusal says what to install."""
    ort = pytest.importorskip("onnxruntime")
    from unetdsl.artifacts import onnx_providers

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ExportError, match=r"lacks .*CPUExecutionProvider.*pip install onnxruntime-gpu"):
        onnx_providers(torch.device("cuda"))
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_providers(torch.device("cuda")) == ["CUDAExecutionProvider"]
    assert onnx_providers(torch.device("cpu")) == ["CPUExecutionProvider"]


def test_cli_offers_every_format() -> None:
    """The CLI's --format choices are written out (it imports no torch to parse arguments): they
    must be the formats the exporter has."""
    from unetdsl.cli import build_parser

    build = next(a for a in build_parser()._subparsers._group_actions[0].choices["build"]._actions  # type: ignore[union-attr]
                 if a.dest == "format")
    assert list(build.choices) == list(FORMATS)
