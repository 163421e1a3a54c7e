"""The level settings: what every encoder level, decoder level and the middle inherit from
`defaults` and may override. Each is defined once here (its default and its description); the
pydantic models (and so the JSON Schema and docs/language.md), the resolver and the resolved
form's view all read this table. Adding a plain level setting costs: its entry here, its typed
field in `models.LevelSettings` and `resolved.ResolvedSettings`, and its use in the compiler.
The stored form is the resolved spec's own dump, so a new setting needs nothing there.

`norm` and `attention` are level settings with structure of their own (merged field by field,
checked against channel counts) and keep their own rules in the resolver."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LevelSetting:
    default: Any
    description: str  # what it does; "Default X." is appended from `default`

    def field_description(self) -> str:
        return f"{self.description} Default {_shown(self.default)}."


LEVEL_SETTINGS: dict[str, LevelSetting] = {
    "activation": LevelSetting("silu", "Activation function (closed list)."),
    "order": LevelSetting("pre", "pre: norm->act->conv | post: conv->norm->act."),
    "dropout": LevelSetting(0.0, "Dropout before each ResBlock's second conv, in [0, 1)."),
    "conv_bias": LevelSetting(
        True, "Bias on the ResBlock convolutions a norm follows (true as diffusers, whose weights have it); false "
        "gives the bias-free 3x3 convolutions before GroupNorm of many ResBlock designs. A per-channel norm "
        "(instance, batch) drops it either way."),
    "residual_scale": LevelSetting(
        1.0, "Each ResBlock's output (branch + shortcut) times this (EDM's skip_scale, sqrt(1/2); diffusers' "
        "1 / resnet_out_scale_factor, 1 / mid_block_scale_factor for the middle)."),
    "resample_projection": LevelSetting(
        False, "A ResBlock that resamples (downsample/upsample: resblock) projects its shortcut with a 1x1 conv even "
        "where the channels stay (EDM's resample_proj)."),
    "resample_filter": LevelSetting(
        [1.0, 1.0], "The 1-D filter of avgpool and resblock resampling (and of the pyramids'), applied along every "
        "dimension (its outer product, normalised to sum 1): [1, 1] is 2x average pooling / nearest upsampling; "
        "[1, 3, 3, 1] the FIR filter of NCSN++ and StyleGAN2. An even number of taps (down: depthwise stride-2 "
        "convolution padded by (taps - 2) / 2; up: the transposed one, times 2^dims)."),
    "kernel_size": LevelSetting(
        3, "The kernel of each ResBlock's two convolutions, padded to keep the size (Dance Diffusion's "
        "ResConvBlock: 5)."),
    "shortcut_bias": LevelSetting(
        True, "A bias on the ResBlock's 1x1 shortcut conv (where the channels change); false: Dance Diffusion's "
        "conv_skip."),
    "resample_padding": LevelSetting(
        "zeros", "How the resample filter pads: zeros | reflect (Dance Diffusion's Downsample1d / Upsample1d). "
        "reflect: the input reflect-padded by (taps - 2) / 2 (down) or ((taps - 2) / 2 + 1) // 2 (up) first."),
    "time_at": LevelSetting(
        "second", "Where the time embedding joins each ResBlock: second (at the second norm: DDPM, diffusers) | first "
        "(at the first norm's output; post order only: lucidrains' conv -> norm -> scale-shift -> act)."),
    "time_activation": LevelSetting(
        True, "The activation on the time embedding inside each ResBlock, before its projection; false: the "
        "embedding as it comes (diffusers' resnet_skip_time_act; EDM, whose embedding ends in its own SiLU)."),
}


# The time settings every embedding kind shares (a common base of the three time models), with a
# constant default. Adding one costs: its entry here, its field in `models.TimeCommon` and
# `resolved.ResolvedTime`, and its use in the compiler and nn/ (resolver and view read this table).
TIME_SETTINGS: dict[str, LevelSetting] = {
    "injection": LevelSetting("add", "add: norm2(h + proj(t)) | scale_shift: norm2(h) * (1 + s) + b (guided-diffusion's "
                              "use_scale_shift_norm)."),
    "activation": LevelSetting("silu", "The activation between the time MLP's two linear layers (diffusers' "
                               "UNet2DConditionModel uses its act_fn there, UNet2DModel SiLU)."),
    "post_activation": LevelSetting("none", "An activation on the time embedding once the conditions have joined "
                                    "it, before the ResBlocks read it (diffusers' time_embedding_act_fn; DeepFloyd "
                                    "IF: gelu); none: as it is."),
}


def describe(name: str, table: dict[str, LevelSetting] = LEVEL_SETTINGS) -> str:
    return table[name].field_description()


# Every other constant default of the language, by where it is written (`section.key`), defined
# once: the models' descriptions end in "Default X." from here, and the resolver reads the value.
# (Defaults derived from other values, such as the time embedding's width, are the resolver's.)
DEFAULTS: dict[str, Any] = {
    "norm.type": "group",
    "norm.groups": 32,
    "norm.eps": 1e-5,
    "norm.min_group_size": 0,
    "level.blocks": 2,  # an encoder level; a standalone decoder's level (a U-Net's decoder: encoder's + 1)
    "middle.blocks": 2,
    "encoder.downsample": "conv",
    "encoder.asymmetric_padding": False,
    "encoder.input_pyramid": "none",
    "encoder.skips": "every",
    "channel_change": "block",
    "head.stem_block": False,
    "head.conv": True,
    "stem.conv": True,
    "middle.resample": False,
    "time.into": "blocks",
    "decoder.output_pyramid": "none",
    "decoder.upsample": "nearest",
    "attention.norm": True,
    "attention.type": "self",
    # the transformer attention block (ldm's SpatialTransformer, diffusers' Transformer2DModel)
    "transformer.depth": 1,
    "transformer.linear_projection": False,
    "transformer.only_cross": False,
    "transformer.upcast": False,
    "transformer.norm_eps": 1e-6,
    "transformer.layer_norm_eps": 1e-5,
    # the joint self/cross attention (diffusers' SimpleCrossAttn blocks: DeepFloyd IF, unCLIP)
    "attention.residual_scale": 1.0,
    "attention.placement": "each",
    "attention.memory": 0,
    "attention.qkv_bias": True,
    "joint.only_cross": False,
    "joint.context_norm_groups": 0,
    "time.injection": TIME_SETTINGS["injection"].default,
    "time.activation": TIME_SETTINGS["activation"].default,
    "sinusoidal.flip_sin_to_cos": True,
    "sinusoidal.freq_shift": 0.0,
    "sinusoidal.max_period": 10000.0,
    "fourier.scale": 16.0,
    "fourier.log": True,
    "fourier.flip_sin_to_cos": False,
    "head.norm": True,
    "head.kernel_size": 3,
    "stem.kernel_size": 3,
    "head.divide_by_timestep": False,
    "init.zero_out": False,
    "center_input": False,
    # the denoiser D(x, sigma) = c_skip x + c_out F(c_in x, c_noise) (EDM's EDMPrecond / VPPrecond / VEPrecond)
    "preconditioning.sigma_data": 0.5,
    "preconditioning.beta_d": 19.9,
    "preconditioning.beta_min": 0.1,
    "preconditioning.timesteps": 1000,
    # a condition group (diffusers' add_embedding / class_embedding, EDM's map_label)
    "condition.project": "mlp",
    "condition.into": "time",
    "condition.bias": True,
    "condition.activation": "silu",
    # a ControlNet's hint embedding (diffusers' ControlNetConditioningEmbedding, SD 1.5's ControlNets)
    "controlnet.hint_channels": 3,
    "controlnet.embedding": [16, 32, 96, 256],
}


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def doc(name: str, description: str) -> str:
    """`description` of the setting `name`, ending in its default from DEFAULTS."""
    return f"{description} Default {_shown(DEFAULTS[name])}."
