"""diffusers' UNet1DModel in Dance Diffusion's layout (DownBlock1DNoSkip / DownBlock1D / AttnDownBlock1D,
UNetMidBlock1D, AttnUpBlock1D / UpBlock1D / UpBlock1DNoSkip) state dicts -> unetdsl names, for a spec
written as specs/dance-diffusion.yaml is.

diffusers' down block i runs its downsample first: that is the downsample ending unetdsl's encoder level
i - 1 (unetdsl's levels end in theirs), so `down_blocks.<i>.resnets.<j>` are `encoder.<i>.resnets.<j>`
and the filter buffer `down_blocks.<i>.down.kernel` is checked against encoder level i - 1's
resample_filter; `up_blocks.<k>` are `decoder.<k>` (their upsample last, as unetdsl's); `mid_block` is
`middle` (its `down` / `up` kernels against the middle's filter). Inside a ResConvBlock: conv_1, group_norm_1,
conv_2, group_norm_2, conv_skip -> conv1, norm1, conv2, norm2, conv_shortcut; SelfAttention1d: group_norm,
query, key, value, proj_attn -> group_norm, to_q, to_k, to_v, to_out; `time_proj.weight` the Fourier
frequencies. No pickle is read."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..errors import UnetdslError
from ..spec.resolved import ResolvedSettings, ResolvedSpec

RESNET = {"conv_1": "conv1", "group_norm_1": "norm1", "conv_2": "conv2", "group_norm_2": "norm2",
          "conv_skip": "conv_shortcut"}
ATTENTION = {"group_norm": "group_norm", "query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out"}
PART = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|down|up)\.?(\d*)\.?(.*)$")
MID = re.compile(r"^mid_block\.(resnets|attentions|down|up)\.?(\d*)\.?(.*)$")


class UNet1DWeightsError(UnetdslError):
    """A state dict that is not the UNet1DModel of this spec."""


def map_unet1d(state: Mapping[str, torch.Tensor], spec: ResolvedSpec) -> dict[str, torch.Tensor]:
    """A diffusers UNet1DModel (Dance Diffusion layout) state dict under unetdsl's names for `spec`."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "time_proj.weight":
            out["time_embedding.time_proj.weight"] = value.reshape(-1)
            continue
        m, mid = PART.match(key), MID.match(key)
        if m is not None:
            side, index, part, j, rest = m.group(1), int(m.group(2)), m.group(3), m.group(4), m.group(5)
            levels = spec.encoder if side == "down_blocks" else spec.decoder
            if index >= len(levels):
                raise UNet1DWeightsError(f"{key}: the spec's {'encoder' if side == 'down_blocks' else 'decoder'} has "
                                         f"{len(levels)} levels")
            prefix = f"{'encoder' if side == 'down_blocks' else 'decoder'}.{index}"
            if part in ("down", "up"):  # a filter: the downsample ending the level above, or this level's upsample
                owner = levels[index - 1] if part == "down" else levels[index]
                if part == "down" and index == 0:
                    raise UNet1DWeightsError(f"{key}: the first down block does not downsample")
                _check_kernel(key, value, owner)
                continue
        elif mid is not None:
            part, j, rest = mid.group(1), mid.group(2), mid.group(3)
            prefix = "middle"
            if part in ("down", "up"):
                _check_kernel(key, value, spec.middle)
                continue
        else:
            raise UNet1DWeightsError(f"{key}: not a part of a UNet1DModel in Dance Diffusion's layout")
        layer, _, param = rest.partition(".")
        names = RESNET if part == "resnets" else ATTENTION
        if layer not in names:
            raise UNet1DWeightsError(f"{key}: {layer!r} is not a layer of a {part[:-1]}")
        out[f"{prefix}.{part}.{j}.{names[layer]}.{param}"] = value
    return out


def _check_kernel(key: str, value: torch.Tensor, owner: ResolvedSettings) -> None:
    """diffusers' kernel buffer (the 1-D filter; times 2 for upsampling) against the spec's filter, both normalised."""
    taps = torch.tensor(owner.resample_filter, dtype=torch.float64)
    got = value.double().reshape(-1)
    if got.shape != taps.shape or not torch.allclose(got / got.sum(), taps / taps.sum(), rtol=0, atol=1e-7):
        raise UNet1DWeightsError(f"{key}: kernel {got.tolist()} is not the spec's resample_filter {owner.resample_filter} "
                                 "there (Dance Diffusion's cubic kernel: see specs/dance-diffusion.yaml)")
    if owner.resample_padding != "reflect":
        raise UNet1DWeightsError(f"{key}: UNet1DModel's resampling pads by reflection: set resample_padding: reflect")
