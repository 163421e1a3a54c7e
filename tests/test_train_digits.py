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
# 60 steps bring the held-out loss to 0.13 of the untrained model's on this machine (16 s on the
# worker's one thread; 100 steps: 0.12); the bar below is 0.45
SHORT = td.Config(steps=60, batch=64, lr=2e-3, warmup=20, ema=0.9, checkpoint_every=30, samples=0, progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("digits")
    result = td.train(replace(SHORT, out=str(out)))
    return out, result


def test_training_lowers_the_held_out_denoising_loss(trained: tuple[Path, object]) -> None:
    out, result = trained
    assert result.step == SHORT.steps == 60
    assert result.held_out_loss_untrained > 0.9  # an untrained net predicts noise about as well as zero
    assert result.held_out_loss_trained < 0.45 * result.held_out_loss_untrained, result
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-000030", "step-000060"]
    assert (out / "checkpoints" / "latest").resolve().name == "step-000060"


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
    cfg = replace(SHORT, steps=8, checkpoint_every=4)
    td.train(replace(cfg, out=str(tmp_path / "straight")))
    td.train(replace(cfg, out=str(tmp_path / "resumed"), steps=4))  # stops at 4 ...
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


# --- the keep policy deletes only what the example wrote (issue 22, class 2) -------------------------
def tiny_state() -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer]:
    from torch.optim.swa_utils import AveragedModel

    from .conftest import TINY

    model = unetdsl.build_model(TINY, seed=0)
    return model, AveragedModel(model), torch.optim.AdamW(model.parameters())


def test_the_keep_policy_never_touches_a_users_folders(tmp_path: Path) -> None:
    model, ema, opt = tiny_state()
    mine = ["step-000002-backup", "step-999999-notes", "step-final", "steps"]
    for name in mine:
        (tmp_path / name).mkdir()
        (tmp_path / name / "keep.txt").write_text(name)
    for step in (1, 2, 3, 4):
        td.save_checkpoint(tmp_path, step, model, ema, opt, keep=2)
        assert (tmp_path / "latest").resolve() == (tmp_path / f"step-{step:06d}").resolve()
        assert (tmp_path / "latest" / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.glob("step-0000*")) == ["step-000002-backup", "step-000003", "step-000004"]
    for name in mine:  # every folder of the user's is as it was
        assert (tmp_path / name / "keep.txt").read_text() == name


def test_the_newest_by_step_number_stay_past_a_million_steps(tmp_path: Path) -> None:
    model, ema, opt = tiny_state()
    for step in (999_998, 999_999, 1_000_000, 1_000_001):  # names sort 1000000 < 999998
        td.save_checkpoint(tmp_path, step, model, ema, opt, keep=2)
        assert (tmp_path / "latest" / "model.safetensors").is_file()  # the one just written is never deleted
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-1000000", "step-1000001"]


def test_a_folder_of_the_users_at_a_checkpoints_name_is_refused(tmp_path: Path) -> None:
    model, ema, opt = tiny_state()
    (tmp_path / "step-000005").mkdir()
    (tmp_path / "step-000005" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="did not write it"):
        td.save_checkpoint(tmp_path, 5, model, ema, opt)
    assert (tmp_path / "step-000005" / "keep.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".step-*"))
    (tmp_path / "checkpoints.json").write_text('{"steps": "all"}')  # a manifest that is not one
    with pytest.raises(SystemExit, match="not a checkpoint manifest"):
        td.save_checkpoint(tmp_path, 6, model, ema, opt)


def test_a_killed_runs_temporary_folder_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    model, ema, opt = tiny_state()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".step-000001.tmp{dead.stdout.strip()}"
    live = tmp_path / f".step-000001.tmp{os.getppid()}"  # a process that is running
    for folder in (stale, live):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"partial")
    td.save_checkpoint(tmp_path, 2, model, ema, opt)
    assert not stale.exists() and live.exists()


# --- the flags are checked before anything runs (issue 22, class 14) ---------------------------------
@pytest.mark.parametrize("flags,says", [
    (["--steps", "-5"], "--steps: expected a value at least 1"), (["--steps", "0"], "--steps"),
    (["--batch", "0"], "--batch"), (["--checkpoint-every", "0"], "--checkpoint-every"),
    (["--warmup", "0"], "--warmup"), (["--lr", "0"], "--lr: expected a value more than 0"),
    (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"), (["--lr", "-1e-3"], "--lr"),
    (["--ema", "1"], "--ema: expected a value at least 0 and below 1"), (["--ema", "-0.1"], "--ema"),
    (["--samples", "-1"], "--samples"), (["--sample-steps", "0"], "--sample-steps"),
    (["--sample-steps", "1001"], "at most 1000"), (["--seed", "-1"], "--seed"), (["--steps", "1.5"], "whole number"),
])
def test_bad_flags_exit_2_before_anything_runs(flags: list[str], says: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        td.main(["--out", str(tmp_path / "run"), *flags])
    assert info.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_flags_at_their_bounds_are_accepted() -> None:
    for name, (ends, low, high) in td.BOUNDS.items():
        kind = type(getattr(td.Config(), name))
        parse = td._bounded(name, kind)
        if ends[0] == "[":
            assert parse(str(kind(low))) == low
        if high is not None and ends[1] == "]":
            assert parse(str(kind(high))) == high


def test_out_onto_a_file_or_an_input_is_refused_before_training(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(td, "train", lambda cfg: pytest.fail("training began"))
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(SystemExit, match="is a file; give a folder"):
        td.main(["--out", str(afile)])
    assert afile.read_text() == "mine"
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").symlink_to(td.SPEC)  # writing metrics.json would replace the spec it reads
    with pytest.raises(SystemExit, match="spec"):
        td.main(["--out", str(out)])
