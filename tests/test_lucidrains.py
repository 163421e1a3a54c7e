"""lucidrains' denoising-diffusion-pytorch Unet and Unet1D written in the language: both reference
fixtures reproduced through unetdsl.interop.lucidrains in float64; the README's Unet(64, (1, 2, 4, 8))
counted on meta; the options it needs (RMSNorm, time_at first, linear attention, attention of its own
width with memory slots, pixel_unshuffle / conv4, channel_change resample, skips: blocks, the head's
stem block, middle.channels) each checked against a hand computation or where it is written."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import unetdsl
from unetdsl import SpecError, build_model, controlnet_from_unet, resolve_spec
from unetdsl.interop.lucidrains import LucidrainsWeightsError, map_lucidrains
from unetdsl.torchscript import script

from .conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures"


def loaded(name: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    t = load_file(str(FIXTURES / "reference" / f"{name}.safetensors"))
    model = build_model(FIXTURES / "lucidrains" / f"{name}-tiny.yaml", dtype=torch.float64).eval()
    weights = {k: v for k, v in t.items() if not k.startswith(("input.", "output."))}
    model.load_state_dict(map_lucidrains(weights, model.spec), strict=True)  # type: ignore[arg-type]
    return model, t


@pytest.mark.parametrize(("name", "count"), [("lucidrains-unet", 195_155), ("lucidrains-unet1d", 131_362)])
def test_the_fixture_is_reproduced_in_float64(name: str, count: int) -> None:
    model, t = loaded(name)
    assert sum(p.numel() for p in model.parameters()) == count
    x, time = t["input.x"], t["input.time"]
    with torch.no_grad():
        y = model(x, time)
        swapped = model(x, time.flip(0))
    # measured 2.8e-17 (2-D) and 1.0e-17 (1-D) of the all-float64 variant; lucidrains' own output differs from
    # that by its float32 frequencies (6.4e-10 / 2.5e-10), as the fixture's README says
    assert (y - t["output.y_all_float64"]).abs().max().item() <= 1e-13
    assert (y - t["output.y"]).abs().max().item() <= 1e-9
    assert (swapped - y).abs().max().item() > 1e-5  # the timestep reaches the output (4.4e-4 / 8e-5)


def test_the_reproduced_unet_scripts_and_exports(tmp_path: Path) -> None:
    model, t = loaded("lucidrains-unet")
    x, time = t["input.x"], t["input.time"]
    with torch.no_grad():
        assert (script(model)(x, time) - t["output.y_all_float64"]).abs().max().item() <= 1e-13
    model = model.float()
    for fmt, name in (("torchscript", "l.pt"), ("export", "l.pt2"), ("onnx", "l.onnx")):
        assert unetdsl.export(model, tmp_path / name, format=fmt).max_abs_diff <= 1e-5, fmt
    got = unetdsl.torchscript.load(tmp_path / "l.pt")(x.float(), time.float())
    assert (got.double() - t["output.y"]).abs().max().item() <= 1e-5


def test_the_readme_unet_counts_as_lucidrains_on_meta() -> None:
    model = build_model(ROOT / "specs" / "lucidrains-unet.yaml", device="meta")
    assert sum(p.numel() for p in model.parameters()) == 35_711_491


def test_rms_norm_is_the_channel_norm_times_the_gain() -> None:
    from unetdsl.nn.layers import norm

    layer = norm("rms", 2, 6, 6, 1e-12)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(1.0, 7.0))
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    want = x / x.pow(2).sum(1, keepdim=True).sqrt() * torch.arange(1.0, 7.0).reshape(1, 6, 1, 1) * math.sqrt(6)
    assert (layer.double()(x) - want).abs().max().item() <= 1e-12


def test_pixel_unshuffle_puts_each_2x2_block_into_channels_in_lucidrains_order() -> None:
    from unetdsl.nn.sampling import PixelUnshuffleDownsample

    down = PixelUnshuffleDownsample(dims=2, channels=2, out_channels=8).double()
    with torch.no_grad():  # the 1x1 conv as the identity: what reaches it is the rearranged input
        down.conv.weight.copy_(torch.eye(8).reshape(8, 8, 1, 1))
        down.conv.bias.zero_()
    x = torch.randn(1, 2, 4, 6, dtype=torch.float64)
    y = down(x, None)
    for c in range(2):
        for dy in range(2):
            for dx in range(2):  # channel c * 4 + 2 dy + dx: 'b c (h p1) (w p2) -> b (c p1 p2) h w'
                assert torch.equal(y[0, c * 4 + 2 * dy + dx], x[0, c, dy::2, dx::2])


def test_linear_attention_with_memory_is_the_hand_written_formula() -> None:
    spec = {"unetdsl": 1, "name": "la", "dims": 1, "in_channels": 2, "out_channels": 2, "sample_size": 8,
            "time": {"embedding": "sinusoidal"}, "defaults": {"norm": {"type": "rms", "eps": 1e-12}},
            "encoder": {"levels": [{"channels": 6, "blocks": 1, "attention": {
                "type": "linear", "heads": 2, "head_dim": 4, "memory": 3, "qkv_bias": False}}]}}
    block = build_model(spec, seed=0, dtype=torch.float64).encoder[0].attentions[0]
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    h = block.group_norm(x)
    split = [w.reshape(2, 4, 6) for w in (block.to_q.weight, block.to_k.weight, block.to_v.weight)]
    out = []
    for head in range(2):
        q, k, v = (torch.einsum("dc,bcn->bdn", w[head], h) for w in split)  # (B, d, N)
        k = torch.cat([block.memory[0, head].T.expand(2, 4, 3), k], dim=2)  # memory (M, d) as (d, M), first
        v = torch.cat([block.memory[1, head].T.expand(2, 4, 3), v], dim=2)
        q, k = q.softmax(dim=1) * 4**-0.5, k.softmax(dim=2)
        context = torch.einsum("bdn,ben->bde", k, v)
        out.append(torch.einsum("bde,bdn->ben", context, q))
    want = x + block.out_norm(torch.einsum("oc,bcn->bon", block.to_out.weight, torch.cat(out, 1))
                              + block.to_out.bias[None, :, None])
    with torch.no_grad():
        assert (block(x) - want).abs().max().item() <= 1e-12
    assert block.to_q.bias is None and block.to_out.bias is not None


def test_full_attention_of_its_own_width_attends_to_its_memory_first() -> None:
    spec = {"unetdsl": 1, "name": "fa", "dims": 1, "in_channels": 2, "out_channels": 2, "sample_size": 4,
            "time": {"embedding": "sinusoidal"}, "defaults": {"norm": {"groups": 2}},
            "encoder": {"levels": [{"channels": 6, "blocks": 1, "attention": {"heads": 2, "head_dim": 5, "memory": 2}}]}}
    block = build_model(spec, seed=0, dtype=torch.float64).encoder[0].attentions[0]
    assert block.to_q.weight.shape == (10, 6) and block.to_out.weight.shape == (6, 10)
    x = torch.randn(1, 6, 4, dtype=torch.float64)
    tokens = block.group_norm(x)[0].T  # (N, C)
    heads = []
    for head in range(2):
        rows = slice(5 * head, 5 * head + 5)
        q = tokens @ block.to_q.weight[rows].T + block.to_q.bias[rows]
        k = torch.cat([block.memory[0, head], tokens @ block.to_k.weight[rows].T + block.to_k.bias[rows]])
        v = torch.cat([block.memory[1, head], tokens @ block.to_v.weight[rows].T + block.to_v.bias[rows]])
        heads.append(torch.softmax(q @ k.T / math.sqrt(5), dim=1) @ v)  # (N, 5): 2 memory slots + 4 positions
    want = x + (torch.cat(heads, 1) @ block.to_out.weight.T + block.to_out.bias).T[None]
    with torch.no_grad():
        assert (block(x) - want).abs().max().item() <= 1e-12


def test_time_at_first_scales_and_shifts_the_first_norm() -> None:
    spec = {"unetdsl": 1, "name": "tf", "dims": 1, "in_channels": 2, "out_channels": 2, "sample_size": 4,
            "time": {"embedding": "sinusoidal", "injection": "scale_shift"},
            "defaults": {"norm": {"type": "rms", "eps": 1e-12}, "order": "post", "time_at": "first"},
            "stem": {"channels": 3}, "encoder": {"levels": [{"channels": 4, "blocks": 1}]}}
    block = build_model(spec, seed=0, dtype=torch.float64).encoder[0].resnets[0]  # 3 -> 4 channels
    x, temb = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, block.time_emb_proj.in_features, dtype=torch.float64)
    scale, shift = block.time_emb_proj(F.silu(temb))[:, :, None].chunk(2, dim=1)
    h = F.silu(block.norm1(block.conv1(x)) * (1 + scale) + shift)  # lucidrains' Block1
    h = F.silu(block.norm2(block.conv2(h)))  # Block2: no time
    with torch.no_grad():
        assert (block(x, temb) - (h + block.conv_shortcut(x))).abs().max().item() <= 1e-12


def test_skips_blocks_keeps_block_outputs_only_and_a_controlnet_follows() -> None:
    model = build_model(FIXTURES / "lucidrains" / "lucidrains-unet-tiny.yaml", seed=0).eval()
    spec = model.spec
    assert spec.residual_channels == [16, 16, 16, 16, 32] and spec.residual_scales == [1, 1, 2, 2, 2]
    cn = controlnet_from_unet(model, embedding=(8,), seed=1)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10.0, 900.0])
    with torch.no_grad():
        residuals = cn(x, t, hint=torch.randn(2, 3, 16, 16))
        assert [r.shape[1] for r in residuals] == spec.residual_channels
        assert torch.equal(model(x, t, residuals=residuals), model(x, t))  # zero convs: the pair is the U-Net


def test_a_lucidrains_state_dict_needs_the_lucidrains_layout() -> None:
    model, t = loaded("lucidrains-unet")
    weights = {k: v for k, v in t.items() if not k.startswith(("input.", "output."))}
    plain, _ = resolve_spec(FIXTURES / "edm" / "edm-ddpmpp-tiny.yaml")
    with pytest.raises(LucidrainsWeightsError, match="channel_change: resample"):
        map_lucidrains(weights, plain)
    with pytest.raises(LucidrainsWeightsError, match=r"downs\.0\.7\.weight: not a part of a lucidrains Unet"):
        map_lucidrains({"downs.0.7.weight": torch.zeros(1)}, model.spec)
    with pytest.raises(LucidrainsWeightsError, match=r"downs\.5\.0\.mlp\.1\.weight: the spec's encoder has 2 levels"):
        map_lucidrains({"downs.5.0.mlp.1.weight": torch.zeros(1)}, model.spec)


BASE: dict[str, Any] = {"unetdsl": 1, "name": "r", "in_channels": 2, "out_channels": 2, "sample_size": 8,
                        "time": {"embedding": "sinusoidal"}, "defaults": {"norm": {"groups": 2}},
                        "encoder": {"levels": [{"channels": 4}, {"channels": 8}]}}


@pytest.mark.parametrize(("change", "path", "words"), [
    ({"defaults": {"norm": {"groups": 2}, "time_at": "first"}}, ("defaults", "time_at"), "in pre order normalises"),
    ({"channel_change": "resample", "encoder": {"downsample": "avgpool", "levels": [{"channels": 4}, {"channels": 8}]}},
     ("encoder", "downsample"), "avgpool has no conv to do it"),
    ({"middle": {"channels": 16, "blocks": 0}}, ("middle", "channels"), "no ResBlock to change the width"),
    ({"model": "encoder", "head": {"stem_block": True}}, ("head", "stem_block"), "a U-Net only"),
    ({"encoder": {"levels": [{"channels": 4, "attention": {"type": "joint", "heads": 1, "head_dim": 2}},
                             {"channels": 8}]}, "context_dim": 4},
     ("encoder", "levels", 0, "attention"), "a joint block works at its level's width"),
    ({"encoder": {"levels": [{"channels": 4, "attention": {"type": "transformer", "heads": 1, "memory": 2}},
                             {"channels": 8}]}, "context_dim": 4},
     ("encoder", "levels", 0, "attention", "memory"), "a setting of the self and linear attention blocks"),
])
def test_the_rules_are_checked_where_written(change: dict[str, Any], path: tuple[Any, ...], words: str) -> None:
    with pytest.raises(SpecError) as info:
        resolve_spec(BASE | change)
    problems = info.value.problems
    assert any(p.path[:len(path)] == path and words in (p.message + (p.hint or "")) for p in problems), problems


def test_a_wider_middle_is_reached_by_its_first_block_by_default() -> None:
    model = build_model(BASE | {"middle": {"channels": 16}}, seed=0).eval()
    assert model.spec.middle.in_channels == 8 and model.middle.resnets[0].conv1.in_channels == 8
    assert model.decoder[0].resnets[0].conv1.in_channels == 16 + 8  # the middle's width and the skip
    with torch.no_grad():
        assert model(torch.randn(1, 2, 8, 8), torch.tensor([3])).shape == (1, 2, 8, 8)
