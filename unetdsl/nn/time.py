"""Timestep embeddings -> the MLP every ResBlock's time projection reads (diffusers Timesteps,
GaussianFourierProjection, learned table; then TimestepEmbedding: linear -> SiLU -> linear)."""


import math
from typing import Final, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .conditions import ConditionEmbeddings


class SinusoidalProjection(nn.Module):
    """t (B,) -> (B, features): [sin, cos](t * f_i), f_i = exp(-ln(max_period) * i / (half - shift)).

    Computed in float32 in forward (as diffusers' get_timestep_embedding), so it stays exact
    when the model is cast to half precision; a float64 t computes in float64 throughout (frequencies,
    products, sines); odd `features` are zero-padded by one column."""

    features: Final[int]
    flip_sin_to_cos: Final[bool]
    freq_shift: Final[float]
    log_max_period: Final[float]

    def __init__(self, *, features: int, flip_sin_to_cos: bool, freq_shift: float, max_period: float):
        super().__init__()
        self.features, self.flip_sin_to_cos = features, flip_sin_to_cos
        self.freq_shift, self.log_max_period = float(freq_shift), math.log(max_period)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.features // 2
        # float32 frequencies (diffusers' get_timestep_embedding); float64 ones for a float64 t, whose
        # reference models compute without that float32 island (EDM's, lucidrains' y_all_float64)
        wide = torch.float64 if t.dtype == torch.float64 else torch.float32
        exponent = -self.log_max_period * torch.arange(half, dtype=wide, device=t.device)
        freqs = torch.exp(exponent / (half - self.freq_shift))
        x = t[:, None] if t.dtype == torch.float64 else t[:, None].float()
        args = x * freqs[None, :].to(x.dtype)  # (B, half)
        emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
        if self.flip_sin_to_cos:
            emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
        if self.features % 2 == 1:
            emb = F.pad(emb, (0, 1, 0, 0))
        return emb


class FourierProjection(nn.Module):
    """Random Gaussian Fourier features (score SDE): t (B,) -> (B, 2 * n) with fixed frequencies
    [sin, cos](2 pi w t) (a frozen parameter `weight`, as diffusers' GaussianFourierProjection; EDM's
    map_noise.freqs buffer)."""

    log: Final[bool]
    flip_sin_to_cos: Final[bool]

    def __init__(self, *, features: int, scale: float, log: bool, flip_sin_to_cos: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(features // 2) * scale, requires_grad=False)
        self.log, self.flip_sin_to_cos = log, flip_sin_to_cos

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # float32 (exact when the model is cast to half precision); a float64 t keeps float64 (EDM's NCSN++)
        x = t if t.dtype == torch.float64 else t.float()
        if self.log:
            x = torch.log(x)
        proj = x[:, None] * self.weight[None, :].to(x.dtype) * (2.0 * math.pi)  # (B, n)
        if self.flip_sin_to_cos:
            return torch.cat([torch.cos(proj), torch.sin(proj)], dim=-1)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class LearnedProjection(nn.Module):
    """A learned table indexed by the integer timestep: t (B,) -> (B, features)."""

    def __init__(self, *, timesteps: int, features: int):
        super().__init__()
        self.table = nn.Embedding(timesteps, features)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.table(t.long())


class TimeEmbedding(nn.Module):
    """Projection, then linear -> act (SiLU unless told) -> linear to the width every ResBlock receives, plus an
    optional class-label embedding added to it. t: () or (B,) -> (B, dim)."""

    def __init__(self, *, proj: nn.Module, features: int, dim: int, classes: Optional[int],
                 act: Optional[nn.Module] = None, conditions: Optional[ConditionEmbeddings] = None,
                 post_act: Optional[nn.Module] = None):
        super().__init__()
        self.time_proj = proj
        self.linear_1 = nn.Linear(features, dim)
        self.act = act if act is not None else nn.SiLU()
        self.linear_2 = nn.Linear(dim, dim)
        self.class_embedding = None if classes is None else nn.Embedding(classes, dim)
        # named vector conditions (nn/conditions.ConditionEmbeddings), registered last: the state
        # dict's order of models without them is unchanged
        self.conditions = conditions
        self.post_act = post_act  # on the whole embedding, last (diffusers' time_embed_act)

    def forward(self, t: torch.Tensor, batch: int, y: Optional[torch.Tensor],
                cond: Optional[dict[str, torch.Tensor]] = None, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        emb = self._embed(t, batch, y, cond, context)
        return emb if self.post_act is None else self.post_act(emb)

    def _embed(self, t: torch.Tensor, batch: int, y: Optional[torch.Tensor],
               cond: Optional[dict[str, torch.Tensor]], context: Optional[torch.Tensor]) -> torch.Tensor:
        t = t.reshape(-1)
        if t.shape[0] == 1 and batch != 1:
            t = t.expand(batch)  # one timestep for the whole batch
        if t.shape[0] != batch:
            raise ValueError(f"unetdsl: got {t.shape[0]} timesteps for a batch of {batch}; give one, or one per sample")
        conditions = self.conditions
        if conditions is None:
            if cond is not None:  # never ignored, as labels below
                raise ValueError("unetdsl: this model takes no conditions (its spec has no conditions section): "
                                 "call it without cond")
        else:
            cond = conditions.check(cond)
        emb = self.time_proj(t).to(self.linear_1.weight.dtype)  # (B, features)
        if conditions is not None and cond is not None:
            emb = conditions.add(emb, cond, True, context)  # EDM's label vectors join the features
        emb = self.linear_2(self.act(self.linear_1(emb)))  # (B, dim)
        if conditions is not None and cond is not None:
            emb = conditions.add(emb, cond, False, context)  # diffusers' add_embedding / class_embedding join here
        if self.class_embedding is None:
            if y is not None:  # never ignored: a caller passing labels to an unconditional model has the wrong model
                raise ValueError("unetdsl: this model is not class-conditional (its spec has no classes): call model(x, t)")
            return emb
        if y is None:
            raise ValueError("unetdsl: this model is class-conditional: call model(x, t, y) with class labels y")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"unetdsl: class labels are integers (one per sample), got {y.dtype}")
        if y.dim() > 1 or y.numel() != batch:  # never broadcast: one label per sample, (B,) (or () for a batch of 1)
            raise ValueError(f"unetdsl: got class labels of shape {list(y.shape)} for a batch of {batch}; give ({batch},)")
        return emb + self.class_embedding(y.reshape(-1).long()).to(emb.dtype)


class InputTime(nn.Module):
    """time.into input (Dance Diffusion): the projection's features (B, F) alone, no MLP; the model
    concatenates them after its input's channels. t: () or (B,) -> (B, F)."""

    def __init__(self, *, proj: nn.Module):
        super().__init__()
        self.time_proj = proj

    def forward(self, t: torch.Tensor, batch: int, y: Optional[torch.Tensor],
                cond: Optional[dict[str, torch.Tensor]] = None, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        if y is not None or cond is not None:
            raise ValueError("unetdsl: this model takes its time as input channels, and no labels or conditions")
        t = t.reshape(-1)
        if t.shape[0] == 1 and batch != 1:
            t = t.expand(batch)
        if t.shape[0] != batch:
            raise ValueError(f"unetdsl: got {t.shape[0]} timesteps for a batch of {batch}; give one, or one per sample")
        return self.time_proj(t)
