"""RMSNorm (lucidrains' denoising-diffusion-pytorch): the norm type `rms`. (A module of its own:
TorchScript reads its Final annotations, which `from __future__ import annotations` would hide.)"""


import math
from typing import Final

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """x / max(|x|, eps) * weight * sqrt(C), |x| the L2 norm over the channels at each position
    (lucidrains' RMSNorm: unit root-mean-square per position, no mean removed). (B, C, *S) -> same."""

    eps: Final[float]
    scale: Final[float]

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.eps, self.scale = eps, math.sqrt(channels)
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.weight.reshape([1, -1] + [1] * (x.dim() - 2))
        return F.normalize(x, dim=1, eps=self.eps) * g * self.scale
