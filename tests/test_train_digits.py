"""examples/train_digits.py, CI-sized: training lowers the held-out denoising loss well below the
untrained model's, a resumed run continues exactly, the same script runs under torchrun, and the
trained checkpoint goes through `unetdsl build --weights` to a TorchScript file whose samples equal
the eager model's. The full run (figures in docs/training.md) is the example itself."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest
import torch

import unetdsl
from unetdsl.cli import main as cli
from unetdsl.torchscript import load as load_torchscript

from .conftest import ROOT

pytest.importorskip("sklearn")


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_digits", ROOT / "examples" / "train_digits.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_digits"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


td = load_example()
# 100 steps bring the held-out loss to 0.12 of the untrained model's on this machine (17 s on 2 threads);
# the bar below is 0.45
SHORT = td.Config(steps=100, batch=64, lr=2e-3, warmup=20, ema=0.9, checkpoint_every=50, samples=0, progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("digits")
    torch.set_num_threads(2)
    result = td.train(replace(SHORT, out=str(out)))
    return out, result


def test_training_lowers_the_held_out_denoising_loss(trained: tuple[Path, object]) -> None:
    out, result = trained
    assert result.step == 100
    assert result.held_out_loss_untrained > 0.9  # an untrained net predicts noise about as well as zero
    assert result.held_out_loss_trained < 0.45 * result.held_out_loss_untrained, result
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-000050", "step-000100"]
    assert (out / "checkpoints" / "latest").resolve().name == "step-000100"


def test_the_checkpoint_is_a_unetdsl_save_with_its_spec(trained: tuple[Path, object]) -> None:
    out, _ = trained
    model = unetdsl.load(out / "checkpoints" / "latest" / "ema.safetensors")
    assert model.spec.name == "ddpm-digits" and not model.training


def test_trained_checkpoint_deploys_to_torchscript_with_equal_samples(trained: tuple[Path, object],
                                                                       tmp_path: Path) -> None:
    out, _ = trained
    weights = out / "checkpoints" / "latest" / "ema.safetensors"
    target = tmp_path / "digits.pt"
    assert cli(["build", str(ROOT / "specs" / "ddpm-digits.yaml"), "--weights", str(weights), "-o", str(target)]) == 0
    scripted = load_torchscript(target)
    eager = unetdsl.load(weights)
    schedule = td.Schedule()
    want = td.sample(eager, schedule, n=16, steps=50, seed=3)
    got = td.sample(scripted, schedule, n=16, steps=50, seed=3)
    assert want.std() > 0.3  # real images, not a constant
    assert (got - want).abs().max().item() <= 1e-5


def test_a_resumed_run_continues_exactly(tmp_path: Path) -> None:
    cfg = replace(SHORT, steps=24, checkpoint_every=12)
    td.train(replace(cfg, out=str(tmp_path / "straight")))
    td.train(replace(cfg, out=str(tmp_path / "resumed"), steps=12))  # stops at 12 ...
    td.train(replace(cfg, out=str(tmp_path / "resumed")))  # ... and continues from its checkpoint
    for name in ("model", "ema"):
        a = unetdsl.load(tmp_path / "straight" / "checkpoints" / "latest" / f"{name}.safetensors").state_dict()
        b = unetdsl.load(tmp_path / "resumed" / "checkpoints" / "latest" / f"{name}.safetensors").state_dict()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=lambda m, k=k, name=name: f"{name} {k}: {m}")


def test_the_same_script_runs_under_torchrun(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", str(ROOT / "examples" / "train_digits.py"),
                           "--out", str(tmp_path), "--steps", "10", "--batch", "32", "--samples", "0",
                           "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Grad strides do not match" not in proc.stderr  # DDP gets gradients in its bucket layout
    assert (tmp_path / "checkpoints" / "latest" / "model.safetensors").is_file()


def test_frechet_distance_matches_scipy() -> None:
    linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    b = torch.randn(400, 6, generator=g, dtype=torch.float64) * 2.0 + 1.0
    mu_a, mu_b, c_a, c_b = a.mean(0), b.mean(0), torch.cov(a.T).numpy(), torch.cov(b.T).numpy()
    root = linalg.sqrtm(c_a @ c_b).real
    want = float((mu_a - mu_b).square().sum()) + float(c_a.trace() + c_b.trace() - 2.0 * root.trace())
    assert td.frechet_distance(a, b) == pytest.approx(want, rel=1e-9)
    assert td.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
