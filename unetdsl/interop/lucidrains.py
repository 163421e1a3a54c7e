"""lucidrains' denoising-diffusion-pytorch `Unet` / `Unet1D` state dicts -> unetdsl names, for a spec
written as specs/lucidrains-unet.yaml is (channel_change: resample, encoder.skips: blocks, attention
placement last, head.stem_block).

lucidrains names by position: `init_conv` (the stem), `time_mlp.1` / `.3` (the MLP's linear layers),
`downs.<i>.<j>` and `ups.<k>.<j>` with j = 0, 1 the two ResnetBlocks, 2 the attention, 3 the level's
end (a resampler: `downs.<i>.3.1` the pixel-unshuffle's 1x1 conv, `downs.<i>.3` the 1-D strided conv,
`ups.<k>.3.1` the upsampler's conv; or, at a side's last level, `.3` the 3x3 conv to the next part's
width), `mid_block1` / `mid_attn` / `mid_block2`, `final_res_block` (the head's stem block) and
`final_conv`. Inside a ResnetBlock: `mlp.1` (the time projection), `block1.proj` / `block1.norm.g`,
`block2.proj` / `block2.norm.g`, `res_conv`. Attention: `norm.g` (its pre-norm; under 1-D's
Residual(PreNorm(...)) `fn.norm.g`, the attention's own keys under `fn.fn.`), `to_qkv` (one 1x1 conv,
q | k | v contiguous, each head-major) split into to_q / to_k / to_v, `to_out` (linear attention:
`to_out.0` the conv, `to_out.1.g` its RMSNorm), `mem_kv` (full (2, heads, M, d); linear (2, heads, d, M)).
RMSNorm gains are stored (1, C, 1[, 1]) and flattened. No pickle is read: the state dict comes in as
tensors (safetensors)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..errors import UnetdslError
from ..spec.resolved import ResolvedLevel, ResolvedSpec

RESNET = {"mlp.1": "time_emb_proj", "block1.proj": "conv1", "block1.norm.g": "norm1.weight",
          "block2.proj": "conv2", "block2.norm.g": "norm2.weight", "res_conv": "conv_shortcut"}
PLACE = re.compile(r"^(downs|ups)\.(\d+)\.(\d)\.(.+)$")


class LucidrainsWeightsError(UnetdslError):
    """A state dict that is not the lucidrains Unet of this spec."""


def map_lucidrains(state: Mapping[str, torch.Tensor], spec: ResolvedSpec) -> dict[str, torch.Tensor]:
    """A denoising-diffusion-pytorch `Unet` / `Unet1D` state dict under unetdsl's names for `spec`."""
    if spec.head.stem_block is None or spec.channel_change != "resample" or spec.skips != "blocks":
        raise LucidrainsWeightsError("a lucidrains Unet's spec has channel_change: resample, encoder: {skips: blocks} "
                                     "and head: {stem_block: true} (see specs/lucidrains-unet.yaml)")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        out.update(_mapped(key, value, spec))
    return out


def _mapped(key: str, value: torch.Tensor, spec: ResolvedSpec) -> dict[str, torch.Tensor]:
    for name, ours in (("init_conv.", "conv_in."), ("time_mlp.1.", "time_embedding.linear_1."),
                       ("time_mlp.3.", "time_embedding.linear_2."), ("final_conv.", "head.conv.")):
        if key.startswith(name):
            return {ours + key[len(name):]: value}
    if key.startswith("final_res_block."):
        return _resnet(key, "head.block", key[len("final_res_block."):], value)
    for name, index in (("mid_block1.", 0), ("mid_block2.", 1)):
        if key.startswith(name):
            return _resnet(key, f"middle.resnets.{index}", key[len(name):], value)
    if key.startswith("mid_attn."):
        return _attention(key, "middle.attentions.0", key[len("mid_attn."):], value, spec.middle.attention, spec)
    m = PLACE.match(key)
    if m is None:
        raise LucidrainsWeightsError(f"{key}: not a part of a lucidrains Unet")
    side, index, part, rest = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
    levels = spec.encoder if side == "downs" else spec.decoder
    if index >= len(levels):
        raise LucidrainsWeightsError(f"{key}: the spec's {'encoder' if side == 'downs' else 'decoder'} has "
                                     f"{len(levels)} levels")
    lv = levels[index]
    prefix = f"{'encoder' if side == 'downs' else 'decoder'}.{index}"
    if part in (0, 1):
        return _resnet(key, f"{prefix}.resnets.{part}", rest, value)
    if part == 2:
        return _attention(key, f"{prefix}.attentions.{len(lv.blocks) - 1}", rest, value, lv.attention, spec)
    if part == 3:
        return {_end(prefix, lv, rest): value}
    raise LucidrainsWeightsError(f"{key}: not a part of a lucidrains Unet (a level has parts 0 to 3)")


def _end(prefix: str, lv: ResolvedLevel, rest: str) -> str:
    """A level's `.3`: its resampler's conv (in a Sequential after the rearrange or the upsampling: `.1.`;
    the 1-D strided conv directly), or the side's last 3x3 conv."""
    resampler = "downsample" if lv.downsample else "upsample" if lv.upsample else None
    if resampler is None:
        return f"{prefix}.project.{rest}"
    return f"{prefix}.{resampler}.conv.{rest.removeprefix('1.')}"


def _resnet(key: str, prefix: str, rest: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    for name, ours in RESNET.items():
        if rest == name or rest.startswith(name + "."):
            tail = rest[len(name):]
            return {f"{prefix}.{ours}{tail}": value.flatten() if name.endswith(".g") else value}
    raise LucidrainsWeightsError(f"{key}: {rest!r} is not a part of a ResnetBlock")


def _attention(key: str, prefix: str, rest: str, value: torch.Tensor, att: object, spec: ResolvedSpec
               ) -> dict[str, torch.Tensor]:
    from ..spec.resolved import ResolvedAttention

    if not isinstance(att, ResolvedAttention):
        raise LucidrainsWeightsError(f"{key}: the weights have attention here, and the spec has none")
    rest = rest.removeprefix("fn.")  # 1-D: Residual(PreNorm(norm, fn))
    linear = att.type == "linear"
    if rest == "norm.g":
        return {f"{prefix}.group_norm.weight": value.flatten()}
    rest = rest.removeprefix("fn.")
    if rest == "mem_kv":  # full: (2, heads, M, d); linear: (2, heads, d, M)
        return {f"{prefix}.memory": value.transpose(-1, -2) if linear else value}
    if rest == "to_qkv.weight":
        q, k, v = value.flatten(1).chunk(3, dim=0)  # (3 * width, C) -> three (width, C), head-major
        return {f"{prefix}.to_q.weight": q, f"{prefix}.to_k.weight": k, f"{prefix}.to_v.weight": v}
    for name, ours in (("to_out.0.", "to_out."), ("to_out.1.g", "out_norm.weight"), ("to_out.", "to_out.")):
        if rest.startswith(name):
            tail = rest[len(name):]
            mapped = f"{prefix}.{ours}{tail}"
            return {mapped: value.flatten() if name.endswith(".g") else value.flatten(1) if value.dim() > 2 else value}
    raise LucidrainsWeightsError(f"{key}: {rest!r} is not a part of a lucidrains attention block")
