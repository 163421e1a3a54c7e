"""Named vector conditions joined into the time embedding (diffusers' add_embedding and
class_embedding, EDM's map_label): each input (B, width) as is, or each of its values through a
sinusoid (B, width x features); a group's inputs concatenated in order, projected, and added.
Every check of a call's `cond` happens here, in scripted code too."""

from typing import Final, Optional

import torch
from torch import nn


class ConditionInput(nn.Module):
    """cond[name] (B, width) | (B,) where width is 1 -> (B, width) or (B, width x features)."""

    name: Final[str]
    width: Final[int]
    scale: Final[float]

    def __init__(self, *, name: str, width: int, sinusoid: Optional[nn.Module], scale: float = 1.0):
        super().__init__()
        self.name, self.width, self.scale = name, width, scale
        self.sinusoid = sinusoid  # a SinusoidalProjection, or None: the values as they are

    def forward(self, cond: dict[str, torch.Tensor], batch: int) -> torch.Tensor:
        v = cond[self.name]  # present: ConditionEmbeddings checked the keys first
        if v.dim() == 1 and self.width == 1:
            v = v.unsqueeze(1)  # one value per sample, given as (B,)
        if v.dim() != 2 or v.shape[0] != batch or v.shape[1] != self.width:
            raise ValueError(f"unetdsl: condition '{self.name}' has shape {list(v.shape)}; "
                             f"expected ({batch}, {self.width})")
        if self.scale != 1.0:
            v = v * self.scale  # (EDM: one-hot labels times sqrt(label_dim))
        if self.sinusoid is None:
            return v
        return self.sinusoid(v.reshape(-1)).reshape(batch, -1)  # (B x width, F) -> (B, width x F)


class Mlp(nn.Module):
    """linear -> act -> linear (diffusers' TimestepEmbedding, its names)."""

    def __init__(self, width_in: int, width_out: int, act: nn.Module):
        super().__init__()
        self.linear_1 = nn.Linear(width_in, width_out)
        self.act = act
        self.linear_2 = nn.Linear(width_out, width_out)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(v)))


class AttentionPool(nn.Module):
    """Tokens (B, T, W) -> (B, W): a query from the tokens' mean plus a learned position attends to
    itself and the tokens, per head (diffusers' AttentionPooling, its names)."""

    heads: Final[int]

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.positional_embedding = nn.Parameter(torch.randn(1, width) / width**0.5)
        self.k_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        hd = w // self.heads
        token = x.mean(dim=1, keepdim=True) + self.positional_embedding.to(x.dtype)  # (B, 1, W)
        x = torch.cat([token, x], dim=1)  # (B, 1 + T, W)
        q = self.q_proj(token).reshape(b, 1, self.heads, hd).transpose(1, 2)  # (B, heads, 1, hd)
        k = self.k_proj(x).reshape(b, n + 1, self.heads, hd).transpose(1, 2)  # (B, heads, 1 + T, hd)
        v = self.v_proj(x).reshape(b, n + 1, self.heads, hd).transpose(1, 2)
        weight = torch.softmax((q @ k.transpose(2, 3) / hd**0.5).float(), dim=-1).to(x.dtype)  # (as diffusers: float32)
        return (weight @ v).reshape(b, w)  # (B, heads, 1, hd) -> (B, W), head by head


class ContextPool(nn.Module):
    """The context pooled into one vector the width it joins (diffusers' TextTimeEmbedding, its names):
    LayerNorm -> AttentionPool -> linear -> LayerNorm. (B, T, W) -> (B, out)."""

    def __init__(self, width: int, heads: int, out: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.pool = AttentionPool(width, heads)
        self.proj = nn.Linear(width, out)
        self.norm2 = nn.LayerNorm(out)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.proj(self.pool(self.norm1(context))))


class ConditionGroup(nn.Module):
    """A group's inputs joined: (B, sum of embedded widths) -> project -> (B, width it joins); or the
    context pooled (no inputs, project a ContextPool)."""

    into_features: Final[bool]
    pooled: Final[bool]

    def __init__(self, inputs: list[ConditionInput], project: nn.Module, into_features: bool, pooled: bool = False):
        super().__init__()
        self.inputs = nn.ModuleList(inputs)
        self.project = project  # Mlp, nn.Linear, nn.Identity or ContextPool
        self.into_features = into_features
        self.pooled = pooled

    def forward(self, cond: dict[str, torch.Tensor], batch: int, dtype: torch.dtype,
                context: Optional[torch.Tensor]) -> torch.Tensor:
        if self.pooled:
            if context is None:
                raise ValueError("unetdsl: this model pools its context into the time embedding: call "
                                 "model(x, t, context=...)")
            return self.project(context.to(dtype))  # (B, T, W) -> (B, width it joins)
        parts: list[torch.Tensor] = []
        for inp in self.inputs:
            parts.append(inp(cond, batch))
        return self.project(torch.cat(parts, dim=1).to(dtype))


class ConditionEmbeddings(nn.Module):
    """The model's condition groups, and the check of a call's `cond` against the names they take."""

    names: list[str]

    def __init__(self, groups: list[ConditionGroup], names: list[str]):
        super().__init__()
        self.groups = nn.ModuleList(groups)
        self.names = names

    def check(self, cond: Optional[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if cond is None and len(self.names) == 0:  # only a pooled context: nothing to pass
            empty: dict[str, torch.Tensor] = {}
            return empty
        if cond is None:
            raise ValueError(f"unetdsl: this model takes conditions {self.names}: call model(x, t, cond=...) "
                             "with a tensor for each")
        missing: list[str] = []
        for n in self.names:
            if n not in cond:
                missing.append(n)
        extra: list[str] = []
        for k in cond.keys():  # noqa: SIM118 (TorchScript iterates a Dict's keys())
            if k not in self.names:
                extra.append(k)
        if len(missing) > 0 or len(extra) > 0:
            raise ValueError(f"unetdsl: cond lacks {missing} and has unknown {extra}; this model takes exactly {self.names}")
        return cond

    def add(self, emb: torch.Tensor, cond: dict[str, torch.Tensor], features: bool,
            context: Optional[torch.Tensor]) -> torch.Tensor:
        """emb plus every group that joins here (before the MLP: features; after it: the time embedding)."""
        for group in self.groups:
            if group.into_features == features:
                emb = emb + group(cond, emb.shape[0], emb.dtype, context)
        return emb
