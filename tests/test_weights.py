"""Weights: strict safetensors loading with a message per kind of mismatch; save/load round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import unetdsl
from unetdsl import build_model
from unetdsl.cli import main
from unetdsl.weights import WeightsError, load_weights

from .conftest import ROOT, TINY


@pytest.fixture
def weights(tmp_path: Path) -> tuple[dict[str, torch.Tensor], Path]:
    model = build_model(TINY)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return state, tmp_path / "w.safetensors"


def test_round_trip_through_save_and_load(tmp_path: Path) -> None:
    model = build_model(TINY)
    unetdsl.save(model, tmp_path / "m.safetensors")
    again = unetdsl.load(tmp_path / "m.safetensors")
    assert again.spec == model.spec
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 9])
    with torch.inference_mode():
        assert torch.equal(again(x, t), model(x, t))


def test_load_weights_fills_every_tensor(weights: tuple[dict[str, torch.Tensor], Path]) -> None:
    state, path = weights
    save_file(state, str(path))
    fresh = build_model(TINY)
    assert load_weights(fresh, path) == torch.float32
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.pop("head.conv.weight"), "missing 1 tensor(s) the model needs: head.conv.weight"),
        (lambda s: s.__setitem__("extra.weight", torch.zeros(2)),
         "1 unexpected tensor(s) the model has no place for: extra.weight"),
        (lambda s: s.__setitem__("head.conv.bias", torch.zeros(4)), "wrong shape: head.conv.bias [4] (model: [3])"),
        (lambda s: s.__setitem__("conv_in.bias", torch.full((4,), float("nan"))), "NaN or Inf: conv_in.bias"),
        (lambda s: s.__setitem__("conv_in.bias", s["conv_in.bias"].half()), "mixed floating dtypes float16, float32"),
        (lambda s: s.__setitem__("conv_in.bias", s["conv_in.bias"].long()), "wrong kind: conv_in.bias int64 (model: float32)"),
    ],
    ids=["missing", "unexpected", "shape", "nan", "mixed-dtype", "kind"],
)
def test_each_mismatch_gets_its_message(  # type: ignore[no-untyped-def]
    weights: tuple[dict[str, torch.Tensor], Path], mutate, message: str
) -> None:
    state, path = weights
    mutate(state)
    save_file(state, str(path))
    fresh = build_model(TINY)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(WeightsError) as info:
        load_weights(fresh, path)
    assert message in str(info.value)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in before.items())  # nothing partially loaded


def test_truncated_and_pickled_files_are_refused(weights: tuple[dict[str, torch.Tensor], Path], tmp_path: Path) -> None:
    state, path = weights
    save_file(state, str(path))
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(WeightsError, match="lie outside the file; the file is truncated or corrupt"):
        load_weights(build_model(TINY), truncated)
    pickled = tmp_path / "w.pt"
    torch.save(state, pickled)
    with pytest.raises(WeightsError, match="never pickles"):
        load_weights(build_model(TINY), pickled)
    with pytest.raises(WeightsError, match="no such weights file"):
        load_weights(build_model(TINY), tmp_path / "absent.safetensors")


def test_half_precision_weights_keep_their_dtype(weights: tuple[dict[str, torch.Tensor], Path]) -> None:
    state, path = weights
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(path))
    fresh = build_model(TINY)
    assert load_weights(fresh, path) == torch.float16
    assert next(fresh.parameters()).dtype == torch.float16


def test_cli_build_with_weights(weights: tuple[dict[str, torch.Tensor], Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    state, path = weights
    save_file(state, str(path))
    out = tmp_path / "m.pt"
    assert main(["build", str(ROOT / "specs" / "tiny.yaml"), "--weights", str(path), "-o", str(out)]) == 0
    from unetdsl.torchscript import load

    loaded = load(out)
    assert torch.equal(loaded.state_dict()["head.conv.weight"], state["head.conv.weight"])
    state.pop("head.conv.weight")
    save_file(state, str(path))
    assert main(["build", str(ROOT / "specs" / "tiny.yaml"), "--weights", str(path), "-o", str(tmp_path / "n.pt")]) == 1
    assert "missing 1 tensor(s)" in capsys.readouterr().err
    assert not (tmp_path / "n.pt").exists()


def test_load_needs_a_spec_in_the_metadata(weights: tuple[dict[str, torch.Tensor], Path]) -> None:
    state, path = weights
    save_file(state, str(path))
    with pytest.raises(WeightsError, match="no unetdsl spec"):
        unetdsl.load(path)
