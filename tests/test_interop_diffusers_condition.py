"""diffusers UNet2DConditionModel interop (the Stable Diffusion U-Nets): configs become specs with
transformer attention and a context, weights carry over, outputs agree with diffusers to 1e-5
(fp32) eagerly and through TorchScript, and specs go back to diffusers. Every model is randomly
initialised and perturbed here (no downloads)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from unetdsl import SpecError, build_model
from unetdsl.cli import main
from unetdsl.interop.diffusers import from_diffusers, spec_from_diffusers, to_diffusers
from unetdsl.torchscript import script

from .conftest import ROOT

diffusers = pytest.importorskip("diffusers")
logging.getLogger("diffusers").setLevel(logging.ERROR)

# the shape of diffusers' own UNet2DConditionModel test config, smaller
SMALL: dict[str, Any] = dict(block_out_channels=(16, 32), norm_num_groups=8, layers_per_block=1, sample_size=8,
                             cross_attention_dim=12, attention_head_dim=2,
                             down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                             up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
THREE: dict[str, Any] = dict(block_out_channels=(16, 32, 32), sample_size=16,
                             down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                             up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))

CONFIGS: dict[str, dict[str, Any]] = {
    "sd15-like": dict(SMALL),
    "sd2-like": {**SMALL, **THREE, "attention_head_dim": [2, 4, 4], "use_linear_projection": True,
                 "upcast_attention": True},
    "sdxl-depths": {**SMALL, **THREE, "transformer_layers_per_block": [1, 2, 3], "attention_head_dim": [1, 2, 4]},
    "only-cross": {**SMALL, "only_cross_attention": True},
    "only-cross-per-level": {**SMALL, **THREE, "only_cross_attention": [True, False, False]},
    "per-level-blocks": {**SMALL, **THREE, "layers_per_block": [1, 2, 1]},
    "scale-shift-classes": {**SMALL, "resnet_time_scale_shift": "scale_shift", "num_class_embeds": 5},
    "no-mid-block": {**SMALL, "mid_block_type": None},
    "padding0-gelu-eps": {**SMALL, "downsample_padding": 0, "act_fn": "gelu", "norm_eps": 1e-6, "freq_shift": 1,
                          "flip_sin_to_cos": False},
    "center-time-dim-conv1": {**SMALL, "center_input_sample": True, "time_embedding_dim": 24, "conv_out_kernel": 1,
                              "in_channels": 3, "out_channels": 5, "dropout": 0.1},
    "all-cross-rect": {**SMALL, "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                       "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), "sample_size": (8, 16)},
    # the stem's kernel and the middle's residual scale (stem.kernel_size; middle.residual_scale = 1 / 1.5)
    "conv-in-7-mid-scale": {**SMALL, "conv_in_kernel": 7, "mid_block_scale_factor": 1.5},
}


def make(config: dict[str, Any]) -> torch.nn.Module:
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(**config).eval()
    with torch.no_grad():  # perturb every tensor: zeros and ones (norms, zero-inits) would hide mapping mistakes
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return unet


def inputs(config: dict[str, Any], tokens: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None,
                                                             torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    size = config.get("sample_size", 8)
    hw = tuple(size) if isinstance(size, tuple) else (size, size)
    x = torch.randn((3, config.get("in_channels", 4), *hw), generator=g)
    t = torch.tensor([0, 250, 999])
    y = torch.tensor([0, 4, 2]) if config.get("num_class_embeds") else None
    context = torch.randn((3, tokens, config["cross_attention_dim"]), generator=g)
    return x, t, y, context


def test_there_are_at_least_10_configurations() -> None:
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("name", list(CONFIGS))
def test_outputs_match_diffusers_eager_and_scripted(name: str) -> None:
    config = CONFIGS[name]
    unet = make(config)
    model = from_diffusers(unet)
    x, t, y, context = inputs(config)
    with torch.no_grad():  # (in-process scripted: no_grad, not inference_mode; see test_torchscript.py)
        want = unet(x, t, encoder_hidden_states=context, class_labels=y).sample
        got = model(x, t, y, context)
        scripted = script(model)(x, t, y, context)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5
    assert (scripted - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", ["sd15-like", "sd2-like", "sdxl-depths", "only-cross-per-level", "per-level-blocks",
                                  "center-time-dim-conv1"])
def test_back_to_diffusers(name: str) -> None:
    config = CONFIGS[name]
    model = from_diffusers(make(config))
    unet = to_diffusers(model)
    assert type(unet).__name__ == "UNet2DConditionModel"
    x, t, y, context = inputs(config, tokens=4)
    with torch.inference_mode():
        assert (unet(x, t, encoder_hidden_states=context, class_labels=y).sample
                - model(x, t, y, context)).abs().max().item() <= 1e-5


def test_the_config_keys_mean_what_diffusers_makes_of_them() -> None:
    # attention_head_dim is the number of heads (diffusers issue 2011); the up blocks reverse the lists
    spec = spec_from_diffusers({"_class_name": "UNet2DConditionModel", **CONFIGS["sdxl-depths"]})
    enc = [lv.attention for lv in spec.encoder.levels]  # type: ignore[union-attr]
    assert [(a.heads, a.depth) if a else None for a in enc] == [(1, 1), (2, 2), None]
    dec = [lv.attention for lv in spec.decoder.levels]  # type: ignore[union-attr]
    assert [(a.heads, a.depth) if a else None for a in dec] == [None, (2, 2), (1, 1)]
    assert spec.middle.attention.heads == 4 and spec.middle.attention.depth == 3  # type: ignore[union-attr]
    assert spec.context_dim == 12


def test_stable_diffusion_shapes_count_exactly_on_meta() -> None:
    for name, params in {"sd15-unet": 859_520_964, "sd2-unet": 865_910_724}.items():
        model = build_model(ROOT / "specs" / f"{name}.yaml", device="meta")
        assert sum(p.numel() for p in model.parameters()) == params, name
        unet = to_diffusers_meta(model)
        assert sum(p.numel() for p in unet.parameters()) == params


def to_diffusers_meta(model: torch.nn.Module) -> torch.nn.Module:
    """The diffusers model of the same config, on meta (its weights are not copied)."""
    from unetdsl.interop.diffusers_condition import condition_config

    config = {k: v for k, v in condition_config(model.spec).items() if k != "_class_name"}  # type: ignore[arg-type]
    with torch.device("meta"):
        return diffusers.UNet2DConditionModel(**config)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"num_attention_heads": 8}, "num_attention_heads"),
        ({"addition_embed_type": "image"}, "addition_embed_type"),  # Kandinsky's image embeddings (not yet)
        ({"time_cond_proj_dim": 8}, "time_cond_proj_dim"),  # LCM's guidance embedding (not yet)
        ({"resnet_out_scale_factor": 0.1}, "resnet_out_scale_factor"),  # residual_scale 10: past the bound
        ({"time_embedding_act_fn": "tanh"}, "time_embedding_act_fn"),
        ({"addition_embed_type": "text_time"}, "addition_time_embed_dim"),  # its widths missing
        ({"addition_embed_type": "text_time", "addition_time_embed_dim": 8,
          "projection_class_embeddings_input_dim": 48}, "projection_class_embeddings_input_dim"),  # 6 x 8: no text
        ({"class_embed_type": "learned"}, "class_embed_type"),
        ({"class_embed_type": "projection"}, "projection_class_embeddings_input_dim"),
        ({"class_embeddings_concat": True}, "class_embeddings_concat"),
        ({"encoder_hid_dim": 64, "encoder_hid_dim_type": "text_image_proj"}, "encoder_hid_dim_type"),
        ({"cross_attention_norm": "layer_norm"}, "cross_attention_norm"),
        ({"down_block_types": ("SimpleCrossAttnDownBlock2D", "DownBlock2D"), "norm_eps": 1e-6}, "norm_eps"),
        ({"dual_cross_attention": True}, "dual_cross_attention"),
        ({"mid_block_type": "UNetMidBlock2DSimpleCrossAttnX"}, "mid_block_type"),
        ({"down_block_types": ("KCrossAttnDownBlock2D", "DownBlock2D")}, "down_block_types.0"),
        ({"time_embedding_type": "fourier"}, "time_embedding_type"),
        ({"attention_head_dim": [2]}, "attention_head_dim"),
        ({"attention_head_dim": 3}, "attention_head_dim"),  # 3 heads do not divide 16 channels
        ({"cross_attention_dim": [12, 12]}, "cross_attention_dim"),
        ({"conv_in_kernel": 4}, "conv_in_kernel"),
        ({"unknown_key": 1}, "unknown_key"),
    ],
)
def test_unrepresentable_settings_are_refused_by_name(change: dict[str, Any], key: str) -> None:
    with pytest.raises(SpecError) as info:
        spec_from_diffusers({"_class_name": "UNet2DConditionModel", **SMALL, **change})
    assert key in [p.dotted_path for p in info.value.problems]


def test_specs_outside_the_class_are_refused_with_what_would_change() -> None:
    # mixed projections: UNet2DConditionModel has one use_linear_projection for every block
    spec = (ROOT / "specs" / "text-tiny.yaml").read_text().replace(
        "- {channels: 32, blocks: 1, attention: {type: transformer, heads: 2, linear_projection: true}}",
        "- {channels: 32, blocks: 1, attention: {type: transformer, heads: 2}}")
    with pytest.raises(SpecError) as info:
        to_diffusers(build_model(spec))
    paths = [p.dotted_path for p in info.value.problems]
    assert "encoder.levels.1.attention.linear_projection" in paths or "encoder.levels.0.attention.linear_projection" in paths
    assert all("cannot be expressed by UNet2DConditionModel" in p.message for p in info.value.problems)


def test_cli_converts_a_save_pretrained_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unet = make(CONFIGS["sd2-like"])
    unet.save_pretrained(tmp_path / "unet")
    spec, weights = tmp_path / "spec.yaml", tmp_path / "w.safetensors"
    assert main(["convert", "diffusers", str(tmp_path / "unet"), "-o", str(spec), "--weights", str(weights)]) == 0
    out = tmp_path / "m.pt"
    assert main(["build", str(spec), "--weights", str(weights), "-o", str(out)]) == 0  # checked with a context
    from unetdsl.torchscript import load

    x, t, _, context = inputs(CONFIGS["sd2-like"], tokens=3)
    with torch.inference_mode():
        want = unet.eval()(x, t, encoder_hidden_states=context).sample
        assert (load(out)(x, t, None, context) - want).abs().max().item() <= 1e-5
