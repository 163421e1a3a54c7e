"""diffusers ControlNetModel <-> a `model: controlnet` spec.

A ControlNetModel config is a UNet2DConditionModel config without the up half (no
`up_block_types`, `out_channels`, `sample_size`, ...) plus the hint embedding's keys. It is read
as the UNet2DConditionModel it controls, with the up blocks mirroring the down blocks and as many
output channels as input channels (the config does not say; neither changes the ControlNet's
weights), then given the controlnet section. The other way, the controlled U-Net's config is
written and the keys ControlNetModel lacks dropped; the proof (converting it back) compares the
ControlNet's own parts, so a setting ControlNetModel cannot hold (a dropout, a wider time
embedding, center_input) is refused by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..spec.resolved import ResolvedSpec
from . import diffusers_condition as condition
from .config_types import wrong_types

# ControlNetModel.__init__'s own keys (beyond those it shares with UNet2DConditionModel), with defaults
OWN: dict[str, Any] = {
    "conditioning_channels": 3, "controlnet_conditioning_channel_order": "rgb",
    "conditioning_embedding_out_channels": (16, 32, 96, 256), "global_pool_conditions": False,
}
# the UNet2DConditionModel keys ControlNetModel does not take (its U-Net half has no up blocks)
NOT_TAKEN = ("sample_size", "out_channels", "center_input_sample", "up_block_types", "dropout",
             "reverse_transformer_layers_per_block", "time_embedding_type", "time_embedding_dim",
             "time_embedding_act_fn", "timestep_post_act", "time_cond_proj_dim", "conv_in_kernel", "conv_out_kernel",
             "resnet_skip_time_act", "resnet_out_scale_factor", "attention_type", "class_embeddings_concat",
             "mid_block_only_cross_attention", "cross_attention_norm", "dual_cross_attention")
DEFAULTS: dict[str, Any] = {**{k: v for k, v in condition.DEFAULTS.items() if k not in NOT_TAKEN}, **OWN}
MIRRORED_UP = {"CrossAttnDownBlock2D": "CrossAttnUpBlock2D", "DownBlock2D": "UpBlock2D",
               "SimpleCrossAttnDownBlock2D": "SimpleCrossAttnUpBlock2D", "ResnetDownsampleBlock2D": "ResnetUpsampleBlock2D"}
# the kind of each of its own keys (config_types.KINDS), checked before any rule reads them
TYPES = {"conditioning_channels": "int", "conditioning_embedding_out_channels": "ints",
         "controlnet_conditioning_channel_order": "str", "global_pool_conditions": "bool"}


def controlnet_data(raw: dict[str, Any], refuse: Callable[[str, Any, str, str | None], None],
                    unet_data: Callable[[dict[str, Any]], dict[str, Any] | None], name: str) -> dict[str, Any] | None:
    """Spec data for a ControlNetModel config: `unet_data` reads the UNet2DConditionModel config it
    controls. None when a problem makes it unbuildable (every problem reported through `refuse`)."""
    c = {**OWN, **{k: v for k, v in raw.items() if k in OWN}}
    if wrong_types(c, TYPES, lambda k, v, why, allowed: refuse(k, v, why, allowed)):
        return None
    if c["controlnet_conditioning_channel_order"] != "rgb":
        refuse("controlnet_conditioning_channel_order", c["controlnet_conditioning_channel_order"],
               "a hint in BGR order is flipped inside diffusers' forward; unetdsl takes the hint as given: flip "
               "its channels before the call and convert with 'rgb'", "rgb")
    if c["global_pool_conditions"] is not False:
        refuse("global_pool_conditions", c["global_pool_conditions"], "residuals averaged over positions "
               "(shuffle ControlNets) have no unetdsl equivalent yet", "false")
    widths = c["conditioning_embedding_out_channels"]
    shared = {k: v for k, v in raw.items() if k not in OWN}
    downs = shared.get("down_block_types", condition.DEFAULTS["down_block_types"])
    if isinstance(downs, (list, tuple)) and all(isinstance(b, str) for b in downs):
        # the U-Net it controls: up blocks mirroring the down blocks (unknown names are refused there)
        shared["up_block_types"] = [MIRRORED_UP.get(b, b) for b in reversed(downs)]
    shared.setdefault("out_channels", shared.get("in_channels", condition.DEFAULTS["in_channels"]))
    data = unet_data(shared)
    if data is None:
        return None
    data["description"] = f"converted from a diffusers ControlNetModel config ({raw.get('_diffusers_version', '?')})"
    data["model"] = "controlnet"
    data["controlnet"] = {"hint_channels": c["conditioning_channels"], "embedding": list(widths)}
    return data


def controlnet_config(spec: ResolvedSpec) -> dict[str, Any]:
    """The ControlNetModel config of a controlnet spec, unproven (`proven_controlnet` proves it)."""
    assert spec.controlnet is not None
    unet = {k: v for k, v in condition.condition_config(spec.controlled()).items() if k not in NOT_TAKEN}
    return {**unet, "_class_name": "ControlNetModel", "conditioning_channels": spec.controlnet.hint_channels,
            "conditioning_embedding_out_channels": list(spec.controlnet.embedding)}


def comparable(spec: ResolvedSpec, back: ResolvedSpec) -> ResolvedSpec:
    """`spec` with the parts only the controlled U-Net has (its decoder, head, output channels and
    sample size, which a ControlNetModel config cannot say) taken from `back`: what a converted
    config must reproduce exactly."""
    return spec.model_copy(update={k: getattr(back, k) for k in ("decoder", "head", "out_channels", "sample_size")})
