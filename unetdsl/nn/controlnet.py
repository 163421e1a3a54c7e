"""ControlNet (Zhang et al. 2023; diffusers' ControlNetModel): a copy of a U-Net's stem, time
embedding, encoder and middle that also sees a hint image, and returns one residual per skip of
the U-Net it controls plus one for the middle's output. The U-Net adds them
(`unet(x, t, residuals=controlnet(x, t, hint=image))`); several ControlNets are summed residual by
residual. Zero convolutions on every output make a fresh ControlNet change nothing.

Submodule names are diffusers' (`controlnet_cond_embedding`, `controlnet_down_blocks`,
`controlnet_mid_block`), so its weights map over by renaming the shared trunk's prefixes only."""

from itertools import pairwise
from typing import Optional

import torch
from torch import nn

from .layers import conv_nd, zero_module
from .unet import _Net


class HintEmbedding(nn.Module):
    """hint (B, hint_channels, *S x 2^(n-1)) -> (B, out_channels, *S): 3x3 convs with SiLU after
    each (diffusers' ControlNetConditioningEmbedding): conv_in to widths[0]; per later width a conv
    keeping the width, then a stride-2 conv to the next; a zero-initialised conv_out."""

    def __init__(self, *, dims: int, hint_channels: int, widths: list[int], out_channels: int):
        super().__init__()
        self.conv_in = conv_nd(dims, hint_channels, widths[0], 3, padding=1)
        blocks: list[nn.Module] = []
        for a, b in pairwise(widths):
            blocks += [conv_nd(dims, a, a, 3, padding=1), conv_nd(dims, a, b, 3, padding=1, stride=2)]
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = zero_module(conv_nd(dims, widths[-1], out_channels, 3, padding=1))

    def forward(self, hint: torch.Tensor) -> torch.Tensor:
        h = nn.functional.silu(self.conv_in(hint))
        for block in self.blocks:
            h = nn.functional.silu(block(h))  # every second block halves the size
        return self.conv_out(h)


class ControlNet(_Net):
    """x (B, Cin, *S), t, hint (B, hint_channels, *S x hint_factor) [, y, context, cond] ->
    [residual (B, C_i, *S_i) per U-Net skip, in the order the U-Net makes them] + [middle (B, C, *S/f)],
    each times `scale`. No decoder, no head."""

    def __init__(self, *, hint_embedding: HintEmbedding, residual_channels: list[int], hint_channels: int,
                 hint_factor: int, **common: object):
        super().__init__(**common)  # type: ignore[arg-type]
        self.hint_channels, self.hint_factor = hint_channels, hint_factor
        self.controlnet_cond_embedding = hint_embedding
        # zero 1x1 convs: one per skip, then the middle's (a fresh ControlNet adds nothing)
        *skips, mid = residual_channels
        self.controlnet_down_blocks = nn.ModuleList([zero_module(conv_nd(self.dims, c, c, 1)) for c in skips])
        self.controlnet_mid_block = zero_module(conv_nd(self.dims, mid, mid, 1))

    def _check_hint(self, x: torch.Tensor, hint: Optional[torch.Tensor]) -> torch.Tensor:
        want = [x.shape[0], self.hint_channels] + [s * self.hint_factor for s in x.shape[2:]]
        if hint is None:
            raise ValueError(f"unetdsl: a ControlNet takes a hint image of shape {want} for this input: "
                             "call controlnet(x, t, hint=...)")
        if list(hint.shape) != want:
            raise ValueError(f"unetdsl: expected a hint of shape {want} (the input's size x {self.hint_factor}), "
                             f"got {list(hint.shape)}")
        return hint

    def forward(self, x: torch.Tensor, t: Optional[torch.Tensor] = None,  # type: ignore[override]
                y: Optional[torch.Tensor] = None, context: Optional[torch.Tensor] = None,
                cond: Optional[dict[str, torch.Tensor]] = None, hint: Optional[torch.Tensor] = None,
                scale: float = 1.0) -> list[torch.Tensor]:
        self._check(x)
        self._check_context(x, context)
        hint = self._check_hint(x, hint)
        if self.preconditioning is not None:  # as its U-Net: the trunk sees c_in x and c_noise (sigma = t)
            x, t, _ = self._preconditioned(x, t)
        temb = self._embed(x, t, y, cond, context)
        context = self._projected(context)
        x = self._centered(x)  # (the hint is not centred: diffusers' ControlNet centres the sample only)
        stem = self._stem(self._with_time(x, temb), self.controlnet_cond_embedding(hint))
        if self.time_into_input:
            temb = None
        h, skips = self._encoded(stem, temb, context, x)
        h = self.middle(h, temb, context)
        out: list[torch.Tensor] = []
        for i, zero_conv in enumerate(self.controlnet_down_blocks):
            out.append((zero_conv(skips[i]) * scale).contiguous())
        out.append((self.controlnet_mid_block(h) * scale).contiguous())
        return out
