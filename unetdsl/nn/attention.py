"""Multi-head self-attention over all positions, as diffusers' Attention in UNet2DModel
(`_from_deprecated_attn_block`): norm, q/k/v/out linear projections with bias, residual add."""


from typing import Final, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .checkpointing import Checkpointable, checkpoint


class AttentionBlock(Checkpointable):
    """x (B, C, *S) -> (x + to_out(attention(norm(x)))) * residual_scale. The attention runs at `width`
    (heads x head_dim; the channels unless given: lucidrains' 4 x 32 at any width), optionally also over
    `memory` learned key/value slots (lucidrains' mem_kv, (2, heads, M, head_dim): keys, then values)."""

    heads: Final[int]
    residual_scale: Final[float]
    width: Final[int]

    def __init__(self, *, channels: int, heads: int, norm: nn.Module, zero_out: bool = False,
                 residual_scale: float = 1.0, width: Optional[int] = None, memory: int = 0, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.width = width if width is not None else channels
        self.residual_scale = residual_scale  # (x + attention) times this (EDM's skip_scale)
        self.group_norm = norm
        self.to_q = nn.Linear(channels, self.width, bias=qkv_bias)
        self.to_k = nn.Linear(channels, self.width, bias=qkv_bias)
        self.to_v = nn.Linear(channels, self.width, bias=qkv_bias)
        self.to_out = nn.Linear(self.width, channels)
        if zero_out:
            nn.init.zeros_(self.to_out.weight)
            nn.init.zeros_(self.to_out.bias)
        # registered last: the state dicts of blocks without memory are unchanged
        self.memory = nn.Parameter(torch.randn(2, heads, memory, self.width // heads)) if memory else None

    def _qkv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens (B, N, C) -> q (B, heads, N, hd), k and v (B, heads, M + N, hd): the memory slots first."""
        b, n = h.shape[0], h.shape[1]
        hd = self.width // self.heads
        q = self.to_q(h).reshape(b, n, self.heads, hd).transpose(1, 2)
        k = self.to_k(h).reshape(b, n, self.heads, hd).transpose(1, 2)
        v = self.to_v(h).reshape(b, n, self.heads, hd).transpose(1, 2)
        if self.memory is not None:
            mem = self.memory.to(k.dtype)
            k = torch.cat([mem[0].unsqueeze(0).expand(b, -1, -1, -1), k], dim=2)
            v = torch.cat([mem[1].unsqueeze(0).expand(b, -1, -1, -1), v], dim=2)
        return q, k, v

    def _finish(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """(B, heads, N, hd) -> to_out -> x + it (B, C, *S), times residual_scale."""
        b, n = out.shape[0], out.shape[2]
        out = self.to_out(out.transpose(1, 2).reshape(b, n, self.width))  # (B, N, C)
        out = x + self._out_norm(out.transpose(1, 2).reshape(x.shape))
        return out if self.residual_scale == 1.0 else out * self.residual_scale

    def _out_norm(self, out: torch.Tensor) -> torch.Tensor:
        return out

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
        q, k, v = self._qkv(h)
        return self._finish(x, F.scaled_dot_product_attention(q, k, v))  # (B, heads, N, hd) in between


class LinearAttentionBlock(AttentionBlock):
    """lucidrains' LinearAttention: q softmaxed over each head's features (times head_dim^-1/2), k over
    the positions (the memory slots included), context = k^T v (B, heads, hd, hd), out = q context;
    to_out, then `out_norm` (the level's norm), then the residual. Linear in the positions."""

    def __init__(self, *, channels: int, heads: int, norm: nn.Module, out_norm: nn.Module, zero_out: bool = False,
                 residual_scale: float = 1.0, width: Optional[int] = None, memory: int = 0, qkv_bias: bool = True):
        super().__init__(channels=channels, heads=heads, norm=norm, zero_out=zero_out, residual_scale=residual_scale,
                         width=width, memory=memory, qkv_bias=qkv_bias)
        self.out_norm = out_norm

    def _out_norm(self, out: torch.Tensor) -> torch.Tensor:
        return self.out_norm(out)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        h = self.group_norm(x).reshape(b, c, -1).transpose(1, 2)  # (B, N, C)
        q, k, v = self._qkv(h)  # (B, heads, N, hd), (B, heads, M + N, hd)
        q = q.softmax(dim=-1) * (q.shape[-1] ** -0.5)
        k = k.softmax(dim=-2)
        context = torch.matmul(k.transpose(-1, -2), v)  # (B, heads, hd, hd): sum over positions of k v^T
        return self._finish(x, torch.matmul(q, context))  # (B, heads, N, hd)


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
