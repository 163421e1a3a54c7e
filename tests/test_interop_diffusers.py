"""diffusers interop: configs become specs, weights carry over, outputs agree to 1e-5 (fp32).
diffusers is a test-only dependency; every model is randomly initialised here (no downloads)."""

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
logging.getLogger("diffusers").setLevel(logging.ERROR)  # "attention_head_dim=None is not recommended" etc.

TINY: dict[str, Any] = dict(block_out_channels=(4, 8), norm_num_groups=2, layers_per_block=1, sample_size=8,
                            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                            up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=2)
THREE = dict(block_out_channels=(4, 8, 8), down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
             up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), sample_size=16)

CONFIGS: dict[str, dict[str, Any]] = {
    "ddpm-like": {**TINY, "flip_sin_to_cos": False, "freq_shift": 1, "downsample_padding": 0, "norm_eps": 1e-6,
                  "attention_head_dim": None},
    "defaults-positional": dict(TINY),
    "two-layers-dropout": {**TINY, "layers_per_block": 2, "dropout": 0.1},
    "scale-shift": {**TINY, "resnet_time_scale_shift": "scale_shift"},
    "scale-shift-attn-groups": {**TINY, "resnet_time_scale_shift": "scale_shift", "attn_norm_num_groups": 2},
    "fourier": {**TINY, "time_embedding_type": "fourier"},
    "learned": {**TINY, "time_embedding_type": "learned", "num_train_timesteps": 1000},
    "class-conditional": {**TINY, "num_class_embeds": 5},
    "resnet-blocks": {**TINY, "down_block_types": ("ResnetDownsampleBlock2D", "AttnDownBlock2D"),
                      "up_block_types": ("AttnUpBlock2D", "ResnetUpsampleBlock2D")},
    "attn-resnet-resample": {**TINY, "down_block_types": ("AttnDownBlock2D", "DownBlock2D"),
                             "up_block_types": ("UpBlock2D", "AttnUpBlock2D"), "downsample_type": "resnet",
                             "upsample_type": "resnet"},
    "mish-center-time-dim": {**TINY, "act_fn": "mish", "center_input_sample": True, "time_embedding_dim": 12},
    "gelu-no-mid-attention": {**TINY, "act_fn": "gelu", "add_attention": False, "in_channels": 1, "out_channels": 2},
    "no-mid-block": {**TINY, "mid_block_type": None},
    "three-levels-rect": {**TINY, **THREE, "sample_size": (16, 8)},
    "relu-swish-name": {**TINY, "act_fn": "swish"},
}


def make(config: dict[str, Any]) -> torch.nn.Module:
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**config).eval()
    with torch.no_grad():  # zero-initialised tensors would hide mapping mistakes
        for p in unet.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    return unet


def inputs(config: dict[str, Any], scalar: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(1)
    size = config.get("sample_size", 8)
    hw = tuple(size) if isinstance(size, tuple) else (size, size)
    x = torch.rand((3, config.get("in_channels", 3), *hw), generator=g)
    if config.get("time_embedding_type") == "fourier":
        # sigmas >= 1: the output is divided by sigma, and 1/0.01 would magnify float32 rounding
        # past 1e-5 (test_fourier_small_sigmas checks those relative to the output)
        t = torch.tensor(1.7) if scalar else torch.tensor([1.0, 3.0, 80.0])
    else:
        t = torch.tensor(17) if scalar else torch.tensor([0, 250, 999])
    y = torch.tensor([0, 4, 2]) if config.get("num_class_embeds") else None
    return x, t, y


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("scalar", [False, True], ids=["per-sample-t", "scalar-t"])
def test_outputs_match_diffusers(name: str, scalar: bool) -> None:
    config = CONFIGS[name]
    unet = make(config)
    model = from_diffusers(unet)
    x, t, y = inputs(config, scalar)
    with torch.inference_mode():
        want = unet(x, t, class_labels=y).sample
        got = model(x, t, y)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5


def test_fourier_small_sigmas() -> None:
    config = CONFIGS["fourier"]
    unet = make(config)
    model = from_diffusers(unet)
    x, _, _ = inputs(config, scalar=False)
    sigma = torch.tensor([0.01, 0.05, 0.2])
    with torch.inference_mode():
        want, got = unet(x, sigma).sample, model(x, sigma)
    # before the division by sigma the two agree to 1e-5, as everywhere else
    assert ((got - want) * sigma[:, None, None, None]).abs().max().item() <= 1e-5


def test_there_are_at_least_12_configurations() -> None:
    assert len(CONFIGS) >= 12


@pytest.mark.parametrize("name", ["ddpm-like", "class-conditional", "fourier", "scale-shift"])
def test_converted_models_script_to_the_same_outputs(name: str) -> None:
    config = CONFIGS[name]
    unet = make(config)
    model = from_diffusers(unet)
    x, t, y = inputs(config, scalar=False)
    with torch.no_grad():  # (in-process scripted: no_grad, not inference_mode; see test_torchscript.py)
        want = unet(x, t, class_labels=y).sample
        assert (script(model)(x, t, y) - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", list(CONFIGS))
def test_back_to_diffusers(name: str) -> None:
    config = CONFIGS[name]
    model = from_diffusers(make(config))
    unet = to_diffusers(model)
    x, t, y = inputs(config, scalar=False)
    with torch.inference_mode():
        assert (unet(x, t, class_labels=y).sample - model(x, t, y)).abs().max().item() <= 1e-5


def test_ddpm_spec_round_trips_through_diffusers_unchanged() -> None:
    model = build_model(ROOT / "specs" / "ddpm-cifar10.yaml").eval()
    unet = to_diffusers(model)
    assert sum(p.numel() for p in unet.parameters()) == 35_746_307
    assert unet.config.downsample_padding == 0 and unet.config.flip_sin_to_cos is False
    again = spec_from_diffusers(dict(unet.config), name="ddpm-cifar10")
    back = from_diffusers(unet)
    assert back.spec.spec_id == model.spec.spec_id
    from unetdsl.frontend import resolve_spec

    assert resolve_spec(again)[0].spec_id == model.spec.spec_id
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10, 900])
    with torch.inference_mode():
        assert torch.equal(back(x, t), model(x, t))


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"mid_block_scale_factor": 2}, "mid_block_scale_factor"),
        ({"act_fn": "tanh"}, "act_fn"),
        ({"resnet_time_scale_shift": "ada_group"}, "resnet_time_scale_shift"),
        ({"class_embed_type": "timestep"}, "class_embed_type"),
        ({"down_block_types": ("SkipDownBlock2D", "AttnDownBlock2D")}, "down_block_types.0"),
        ({"attn_norm_num_groups": 1}, "attn_norm_num_groups"),
        ({"time_embedding_typo": "positional"}, "time_embedding_typo"),
        ({"time_embedding_type": "learned"}, "num_train_timesteps"),
    ],
)
def test_unrepresentable_settings_are_refused_by_name(change: dict[str, Any], key: str) -> None:
    with pytest.raises(SpecError) as info:
        spec_from_diffusers({**TINY, **change})
    assert key in [p.dotted_path for p in info.value.problems]


def test_outside_diffusers_vocabulary_is_refused() -> None:
    model = build_model(ROOT / "specs" / "unet3d-volume.yaml", device="meta")
    with pytest.raises(SpecError, match="UNet2DModel is a 2D U-Net"):
        to_diffusers(model)
    post = build_model(ROOT / "specs" / "tiny.yaml", overrides=["defaults.order=post"])
    with pytest.raises(SpecError, match="post-activation"):
        to_diffusers(post)


def test_cli_convert_a_save_pretrained_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unet = make(CONFIGS["class-conditional"])
    unet.save_pretrained(tmp_path / "unet")
    spec, weights = tmp_path / "spec.yaml", tmp_path / "w.safetensors"
    assert main(["convert", "diffusers", str(tmp_path / "unet"), "-o", str(spec), "--weights", str(weights)]) == 0
    assert main(["validate", str(spec)]) == 0
    out = tmp_path / "m.pt"
    assert main(["build", str(spec), "--weights", str(weights), "-o", str(out)]) == 0
    from unetdsl.torchscript import load

    x, t, y = inputs(CONFIGS["class-conditional"], scalar=False)
    with torch.inference_mode():
        assert (load(out)(x, t, y) - unet(x, t, class_labels=y).sample).abs().max().item() <= 1e-5
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").rename(tmp_path / "unet" / "diffusion_pytorch_model.bin")
    capsys.readouterr()
    assert main(["convert", "diffusers", str(tmp_path / "unet"), "-o", str(spec), "--weights", str(weights)]) == 1
    assert "pickles are not read" in capsys.readouterr().err


# --- one tensor under two names (issue 22, class 6): every pair of diffusers names that map to one
# unetdsl name is refused naming both, in convert and in from_diffusers, whichever is stored first
@pytest.mark.parametrize("pair", [
    ("mid_block.attentions.0.to_out.0.weight", "mid_block.attentions.0.to_out.weight"),  # legacy to_out
    ("up_blocks.0.resnets.0.conv1.weight", "decoder.0.resnets.0.conv1.weight"),          # unetdsl's own name
    ("mid_block.resnets.0.conv1.bias", "middle.resnets.0.conv1.bias"),
    ("conv_out.weight", "head.conv.weight"),
])
@pytest.mark.parametrize("first", [0, 1])
def test_a_tensor_stored_under_two_names_is_refused(pair: tuple[str, str], first: int, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import load_file, save_file

    from unetdsl.interop.diffusers import map_state_dict
    from unetdsl.weights import WeightsError

    unet = make(CONFIGS["class-conditional"])
    unet.save_pretrained(tmp_path / "unet")
    path = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    real, extra = pair
    state[extra] = torch.full_like(state[real], 7.0)  # a second copy that would win if read last
    ordered = dict(sorted(state.items(), key=lambda kv: (kv[0] != (real, extra)[first], kv[0])))
    save_file(ordered, str(path))
    assert main(["convert", "diffusers", str(tmp_path / "unet"), "-o", str(tmp_path / "s.yaml"),
                 "--weights", str(tmp_path / "w.safetensors")]) == 1
    err = capsys.readouterr().err
    assert repr(real) in err and repr(extra) in err and "two names" in err and "Traceback" not in err
    assert not (tmp_path / "s.yaml").exists() and not (tmp_path / "w.safetensors").exists()
    spec = from_diffusers(unet).spec
    with pytest.raises(WeightsError, match="two names"):
        map_state_dict(ordered, spec)
