"""Down- and upsampling between levels. All take (x, temb) so a level can hold any of them,
the ResBlock-down/up included (which reads temb); the others ignore it.

down: conv (strided 3x3; padding 0 means diffusers' asymmetric right/bottom pad), avgpool, maxpool
up:   interpolate (nearest | bilinear/linear/trilinear) then 3x3 conv, transposed conv (k4 s2 p1)
"""


from typing import Final, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .layers import AVG_POOL, CONV_TRANSPOSE, MAX_POOL, conv_nd, lookup
from .resblock import ResBlock


class ConvDownsample(nn.Module):
    """(B, C, *S) -> (B, C, *S/2) with a strided 3x3 conv (diffusers Downsample2D(use_conv=True))."""

    asymmetric: Final[bool]
    dims: Final[int]

    def __init__(self, *, dims: int, channels: int, padding: int = 1, out_channels: Optional[int] = None,
                 kernel_size: int = 3):
        super().__init__()
        self.dims, self.asymmetric = dims, padding == 0
        self.conv = conv_nd(dims, channels, out_channels or channels, kernel_size, stride=2, padding=padding)

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor]) -> torch.Tensor:
        if self.asymmetric:  # pad right/bottom/back by one, as the original DDPM TF code
            pad = [0, 1] * self.dims
            x = F.pad(x, pad, mode="constant", value=0.0)
        return self.conv(x)


class PoolDownsample(nn.Module):
    """(B, C, *S) -> (B, C, *S/2) by 2x average or max pooling (no parameters)."""

    def __init__(self, *, dims: int, kind: str):
        super().__init__()
        pools = {"avgpool": AVG_POOL, "maxpool": MAX_POOL}
        self.pool = lookup(pools, kind, "pooling")[dims](kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor]) -> torch.Tensor:
        return self.pool(x)


class InterpolateUpsample(nn.Module):
    """(B, C, *S) -> (B, C, *2S): interpolation then a 3x3 conv (no checkerboard artifacts)."""

    mode: Final[str]

    def __init__(self, *, dims: int, channels: int, mode: str, out_channels: Optional[int] = None):
        super().__init__()
        self.mode = mode
        self.conv = conv_nd(dims, channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor]) -> torch.Tensor:
        if self.mode == "nearest":
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, scale_factor=2.0, mode=self.mode, align_corners=False)
        return self.conv(x)


class TransposedUpsample(nn.Module):
    """(B, C, *S) -> (B, C, *2S) by a 4x4 stride-2 transposed conv (diffusers' use_conv_transpose)."""

    def __init__(self, *, dims: int, channels: int, out_channels: Optional[int] = None):
        super().__init__()
        self.conv = lookup(CONV_TRANSPOSE, dims, "dims")(channels, out_channels or channels, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor]) -> torch.Tensor:
        return self.conv(x)


class PixelUnshuffleDownsample(nn.Module):
    """(B, C, *S) -> (B, C_out, *S/2): space-to-depth, each 2^dims block of positions into the channels
    (channel c * 2^dims + offset, offset = the position in the block, last dimension fastest: lucidrains'
    'b c (h p1) (w p2) -> b (c p1 p2) h w'), then a 1x1 conv (C * 2^dims -> C_out)."""

    dims: Final[int]
    block: Final[int]  # positions per block: 2^dims

    def __init__(self, *, dims: int, channels: int, out_channels: int):
        super().__init__()
        self.dims, self.block = dims, 2**dims
        self.conv = conv_nd(dims, channels * 2**dims, out_channels, 1)

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor]) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        if self.dims == 1:  # (B, C, L/2, 2) -> (B, C, 2, L/2)
            x = x.reshape(b, c, x.shape[2] // 2, 2).permute(0, 1, 3, 2)
        elif self.dims == 2:  # (B, C, H/2, 2, W/2, 2) -> (B, C, 2, 2, H/2, W/2)
            x = x.reshape(b, c, x.shape[2] // 2, 2, x.shape[3] // 2, 2).permute(0, 1, 3, 5, 2, 4)
        else:
            x = x.reshape(b, c, x.shape[2] // 2, 2, x.shape[3] // 2, 2, x.shape[4] // 2, 2).permute(
                0, 1, 3, 5, 7, 2, 4, 6)
        spatial = list(x.shape[2 + self.dims:])  # the halved sizes, after the dims offsets
        return self.conv(x.reshape([b, c * self.block] + spatial))  # noqa: RUF005 (TorchScript: no starred lists)


class ResBlockResample(nn.Module):
    """A ResBlock that halves or doubles the size (guided-diffusion resblock_updown)."""

    def __init__(self, block: ResBlock):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor]) -> torch.Tensor:
        return self.block(x, temb)


class FirResample(nn.Module):
    """(B, C, *S) -> (B, C, *S/2) or (B, C, *2S) with a separable FIR filter (NCSN++, StyleGAN2):
    its N-d outer product, normalised to sum 1, as a depthwise convolution (down: stride 2) or
    transposed convolution (up: stride 2, the filter times 2^dims so a constant stays constant),
    padded by (taps - 2) / 2 so the size halves or doubles exactly. The filter [1, 1] is 2x average
    pooling / nearest upsampling. The kernel is made from the taps in forward (a few values): no
    buffer, so a model built on meta and filled from a file needs nothing else (the spec says it)."""

    dims: Final[int]
    up: Final[bool]
    padding: Final[int]
    reflect: Final[int]  # > 0: reflect-pad the input by this much first (and pad the convolution less)

    def __init__(self, *, dims: int, taps: list[float], up: bool, padding: Optional[int] = None, reflect: bool = False):
        super().__init__()
        # padding: (taps - 2) / 2 keeps the size exact; 0 for a conv padded wider before it (nn/pyramid.py)
        self.dims, self.up = dims, up
        p = (len(taps) - 2) // 2 if padding is None else padding
        # reflect (Dance Diffusion's Downsample1d / Upsample1d): down reflect-pads the input by p and the conv
        # by nothing; up reflect-pads the input by q = (p + 1) // 2, and as each padded input position adds two
        # outputs the transposed conv crops p + 2q (the output is 2S exactly)
        q = (p if not up else (p + 1) // 2) if reflect else 0
        self.reflect = q
        self.padding = (p - q if not up else p + 2 * q) if reflect else p
        self.taps: list[float] = [float(t) for t in taps]

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor] = None) -> torch.Tensor:
        c = x.shape[1]
        f = torch.tensor(self.taps, dtype=torch.float64, device=x.device)
        kernel = f
        for _ in range(self.dims - 1):
            kernel = kernel.unsqueeze(-1) * f  # the outer product: (k,) * dims
        gain = 2.0**self.dims if self.up else 1.0
        kernel = (kernel / kernel.sum() * gain).to(x.dtype)
        if self.reflect > 0:
            x = F.pad(x, [self.reflect] * (2 * self.dims), mode="reflect")
        w = kernel.unsqueeze(0).unsqueeze(0).expand([c, 1] + [-1] * self.dims)  # (C, 1, k, ...): one per channel
        if self.up:
            if self.dims == 1:
                return F.conv_transpose1d(x, w, stride=2, padding=self.padding, groups=c)
            if self.dims == 2:
                return F.conv_transpose2d(x, w, stride=2, padding=self.padding, groups=c)
            return F.conv_transpose3d(x, w, stride=2, padding=self.padding, groups=c)
        if self.dims == 1:
            return F.conv1d(x, w, stride=2, padding=self.padding, groups=c)
        if self.dims == 2:
            return F.conv2d(x, w, stride=2, padding=self.padding, groups=c)
        return F.conv3d(x, w, stride=2, padding=self.padding, groups=c)
