"""Attention: `heads` or `head_dim` (neither: one head) against the channels of its level."""

from __future__ import annotations

from ..errors import Path, divisors, join_allowed
from ..spec.models import AttentionSpec
from ..spec.resolved import ResolvedAttention
from ..spec.settings import DEFAULTS
from .context import Context
from .inherit import default


def resolve_attention(ctx: Context, att: AttentionSpec | None, channels: int, path: Path) -> ResolvedAttention | None:
    if att is None:
        return None
    ap = (*path, "attention")
    if att.head_dim is not None:
        if channels % att.head_dim:
            ctx.fail((*ap, "head_dim"), f"head_dim {att.head_dim} does not divide the level's {channels} channels",
                     found=str(att.head_dim), allowed=f"a divisor of {channels}: {join_allowed(divisors(channels))}")
            return None
        return ResolvedAttention(heads=channels // att.head_dim, head_dim=att.head_dim,
                                 norm=default(att.norm, DEFAULTS["attention.norm"]))
    heads = att.heads or 1
    if channels % heads:
        ctx.fail((*ap, "heads"), f"{heads} heads do not divide the level's {channels} channels",
                 found=str(heads), allowed=f"a divisor of {channels}: {join_allowed(divisors(channels))}")
        return None
    return ResolvedAttention(heads=heads, head_dim=channels // heads, norm=default(att.norm, DEFAULTS["attention.norm"]))
