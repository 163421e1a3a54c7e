"""NCSN++'s progressive pyramids (score SDE; EDM's SongUNet `encoder_type` / `decoder_type`).

Input pyramid: the input image travels down beside the features. After each downsample of the
encoder it joins them, and the sum replaces that downsample's skip:
    skip:     aux = FIR-down(aux); h = h + conv1x1(aux)                (aux stays the image, Cin wide)
    residual: h = aux = (h + conv3x3-down(aux)) / sqrt(2)              (aux becomes the features)
The residual's 3x3 conv is fused with the FIR downsampling as EDM's: zero padding 1 + (taps - 2) / 2,
the conv, then the filter with stride 2 and no padding (not a conv padded by 1 then the filter
padded again: the borders differ).

Output pyramid: each decoder level but the last ends in a head of its own (norm -> act -> conv to
the output channels) on the features before its upsample; the running sum is upsampled with the
level's filter and the model's head adds the last term:
    aux = FIR-up(head_k(h) + aux)       ...       out = head(h) + aux

Each module takes and gives (h, aux) so a level calls either kind the same way (nn/unet.Level)."""


import math
from typing import Final, Optional

import torch
from torch import nn

from .layers import conv_nd
from .sampling import FirResample


class InputSkip(nn.Module):
    """h (B, C, *S/2), aux (B, Cin, *S) -> h + conv1x1(aux down) (B, C, *S/2), aux down (B, Cin, *S/2)."""

    def __init__(self, *, dims: int, image_channels: int, channels: int, taps: list[float]):
        super().__init__()
        self.down = FirResample(dims=dims, taps=taps, up=False)
        self.conv = conv_nd(dims, image_channels, channels, 1)

    def forward(self, h: torch.Tensor, aux: Optional[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if aux is None:
            raise ValueError("unetdsl: an input pyramid level got no pyramid")
        aux = self.down(aux)
        return h + self.conv(aux), aux


class InputResidual(nn.Module):
    """h (B, C, *S/2), aux (B, Caux, *S) -> both (h + conv3x3-down(aux)) / sqrt(2) (B, C, *S/2)."""

    scale: Final[float]

    def __init__(self, *, dims: int, aux_channels: int, channels: int, taps: list[float]):
        super().__init__()
        # (B, Caux, *S) -> (B, C, *S + taps - 2): the filter (no padding, stride 2) then halves it exactly
        self.conv = conv_nd(dims, aux_channels, channels, 3, padding=1 + (len(taps) - 2) // 2)
        self.down = FirResample(dims=dims, taps=taps, up=False, padding=0)
        self.scale = math.sqrt(0.5)

    def forward(self, h: torch.Tensor, aux: Optional[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if aux is None:
            raise ValueError("unetdsl: an input pyramid level got no pyramid")
        h = (h + self.down(self.conv(aux))) * self.scale
        return h, h


class OutputSkip(nn.Module):
    """h (B, C, *S) before the level's upsample, aux (B, Cout, *S) or None (the lowest level) ->
    h unchanged, FIR-up(head(h) + aux) (B, Cout, *2S)."""

    def __init__(self, *, head: nn.Module, dims: int, taps: list[float]):
        super().__init__()
        self.head = head  # nn/unet.Head: [norm -> act ->] conv to the output channels
        self.up = FirResample(dims=dims, taps=taps, up=True)

    def forward(self, h: torch.Tensor, aux: Optional[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        out = self.head(h)
        if aux is not None:
            out = out + aux
        return h, self.up(out)
