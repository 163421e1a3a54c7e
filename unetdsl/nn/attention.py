"""Multi-head self-attention over all positions, as diffusers' Attention in UNet2DModel
(`_from_deprecated_attn_block`): norm, q/k/v/out linear projections with bias, residual add."""


from typing import Final, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .checkpointing import Checkpointable, checkpoint


class AttentionBlock(Checkpointable):
    heads: Final[int]

    def __init__(self, *, channels: int, heads: int, norm: nn.Module, zero_out: bool = False):
        super().__init__()
        self.heads = heads
        self.group_norm = norm
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.Linear(channels, channels)
        if zero_out:
            nn.init.zeros_(self.to_out.weight)
            nn.init.zeros_(self.to_out.bias)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        # `context` is taken and ignored: every attention kind of a level has one call signature
        if self.checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return self._checkpointed(x)
        return self._forward(x)

    @torch.jit.unused
    def _checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(self._forward, x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        h = self.group_norm(x).reshape(b, c, -1).transpose(1, 2)  # (B, N, C), N = product of spatial sizes
        n = h.shape[1]
        hd = c // self.heads
        q = self.to_q(h).reshape(b, n, self.heads, hd).transpose(1, 2)  # (B, heads, N, hd)
        k = self.to_k(h).reshape(b, n, self.heads, hd).transpose(1, 2)
        v = self.to_v(h).reshape(b, n, self.heads, hd).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, hd)
        out = self.to_out(out.transpose(1, 2).reshape(b, n, c))  # (B, N, C)
        return x + out.transpose(1, 2).reshape(x.shape)


class NoAttention(nn.Module):
    """Where a level has no attention: the identity, with the attention kinds' call signature."""

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        return x
