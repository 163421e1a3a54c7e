"""The guard that refuses builds the machine cannot do (issue class: specs that validate but cannot
be built): giant weights, giant samples, giant time tables, attention over millions of tokens.
Every refusal comes before any allocation, says the estimate and the machine's figure, and names
the override; the override builds."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

import unetdsl
from unetdsl import resources
from unetdsl.cli import main
from unetdsl.resources import Available, ResourceError

from .conftest import ROOT

DDPM = ROOT / "specs" / "ddpm-cifar10.yaml"

GIANT_WEIGHTS = """\
unetdsl: 1
name: giant
in_channels: 3
out_channels: 3
sample_size: 64
time: {embedding: learned, timesteps: 1000000, features: 8192, dim: 8192}
encoder:
  levels:
    - {channels: 8192, blocks: 16}
    - {channels: 8192, blocks: 16}
middle: {blocks: 2}
"""


@pytest.mark.parametrize("overrides", [
    ["sample_size=8192"],                                   # activations of 8192^2 samples
    ["sample_size=2048"],                                   # attention over 1024^2 tokens in encoder 1
    ["time={embedding: learned, timesteps: 1000000, features: 8192, dim: 512}"],  # a 33 GB table
], ids=["8192^2", "attention-1M-tokens", "time-table"])
def test_build_refuses_what_cannot_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch, overrides) -> None:
    # a 16 GiB machine, whatever runs the test (`test_the_machine_figure_is_real` reads the real one)
    monkeypatch.setattr(resources, "host_memory", lambda: Available(16 * 2**30, "MemAvailable"))
    out = tmp_path / "m.pt"
    out.write_bytes(b"previous")
    args = ["build", str(DDPM), "-o", str(out)]
    for o in overrides:
        args += ["--set", o]
    start = time.perf_counter()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert time.perf_counter() - start < 60  # estimated, not attempted
    assert "this build cannot run on this machine" in err and "--no-resource-check" in err
    assert "available (" in err and "at least" in err  # the estimate and the machine's figure
    assert "Traceback" not in err
    assert out.read_bytes() == b"previous"


def test_giant_weights_refused_by_build_and_by_the_api(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "giant.yaml"
    spec.write_text(GIANT_WEIGHTS)
    assert main(["build", str(spec), "-o", str(tmp_path / "g.pt")]) == 1
    err = capsys.readouterr().err
    assert "weights 452.0 GiB (float32, as built)" in err and "121," not in err
    with pytest.raises(ResourceError, match=r"121,342,779,395 parameters.*check_resources=False"):
        unetdsl.build_model(spec)
    # on the meta device nothing is allocated: no check, the count is there to read
    model = unetdsl.build_model(spec, device="meta")
    assert sum(p.numel() for p in model.parameters()) == 121_342_779_395


def test_summary_of_a_giant_spec_allocates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "giant.yaml"
    spec.write_text(GIANT_WEIGHTS)
    assert main(["summary", str(spec), "--batch", "64", "--size", "8192"]) == 0
    assert "121,342,779,395" in capsys.readouterr().out


def _machine(monkeypatch: pytest.MonkeyPatch, memory: int, flops_per_s: float = 1e12) -> None:
    monkeypatch.setattr(resources, "host_memory", lambda: Available(memory, "a test's figure"))
    monkeypatch.setattr(resources, "conv_flops_per_second", lambda device: flops_per_s)


def test_override_flag_builds_anyway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    _machine(monkeypatch, memory=2**20)  # a 1 MiB machine: the tiny spec's 0.1 MiB of weights x 2 + 1.4 MiB of activations
    tiny = ROOT / "specs" / "tiny.yaml"
    out = tmp_path / "t.pt"
    assert main(["build", str(tiny), "-o", str(out), "--set", "sample_size=64"]) == 1
    err = capsys.readouterr().err
    assert "1.0 MiB available (a test's figure)" in err and not out.exists()
    assert main(["build", str(tiny), "-o", str(out), "--set", "sample_size=64", "--no-resource-check"]) == 0
    assert out.exists()
    with pytest.raises(ResourceError):
        unetdsl.build_model(DDPM)  # 136 MiB of weights on the same 1 MiB machine
    assert unetdsl.build_model(tiny, check_resources=False) is not None


def test_long_builds_are_announced_then_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from unetdsl.estimate import estimate

    spec, _ = unetdsl.resolve_spec(DDPM, ["sample_size=512"])
    est = estimate(spec, batch=2, training=False)  # 50 TFLOP per check forward
    _machine(monkeypatch, memory=2**50, flops_per_s=3 * est.flops / 180)  # a machine doing it in 3 minutes
    notices = resources.check_build(est, device=torch.device("cpu"))
    assert len(notices) == 1 and "about 3 minutes" in notices[0]
    _machine(monkeypatch, memory=2**50, flops_per_s=3 * est.flops / (5 * 3600))  # one taking 5 hours
    with pytest.raises(ResourceError, match=r"time: .*about 5 hours, more than the 30 minutes"):
        resources.check_build(est, device=torch.device("cpu"))


def test_disk_space_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unetdsl.estimate import estimate

    class Tiny:
        f_bavail, f_frsize = 10, 4096  # 40 KiB free

    monkeypatch.setattr(resources.os, "statvfs", lambda path: Tiny())
    spec, _ = unetdsl.resolve_spec(DDPM)
    with pytest.raises(ResourceError, match=r"disk: the artifact holds 136.4 MiB of weights; .* has 40.0 KiB free"):
        resources.check_build(estimate(spec, batch=2, training=False), device=torch.device("cpu"), output_dir=tmp_path)


def test_the_machine_figure_is_real() -> None:
    have = resources.host_memory()
    assert have is not None and 0 < have.bytes < 2**50
    assert resources.conv_flops_per_second(torch.device("cpu")) > 1e8
