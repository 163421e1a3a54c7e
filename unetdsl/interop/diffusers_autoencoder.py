"""diffusers AutoencoderKL (the Stable Diffusion VAE) <-> an autoencoder spec.

DownEncoderBlock2D levels (no time, downsampling by a strided conv padded right/bottom), a middle
of ResBlock -> one-head attention -> ResBlock (or none with mid_block_add_attention: false),
UpDecoderBlock2D levels with one block more (mirrored), GroupNorm eps 1e-6 everywhere, the quant
and post-quant 1x1 convs, and the scaling factor carried. Keys that change nothing unetdsl
computes (`force_upcast`, a pipeline's choice) are accepted; `shift_factor`, `latents_mean` and
`latents_std` are a pipeline's latent normalisation and are refused unless null, as is any other
key or block type, by name."""

from __future__ import annotations

from typing import Any

from ..errors import Problem, SpecError
from ..spec.resolved import ResolvedSpec
from .config_types import Refuse, wrong_levels, wrong_types
from .diffusers_names import WRITTEN_ACTIVATIONS

# every AutoencoderKL.__init__ argument, with its default (diffusers 0.2x-0.4x)
DEFAULTS: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",),
    "up_block_types": ("UpDecoderBlock2D",), "block_out_channels": (64,), "layers_per_block": 1, "act_fn": "silu",
    "latent_channels": 4, "norm_num_groups": 32, "sample_size": 32, "scaling_factor": 0.18215, "shift_factor": None,
    "latents_mean": None, "latents_std": None, "force_upcast": True, "use_quant_conv": True,
    "use_post_quant_conv": True, "mid_block_add_attention": True,
}
NULL_ONLY = ("shift_factor", "latents_mean", "latents_std")
EPS = 1e-6  # every ResnetBlock2D, attention and output norm of diffusers' Encoder/Decoder

# the kind of every key but the null-only ones (a test holds TYPES to DEFAULTS), checked before any rule
TYPES = {"block_out_channels": "ints", "down_block_types": "strs", "up_block_types": "strs", "act_fn": "str",
         "sample_size": "size",
         **dict.fromkeys(("in_channels", "out_channels", "latent_channels", "norm_num_groups", "layers_per_block"),
                         "int"),
         **dict.fromkeys(("use_quant_conv", "use_post_quant_conv", "mid_block_add_attention", "force_upcast"), "bool"),
         "scaling_factor": "number"}


def autoencoder_data(raw: dict[str, Any], refuse: Refuse, activations: dict[str, str], name: str) -> dict[str, Any] | None:
    """Spec data for an AutoencoderKL config (None when a problem makes it unbuildable; every
    problem is reported through `refuse`)."""
    c = {**DEFAULTS, **{k: v for k, v in raw.items() if k in DEFAULTS}}
    for key in NULL_ONLY:
        if c[key] is not None:
            refuse(key, c[key], f"{key} normalises latents in a pipeline, outside the model: not converted", "null")
    channels, downs, ups = c["block_out_channels"], c["down_block_types"], c["up_block_types"]
    if wrong_types(c, TYPES, refuse) or wrong_levels(c, refuse):
        return None
    n = len(channels)
    for i, block in enumerate(downs):
        if block != "DownEncoderBlock2D":
            refuse(f"down_block_types.{i}", block, "unsupported down block", "DownEncoderBlock2D")
    for k, block in enumerate(ups):
        if block != "UpDecoderBlock2D":
            refuse(f"up_block_types.{k}", block, "unsupported up block", "UpDecoderBlock2D")
    act = c["act_fn"]
    if act not in activations:
        refuse("act_fn", act, f"act_fn {act!r} has no unetdsl equivalent", ", ".join(activations))
        act = "silu"
    size = c["sample_size"]
    levels: list[dict[str, Any]] = []
    for i, ch in enumerate(channels):
        level: dict[str, Any] = {"channels": ch, "blocks": c["layers_per_block"]}
        if i < n - 1:
            level["downsample"] = "conv"
        levels.append(level)
    middle: dict[str, Any] = {"blocks": 2}
    if c["mid_block_add_attention"]:
        middle["attention"] = {"heads": 1}  # attention_head_dim = block_out_channels[-1]: one head
    return {
        "unetdsl": 1,
        "name": name,
        "description": f"converted from a diffusers AutoencoderKL config ({raw.get('_diffusers_version', '?')})",
        "model": "autoencoder",
        "dims": 2,
        "in_channels": c["in_channels"],
        "out_channels": c["out_channels"],
        "sample_size": list(size) if isinstance(size, (list, tuple)) else size,
        "latent": {"channels": c["latent_channels"], "quant_conv": c["use_quant_conv"],
                   "post_quant_conv": c["use_post_quant_conv"], "scaling_factor": float(c["scaling_factor"])},
        "defaults": {"norm": {"type": "group", "groups": c["norm_num_groups"], "eps": EPS},
                     "activation": activations[act], "order": "pre", "dropout": 0.0},
        "encoder": {"asymmetric_padding": True, "levels": levels},
        "middle": middle,
        # UpDecoderBlock2D: layers_per_block + 1 ResBlocks, nearest-neighbour upsampling then a conv
        "decoder": {"upsample": "nearest"},
        "head": {"norm": True, "kernel_size": 3, "activation": "silu"},  # Encoder/Decoder conv_act: always SiLU
    }


def config_path(path: tuple[str | int, ...], levels: int) -> tuple[str | int, ...] | None:
    """The config key a setting of a converted AutoencoderKL spec came from."""
    if path[:1] == ("latent",):
        field = str(path[1]) if len(path) > 1 else ""
        return {"channels": ("latent_channels",), "quant_conv": ("use_quant_conv",),
                "post_quant_conv": ("use_post_quant_conv",), "scaling_factor": ("scaling_factor",)}.get(
                    field, ("latent_channels",))
    if path[:2] == ("middle", "attention"):
        return ("mid_block_add_attention",)
    return None


# --- unetdsl -> diffusers -------------------------------------------------------------------------
def autoencoder_config(spec: ResolvedSpec) -> dict[str, Any]:
    """The AutoencoderKL config of `spec`, unproven: `diffusers.config_for` converts it back and
    refuses (SpecError) the settings that would change."""
    if spec.model != "autoencoder" or spec.latent is None or spec.dims != 2:
        raise SpecError([Problem(("model",), "AutoencoderKL is a 2D autoencoder (outside its vocabulary)")])
    config: dict[str, Any] = {
        "_class_name": "AutoencoderKL",
        "in_channels": spec.in_channels,
        "out_channels": spec.out_channels,
        "down_block_types": ["DownEncoderBlock2D"] * len(spec.encoder),
        "up_block_types": ["UpDecoderBlock2D"] * len(spec.decoder),
        "block_out_channels": [lv.channels for lv in spec.encoder],
        "layers_per_block": len(spec.encoder[0].blocks),
        "act_fn": WRITTEN_ACTIVATIONS.get(spec.middle.activation, spec.middle.activation),
        "latent_channels": spec.latent.channels,
        "norm_num_groups": spec.middle.norm.groups,
        "sample_size": spec.sample_size[0] if len(set(spec.sample_size)) == 1 else list(spec.sample_size),
        "scaling_factor": spec.latent.scaling_factor,
        "use_quant_conv": spec.latent.quant_conv,
        "use_post_quant_conv": spec.latent.post_quant_conv,
        "mid_block_add_attention": spec.middle.attention is not None,
    }
    return config  # proven by the caller (diffusers.config_for): converted back, the same spec
