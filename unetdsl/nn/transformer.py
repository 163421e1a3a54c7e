"""The transformer attention block of latent-diffusion U-Nets: ldm's SpatialTransformer, diffusers'
Transformer2DModel (continuous input) with BasicTransformerBlocks. Submodule names are diffusers'
(`norm`, `proj_in`, `transformer_blocks.{i}.attn1.to_q`, `ff.net.0.proj`, ...) so weights map by
prefix (diffusers' `to_out.0` is `to_out` here, as in the self-attention block).

    x (B, C, *S) -> norm -> proj_in -> (B, N, C) -> depth x [self-attn, cross-attn, GEGLU FF] -> proj_out -> + x

N is the product of the spatial sizes (any of 1, 2, 3 spatial dims); the context is (B, T, D)."""


from typing import Final, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .checkpointing import Checkpointable, checkpoint
from .layers import conv_nd, zero_module


class Attention(nn.Module):
    """Multi-head attention of (B, N, C) queries over (B, T, K) keys/values: the queries' own
    tokens when `context` is None, else the context (diffusers' Attention: q/k/v without bias,
    `to_out.0` with bias). `upcast`: scores and softmax in float32 when the input is half/bfloat16
    (diffusers' upcast_attention, which SD 2.x needs in fp16); no effect in float32."""

    heads: Final[int]
    upcast: Final[bool]

    def __init__(self, *, dim: int, heads: int, kv_dim: int, upcast: bool = False):
        super().__init__()
        self.heads = heads
        self.upcast = upcast
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(kv_dim, dim, bias=False)
        self.to_v = nn.Linear(kv_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)  # diffusers: to_out.0 (then a no-op Dropout), as AttentionBlock

    def forward(self, h: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        b, n, c = h.shape[0], h.shape[1], h.shape[2]
        kv = h if context is None else context  # (B, T, K)
        hd = c // self.heads
        q = self.to_q(h).reshape(b, n, self.heads, hd).transpose(1, 2)  # (B, heads, N, hd)
        k = self.to_k(kv).reshape(b, kv.shape[1], self.heads, hd).transpose(1, 2)  # (B, heads, T, hd)
        v = self.to_v(kv).reshape(b, kv.shape[1], self.heads, hd).transpose(1, 2)
        if self.upcast and q.dtype != torch.float32:
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, hd)
        return self.to_out(out.transpose(1, 2).reshape(b, n, c))  # (B, N, C)


class GEGLU(nn.Module):
    """x -> proj -> (a, gate) -> a * gelu(gate) (exact GELU, as diffusers' GEGLU)."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        if torch.is_grad_enabled():
            return a * F.gelu(gate)
        # inference: into gelu's fresh output (B, N, inner), the layer's largest tensor, not a new one
        return F.gelu(gate).mul_(a)


class FeedForward(nn.Module):
    """GEGLU to 4 x dim, then back (diffusers' FeedForward: net.0 GEGLU, net.1 Dropout, net.2 Linear)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TransformerLayer(nn.Module):
    """diffusers' BasicTransformerBlock (layer_norm): h + attn1(norm1 h) [self, or to the context
    when `only_cross`], h + attn2(norm2 h, context) [when the model has a context], h + ff(norm3 h)."""

    only_cross: Final[bool]

    def __init__(self, *, dim: int, heads: int, context_dim: Optional[int], only_cross: bool, upcast: bool,
                 eps: float):
        super().__init__()
        self.only_cross = only_cross
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn1 = Attention(dim=dim, heads=heads, kv_dim=context_dim if only_cross and context_dim else dim,
                               upcast=upcast)
        # cross-attention where the model has a context (diffusers: attn2/norm2 None without one)
        self.norm2 = nn.LayerNorm(dim, eps=eps) if context_dim is not None else None
        self.attn2 = Attention(dim=dim, heads=heads, kv_dim=context_dim, upcast=upcast) if context_dim else None
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.ff = FeedForward(dim)

    def forward(self, h: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        h = self._residual(self.attn1(self.norm1(h), context if self.only_cross else None), h)  # (B, N, C)
        if self.attn2 is not None and self.norm2 is not None:
            h = self._residual(self.attn2(self.norm2(h), context), h)
        return self._residual(self.ff(self.norm3(h)), h)

    def _residual(self, out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """out + h; in inference into `out`, the sub-block's own fresh output (a new tensor of this
        size page-faults in on the CPU: layers.in_place), never into h, which the caller owns."""
        if torch.is_grad_enabled():
            return out + h
        return out.add_(h)


class SpatialTransformer(Checkpointable):
    """x (B, C, *S), context (B, T, D) | None -> (B, C, *S). `linear`: proj_in/proj_out are Linear
    layers on (B, N, C) (SD 2's use_linear_projection), else 1x1 convolutions on (B, C, *S)."""

    linear: Final[bool]

    def __init__(self, *, dims: int, channels: int, heads: int, depth: int, context_dim: Optional[int],
                 norm: nn.Module, linear: bool = False, only_cross: bool = False, upcast: bool = False,
                 layer_norm_eps: float = 1e-5, zero_out: bool = False):
        super().__init__()
        self.linear = linear
        self.norm = norm  # the level's norm type and groups; eps 1e-6 as diffusers and ldm by default
        self.proj_in = nn.Linear(channels, channels) if linear else conv_nd(dims, channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([
            TransformerLayer(dim=channels, heads=heads, context_dim=context_dim, only_cross=only_cross,
                             upcast=upcast, eps=layer_norm_eps)
            for _ in range(depth)
        ])
        self.proj_out = nn.Linear(channels, channels) if linear else conv_nd(dims, channels, channels, 1)
        if zero_out:  # ldm: zero_module(proj_out), the block starts as the identity
            zero_module(self.proj_out)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return self._checkpointed(x, context)
        return self._forward(x, context)

    @torch.jit.unused
    def _checkpointed(self, x: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        return checkpoint(self._forward, x, context)

    def _forward(self, x: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        h = self.norm(x)
        if not self.linear:
            h = self.proj_in(h)
        h = h.reshape(b, c, -1).transpose(1, 2)  # (B, N, C)
        if self.linear:
            h = self.proj_in(h)
        for layer in self.transformer_blocks:
            h = layer(h, context)
        if self.linear:
            h = self.proj_out(h)
        h = h.transpose(1, 2).reshape(x.shape)  # (B, C, *S); a view, channels-last strides
        if not self.linear:
            h = self.proj_out(h)
        # x first: the sum takes its first operand's layout (the block's input's); h's is channels-last
        return x + h
