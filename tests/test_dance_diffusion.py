"""Dance Diffusion (diffusers' UNet1DModel in its layout) written in the language: the reference fixture
reproduced through unetdsl.interop.diffusers_unet1d in float64; the released model's spec counted on meta;
the options it needs (no stem, time features as input channels, one skip a level, reflect-padded FIR
resampling, the middle's own resampling, the decoder's width changed in its last convs, no head, a
bias-free shortcut, the middle's attention after every block) checked by hand or where written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import unetdsl
from unetdsl import SpecError, build_model, controlnet_from_unet, resolve_spec
from unetdsl.interop.diffusers_unet1d import UNet1DWeightsError, map_unet1d
from unetdsl.nn.sampling import FirResample
from unetdsl.torchscript import script

from .conftest import ROOT

SPEC = ROOT / "tests" / "fixtures" / "dance" / "dance-diffusion-1d-tiny.yaml"
CUBIC = [-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875]


def loaded() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    t = load_file(str(ROOT / "tests" / "fixtures" / "reference" / "dance-diffusion-1d.safetensors"))
    model = build_model(SPEC, dtype=torch.float64).eval()
    weights = {k: v for k, v in t.items() if not k.startswith(("input.", "output."))}
    model.load_state_dict(map_unet1d(weights, model.spec), strict=True)  # type: ignore[arg-type]
    return model, t


def test_the_fixture_is_reproduced_in_float64() -> None:
    model, t = loaded()
    assert sum(p.numel() for p in model.parameters()) == 361_962
    x, time = t["input.sample"], t["input.timestep"]
    with torch.no_grad():
        y = model(x, time)
        swapped = model(x, time.flip(0))
    assert (y - t["output.y"]).abs().max().item() <= 1e-13  # measured 2.8e-17 of an output of 0.12
    assert (swapped - y).abs().max().item() > 1e-5  # the time features reach the output (9.8e-4)


def test_the_reproduced_model_scripts_and_exports(tmp_path: Path) -> None:
    model, t = loaded()
    x, time = t["input.sample"], t["input.timestep"]
    with torch.no_grad():
        assert (script(model)(x, time) - t["output.y"]).abs().max().item() <= 1e-13
    model = model.float()
    for fmt, name in (("torchscript", "d.pt"), ("export", "d.pt2"), ("onnx", "d.onnx")):
        assert unetdsl.export(model, tmp_path / name, format=fmt).max_abs_diff <= 1e-5, fmt
    got = unetdsl.torchscript.load(tmp_path / "d.pt")(x.float(), time.float())
    assert (got.double() - t["output.y"]).abs().max().item() <= 1e-5


def test_the_released_model_counts_on_meta() -> None:
    model = build_model(ROOT / "specs" / "dance-diffusion.yaml", device="meta")
    # diffusers' own count of this config is 221,389,442: it derives 128 Fourier frequencies where the
    # released weights (and this spec) have 8; the trainable parameters are the same
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 221_389_314
    assert sum(p.numel() for p in model.parameters()) == 221_389_314 + 8
    assert model.spec.downsampling_factor == 2**13  # twelve levels and the middle halve the length


@pytest.mark.parametrize("taps", [[1.0, 1.0], [1.0, 3.0, 3.0, 1.0], [1.0, 2.0, 4.0, 4.0, 2.0, 1.0], CUBIC])
def test_reflect_padded_fir_resampling_is_the_hand_written_one(taps: list[float]) -> None:
    """Down: reflect-pad by p = (taps - 2) / 2, filter with stride 2. Up: reflect-pad by q = (p + 1) // 2,
    the transposed filter (times 2) cropping p + 2q: the length doubles exactly."""
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    f = torch.tensor(taps, dtype=torch.float64)
    f = f / f.sum()
    p = (len(taps) - 2) // 2
    w = f.expand(3, 1, len(taps))
    down = F.conv1d(F.pad(x, (p, p), mode="reflect") if p else x, w, stride=2, groups=3)
    q = (p + 1) // 2
    up = F.conv_transpose1d(F.pad(x, (q, q), mode="reflect") if q else x, 2 * w, stride=2, padding=p + 2 * q, groups=3)
    got_down = FirResample(dims=1, taps=taps, up=False, reflect=True)(x)
    got_up = FirResample(dims=1, taps=taps, up=True, reflect=True)(x)
    assert got_down.shape == (2, 3, 8) and got_up.shape == (2, 3, 32)
    assert (got_down - down).abs().max().item() <= 1e-14 and (got_up - up).abs().max().item() <= 1e-14
    const = torch.ones(1, 1, 16, dtype=torch.float64)  # reflection keeps a constant constant at the borders too
    assert torch.allclose(FirResample(dims=1, taps=taps, up=True, reflect=True)(const), torch.ones(1, 1, 32,
                                                                                                 dtype=torch.float64))


def test_one_skip_a_level_and_a_controlnet_of_it() -> None:
    model = build_model(SPEC, seed=0).eval()
    spec = model.spec
    assert spec.residual_channels == [16, 32, 32, 32, 32] and spec.residual_scales == [1, 2, 4, 8, 8]
    assert [lv.resnets[0].conv1.in_channels for lv in model.decoder] == [64, 64, 64, 32]  # x and the level's skip
    assert model.decoder[2].resnets[2].conv2.out_channels == 16  # the width changes in the last conv
    assert isinstance(model.decoder[3].resnets[2].norm2, torch.nn.Identity)  # the output: no last norm, no GELU
    cn = controlnet_from_unet(model, hint_channels=2, embedding=(8,), seed=1)
    x, t = torch.randn(2, 2, 64), torch.tensor([0.25, 0.9])
    with torch.no_grad():
        residuals = cn(x, t, hint=torch.randn(2, 2, 64))
        assert [r.shape[1] for r in residuals] == spec.residual_channels
        assert torch.equal(model(x, t, residuals=residuals), model(x, t))


def test_a_unet1d_state_dict_is_checked_against_the_spec() -> None:
    model, t = loaded()
    weights = {k: v for k, v in t.items() if not k.startswith(("input.", "output."))}
    bad = {**weights, "down_blocks.1.down.kernel": torch.ones(8, dtype=torch.float64)}
    with pytest.raises(UNet1DWeightsError, match=r"down_blocks\.1\.down\.kernel: kernel .* is not the spec's"):
        map_unet1d(bad, model.spec)
    with pytest.raises(UNet1DWeightsError, match=r"conv_in\.weight: not a part of a UNet1DModel"):
        map_unet1d({"conv_in.weight": torch.zeros(1)}, model.spec)


BASE: dict[str, Any] = {"unetdsl": 1, "name": "d", "dims": 1, "in_channels": 2, "out_channels": 2, "sample_size": 16,
                        "time": {"embedding": "fourier", "features": 4, "log": False, "into": "input"},
                        "defaults": {"norm": {"groups": 2}}, "encoder": {"levels": [{"channels": 4}, {"channels": 8}]}}


@pytest.mark.parametrize(("change", "path", "words"), [
    ({"time": {"embedding": "fourier", "into": "input"}}, ("time", "features"), "state how many"),
    ({"time": {"embedding": "fourier", "features": 4, "into": "input", "dim": 8}}, ("time", "dim"), "no MLP"),
    ({"classes": 3}, ("classes",), "join the time MLP"),
    ({"stem": {"conv": False, "channels": 8}}, ("stem", "channels"), "has no stem channels"),
    ({"head": {"conv": False}}, ("head", "conv"), "its 4 channels are not the 2 output channels"),
    ({"encoder": {"levels": [{"channels": 4, "attention": {"placement": "all"}}, {"channels": 8}]}},
     ("encoder", "levels", 0, "attention", "placement"), "placement: all is the middle's"),
    ({"channel_change": "resample", "decoder": {"upsample": "filter"}}, ("decoder", "upsample"),
     "filter has no conv"),
])
def test_the_rules_are_checked_where_written(change: dict[str, Any], path: tuple[Any, ...], words: str) -> None:
    with pytest.raises(SpecError) as info:
        resolve_spec(BASE | change)
    problems = info.value.problems
    assert any(p.path[:len(path)] == path and words in p.message for p in problems), problems


def test_the_time_features_are_input_channels() -> None:
    model = build_model(BASE | {"stem": {"conv": False}}, seed=0, dtype=torch.float64).eval()
    assert model.encoder[0].resnets[0].conv1.in_channels == 2 + 4 and model.encoder[0].resnets[0].time_emb_proj is None
    x, t = torch.randn(2, 2, 16, dtype=torch.float64), torch.tensor([0.3, 0.7], dtype=torch.float64)
    features = model.time_embedding.time_proj(t)  # (2, 4): [sin, cos](2 pi w t)
    seen: list[torch.Tensor] = []
    model.encoder[0].resnets[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        model(x, t)
    assert torch.equal(seen[0], torch.cat([x, features[:, :, None].expand(2, 4, 16)], dim=1))
