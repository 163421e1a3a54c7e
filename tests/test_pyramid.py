"""NCSN++'s progressive pyramids (`encoder.input_pyramid`, `decoder.output_pyramid`): EDM's NCSN++
reference fixture (residual input pyramid, FIR [1, 3, 3, 1], Fourier features) reproduced through the
SongUNet key mapping in float64; the CIFAR-10 spec counted on meta; the skip kinds computed by hand
from the model's own parts in 1D/2D/3D; the rules checked where they are written."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

import unetdsl
from unetdsl import SpecError, build_model, resolve_spec
from unetdsl.interop.edm import map_edm
from unetdsl.torchscript import script

from .conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "reference" / "edm-ncsnpp.safetensors"
SPEC = ROOT / "tests" / "fixtures" / "edm" / "edm-ncsnpp-tiny.yaml"


def loaded() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    t = load_file(str(FIXTURE))
    model = build_model(SPEC, seed=0, dtype=torch.float64).eval()
    weights = {k: v for k, v in t.items() if not k.startswith(("input.", "output."))}
    model.load_state_dict(map_edm(weights, model.spec), strict=True)  # type: ignore[arg-type]
    return model, {k: v for k, v in t.items() if k.startswith(("input.", "output."))}


def test_the_edm_ncsnpp_fixture_is_reproduced_in_float64() -> None:
    model, io = loaded()
    # EDM's count (its Fourier frequencies are a buffer; unetdsl's a frozen parameter, as diffusers')
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 343_779
    with torch.no_grad():
        y = model(io["input.x"], io["input.noise_labels"])
        swapped = model(io["input.x"], io["input.noise_labels"].flip(0))
    # measured: 3.5e-13 of EDM's output (its attention a float32 island), 1.4e-17 of its all-float64 variant
    assert (y - io["output.y"]).abs().max().item() <= 1e-11
    assert (y - io["output.y_all_float64"]).abs().max().item() <= 1e-14
    assert (swapped - y).abs().max().item() > 1e-5  # the Fourier noise features reach the output (3e-4)


def test_the_reproduced_ncsnpp_scripts_and_exports(tmp_path: Path) -> None:
    model, io = loaded()
    x, t = io["input.x"], io["input.noise_labels"]
    with torch.no_grad():
        assert (script(model)(x, t) - io["output.y"]).abs().max().item() <= 1e-11
    report = unetdsl.export(model.float(), tmp_path / "ncsnpp.pt")  # checked against eager at two sizes
    assert report.max_abs_diff <= 1e-5
    got = unetdsl.torchscript.load(tmp_path / "ncsnpp.pt")(x.float(), t.float())
    assert (got.double() - io["output.y"]).abs().max().item() <= 1e-5


def test_the_cifar10_spec_counts_as_edm_on_meta() -> None:
    model = build_model(ROOT / "specs" / "edm-ncsnpp-cifar10.yaml", device="meta")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 56_395_523
    assert sum(p.numel() for p in model.parameters()) == 56_395_523 + 128  # the frozen frequencies


def fir(x: torch.Tensor, taps: list[float], up: bool) -> torch.Tensor:
    """The reference resampling written out: the normalised outer product, depthwise, stride 2."""
    f = torch.tensor(taps, dtype=x.dtype)
    k = f
    for _ in range(x.dim() - 3):
        k = k.unsqueeze(-1) * f
    k = k / k.sum() * (2 ** (x.dim() - 2) if up else 1)
    w = k.expand(x.shape[1], 1, *k.shape)
    conv = {1: (F.conv1d, F.conv_transpose1d), 2: (F.conv2d, F.conv_transpose2d), 3: (F.conv3d, F.conv_transpose3d)}
    fn = conv[x.dim() - 2][1 if up else 0]
    return fn(x, w, stride=2, padding=(len(taps) - 2) // 2, groups=x.shape[1])


def tiny(dims: int, input_pyramid: str, output_pyramid: str, taps: list[float]) -> dict[str, Any]:
    return {"unetdsl": 1, "name": "pyr", "dims": dims, "in_channels": 2, "out_channels": 3, "sample_size": 8,
            "time": {"embedding": "sinusoidal"}, "defaults": {"norm": {"groups": 4}, "resample_filter": taps},
            "encoder": {"downsample": "avgpool", "input_pyramid": input_pyramid,
                        "levels": [{"channels": 8, "blocks": 1}, {"channels": 12, "blocks": 1}, {"channels": 16, "blocks": 1}]},
            "decoder": {"upsample": "resblock", "output_pyramid": output_pyramid}, "middle": {"blocks": 1}}


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_the_skip_pyramids_compute_the_hand_written_sums(dims: int) -> None:
    taps = [1.0, 3.0, 3.0, 1.0]
    model = build_model(tiny(dims, "skip", "skip", taps), seed=1, dtype=torch.float64).eval()
    x = torch.randn(2, 2, *[8] * dims, dtype=torch.float64)
    t = torch.tensor([3.0, 700.0], dtype=torch.float64)
    with torch.no_grad():
        scripted = script(model)(x, t)  # (before the hooks below, which TorchScript would compile)
    seen: dict[str, torch.Tensor] = {}
    # the features each pyramid part sees: the downsample's output (encoder), the level's input to its upsample (decoder)
    for i in (0, 1):
        model.encoder[i].downsample.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(f"down{i}", out))
        model.encoder[i].register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(f"enc{i}", out[0]))
        model.decoder[i].upsample.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(f"up{i}", a[0]))
    model.head.register_forward_pre_hook(lambda m, a: seen.__setitem__("top", a[0]))
    with torch.no_grad():
        y = model(x, t)
        # input: the image goes down beside the features; conv1x1 of it is added after each downsample
        aux = x
        for i in (0, 1):
            aux = fir(aux, taps, up=False)
            want = seen[f"down{i}"] + model.encoder[i].pyramid.conv(aux)
            assert (seen[f"enc{i}"] - want).abs().max().item() <= 1e-12
        # output: head_0 upsampled, plus head_1, upsampled, plus the model's head
        heads = [model.decoder[i].pyramid.head for i in (0, 1)]
        pyramid = fir(heads[0](seen["up0"]), taps, up=True)
        pyramid = fir(heads[1](seen["up1"]) + pyramid, taps, up=True)
        want = model.head(seen["top"]) + pyramid
    assert (y - want).abs().max().item() <= 1e-12
    assert (scripted - y).abs().max().item() <= 1e-12
    # the pyramids' weights: a 1x1 conv per join (image channels in), a head per lower decoder level
    assert model.encoder[1].pyramid.conv.weight.shape[:2] == (12, 2)
    assert model.decoder[1].pyramid.head.conv.weight.shape[:2] == (3, 12) and model.decoder[2].pyramid is None


def test_the_residual_pyramid_fuses_its_conv_with_the_filter() -> None:
    """EDM's fused conv: zero padding 1 + (taps - 2)/2, the 3x3 conv, the filter unpadded; not a conv padded by 1
    followed by the filter padded by 1 (the borders differ)."""
    taps = [1.0, 3.0, 3.0, 1.0]
    model = build_model(tiny(2, "residual", "none", taps), seed=2, dtype=torch.float64).eval()
    pyr = model.encoder[0].pyramid
    aux = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    h = torch.randn(1, 8, 4, 4, dtype=torch.float64)
    w, b = pyr.conv.weight, pyr.conv.bias
    f = torch.tensor(taps, dtype=torch.float64)
    k = (f[:, None] * f[None, :] / 64).expand(8, 1, 4, 4)
    fused = F.conv2d(F.conv2d(aux, w, padding=2), k, stride=2, groups=8) + b[:, None, None]
    with torch.no_grad():
        got, new_aux = pyr(h, aux)
        want = (h + fused) / math.sqrt(2)
        assert (got - want).abs().max().item() <= 1e-12 and new_aux is got
        unfused = fir(F.conv2d(aux, w, b, padding=1), taps, up=False)
        assert (fused - unfused).abs().max().item() > 1e-3  # the borders: what fusing changes


@pytest.mark.parametrize(("change", "path", "words"), [
    ({"encoder": {"input_pyramid": "residual", "levels": [{"channels": 8}]}, "decoder": None},
     ("encoder", "input_pyramid"), "this encoder has one level"),
    ({"encoder": {"levels": [{"channels": 8}]}, "decoder": {"output_pyramid": "skip"}},
     ("decoder", "output_pyramid"), "this decoder has one level"),
    ({"encoder": {"input_pyramid": "ladder", "levels": [{"channels": 8}, {"channels": 8}]}},
     ("encoder", "input_pyramid"), "not an allowed value"),
    ({"defaults": {"norm": {"groups": 4}, "resample_filter": [1, 3, 3, 1]}, "encoder": {"downsample": "conv",
      "levels": [{"channels": 8}, {"channels": 8}]}}, ("defaults", "resample_filter"), "resamples by conv"),
    # every level normalises with 2 groups, the heads with the defaults' 8: 12 channels only the pyramid's head sees
    ({"defaults": {"norm": {"groups": 8}}, "middle": {"norm": {"groups": 2}},
      "encoder": {"levels": [{"channels": c, "norm": {"groups": 2}} for c in (8, 12, 16)]},
      "decoder": {"output_pyramid": "skip"}},
     ("defaults", "norm", "groups"), "the output pyramid's head norm at decoder level 1"),
])
def test_the_rules_are_checked_where_written(change: dict[str, Any], path: tuple[Any, ...], words: str) -> None:
    data = {"unetdsl": 1, "name": "p", "in_channels": 2, "out_channels": 2, "sample_size": 8,
            "time": {"embedding": "sinusoidal"}, "defaults": {"norm": {"groups": 4}}}
    data |= {k: v for k, v in change.items() if v is not None}
    with pytest.raises(SpecError) as info:
        resolve_spec(data)
    assert any(p.path[:len(path)] == path and words in p.message for p in info.value.problems), info.value.problems
    if "ladder" in str(change):
        assert info.value.problems[0].allowed == "none, skip or residual"


def test_a_filter_on_conv_resampling_is_the_pyramids_where_there_is_one() -> None:
    data = tiny(2, "skip", "none", [1.0, 3.0, 3.0, 1.0]) | {"encoder": {
        "downsample": "conv", "input_pyramid": "skip", "levels": [{"channels": 8}, {"channels": 8}]}}
    spec, _ = resolve_spec(data)
    assert spec.encoder[0].resample_filter == [1.0, 3.0, 3.0, 1.0] and spec.input_pyramid == "skip"


def test_an_autoencoders_halves_keep_their_own_pyramid() -> None:
    data = yaml.safe_load((ROOT / "specs" / "sd-vae.yaml").read_text())
    data["encoder"]["input_pyramid"] = "skip"
    data["decoder"] = {**data.get("decoder", {}), "output_pyramid": "skip"}
    spec, _ = resolve_spec(data)
    assert spec.part("encoder").output_pyramid == "none" and spec.part("encoder").input_pyramid == "skip"
    assert spec.part("decoder").input_pyramid == "none" and spec.part("decoder").output_pyramid == "skip"
