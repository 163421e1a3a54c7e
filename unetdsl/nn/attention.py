"""Multi-head self-attention over all positions, as diffusers' Attention in UNet2DModel
(`_from_deprecated_attn_block`): norm, q/k/v/out linear projections with bias, residual add."""


from typing import Final, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .checkpointing import Checkpointable, checkpoint


class AttentionBlock(Checkpointable):
    heads: Final[int]
    residual_scale: Final[float]

    def __init__(self, *, channels: int, heads: int, norm: nn.Module, zero_out: bool = False,
                 residual_scale: float = 1.0):
        super().__init__()
        self.heads = heads
        self.residual_scale = residual_scale  # (x + attention) times this (EDM's skip_scale)
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
        out = x + out.transpose(1, 2).reshape(x.shape)
        return out if self.residual_scale == 1.0 else out * self.residual_scale


class NoAttention(nn.Module):
    """Where a level has no attention: the identity, with the attention kinds' call signature."""

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        return x


class JointAttention(Checkpointable):
    """One attention whose keys and values are the positions' and the context's together (diffusers'
    Attention with added_kv_proj_dim and AttnAddedKVProcessor: SimpleCrossAttn blocks, DeepFloyd IF):
    q = to_q(norm(x)); k, v = [add_k_proj(c), to_k(norm(x))], [add_v_proj(c), to_v(norm(x))] along
    the tokens (the context's alone with only_cross); out = x + to_out(attention). The context may be
    group-normalised over its features first (norm_cross). x (B, C, *S), context (B, T, D)."""

    heads: Final[int]
    only_cross: Final[bool]

    def __init__(self, *, channels: int, heads: int, context_dim: int, norm: nn.Module,
                 context_norm: Optional[nn.Module], only_cross: bool, zero_out: bool = False):
        super().__init__()
        self.heads = heads
        self.only_cross = only_cross
        self.group_norm = norm
        self.norm_cross = context_norm
        self.to_q = nn.Linear(channels, channels)
        self.to_k = None if only_cross else nn.Linear(channels, channels)
        self.to_v = None if only_cross else nn.Linear(channels, channels)
        self.add_k_proj = nn.Linear(context_dim, channels)
        self.add_v_proj = nn.Linear(context_dim, channels)
        self.to_out = nn.Linear(channels, channels)
        if zero_out:
            nn.init.zeros_(self.to_out.weight)
            nn.init.zeros_(self.to_out.bias)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        if context is None:
            raise ValueError("unetdsl: a joint attention block attends to a context: call model(x, t, context=...)")
        if self.checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return self._checkpointed(x, context)
        return self._forward(x, context)

    @torch.jit.unused
    def _checkpointed(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return checkpoint(self._forward, x, context)

    def _split(self, h: torch.Tensor) -> torch.Tensor:
        b, n, c = h.shape
        return h.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)  # (B, heads, n, hd)

    def _forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        h = self.group_norm(x).reshape(b, c, -1).transpose(1, 2)  # (B, N, C)
        if self.norm_cross is not None:  # over the context's features: (B, T, D) -> (B, D, T) and back
            context = self.norm_cross(context.transpose(1, 2)).transpose(1, 2)
        q = self._split(self.to_q(h))
        k = self._split(self.add_k_proj(context))  # (B, heads, T, hd)
        v = self._split(self.add_v_proj(context))
        if self.to_k is not None and self.to_v is not None:  # the context's tokens first, then the positions'
            k = torch.cat([k, self._split(self.to_k(h))], dim=2)  # (B, heads, T + N, hd)
            v = torch.cat([v, self._split(self.to_v(h))], dim=2)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, hd)
        out = self.to_out(out.transpose(1, 2).reshape(b, -1, c))  # (B, N, C)
        return x + out.transpose(1, 2).reshape(x.shape)
