"""Attention: its type, `heads` or `head_dim` (neither: one head of self-attention; a transformer
block must state them) against the channels of its level, and a transformer block's own settings
(refused on plain self-attention)."""

from __future__ import annotations

from ..errors import Path, divisors, join_allowed
from ..spec.models import AttentionSpec
from ..spec.resolved import ResolvedAttention, ResolvedJoint, ResolvedTransformer
from ..spec.settings import DEFAULTS
from .context import Context
from .inherit import default

# the settings only some kinds have: kind -> {AttentionSpec field: its DEFAULTS key}
KIND_SETTINGS = {"transformer": {name: f"transformer.{name}" for name in ResolvedTransformer.model_fields},
                 "joint": {name: f"joint.{name}" for name in ResolvedJoint.model_fields},
                 "self": {"residual_scale": "attention.residual_scale", "memory": "attention.memory",
                          "qkv_bias": "attention.qkv_bias"},
                 "linear": {"residual_scale": "attention.residual_scale", "memory": "attention.memory",
                            "qkv_bias": "attention.qkv_bias"}}
TRANSFORMER_SETTINGS = KIND_SETTINGS["transformer"]


def resolve_attention(ctx: Context, att: AttentionSpec | None, channels: int, path: Path) -> ResolvedAttention | None:
    if att is None:
        return None
    ap = (*path, "attention")
    kind = default(att.type, DEFAULTS["attention.type"])
    transformer = _transformer(ctx, att, ap) if kind == "transformer" else None
    joint = _joint(ctx, att, ap) if kind == "joint" else None
    own = KIND_SETTINGS.get(kind, {})
    for name in sorted({n for settings in KIND_SETTINGS.values() for n in settings} - set(own)):
        if getattr(att, name) is not None:
            kinds = [k for k, settings in KIND_SETTINGS.items() if name in settings]
            ctx.fail((*ap, name), f"{name} is a setting of the {' and '.join(kinds)} attention block"
                     f"{'s' if len(kinds) > 1 else ''}, not of {kind}", found=_shown(getattr(att, name)),
                     hint=f"set `type: {kinds[0]}`, or remove it")
    if kind != "self" and att.heads is None and att.head_dim is None:
        # one head would load a published model's weights (the shapes do not depend on heads) and compute
        # something else: SD 1.5 written with its 8 heads forgotten validated and ran, silently wrong
        ctx.fail(ap, f"a {kind} block states its heads: the weights do not say, and a wrong count loads them "
                 "and computes something else", hint="add `heads: N` or `head_dim: N` (Stable Diffusion 1.x: "
                 "heads: 8; 2.x and XL: head_dim: 64; a diffusers UNet2DConditionModel's attention_head_dim is "
                 "its heads; for SimpleCrossAttn blocks it is the head_dim)")
        # (resolved on with one head, so that no rule downstream reports a second problem)
    own_width = att.heads is not None and att.head_dim is not None
    if own_width:  # (self and linear only: check_structure refuses the rest)
        assert att.heads is not None and att.head_dim is not None
        heads = att.heads
    elif att.head_dim is not None:
        if channels % att.head_dim:
            ctx.fail((*ap, "head_dim"), f"head_dim {att.head_dim} does not divide the level's {channels} channels",
                     found=str(att.head_dim), allowed=f"a divisor of {channels}: {join_allowed(divisors(channels))}")
            return None
        heads = channels // att.head_dim
    else:
        heads = att.heads or 1
        if channels % heads:
            ctx.fail((*ap, "heads"), f"{heads} heads do not divide the level's {channels} channels",
                     found=str(heads), allowed=f"a divisor of {channels}: {join_allowed(divisors(channels))}")
            return None
    if att.placement is not None and att.placement != "all" and path == ("middle",):
        ctx.fail((*ap, "placement"), "the middle's attention sits between its ResBlocks, or after each of them with "
                 "placement: all; each and last are a level's", found=att.placement, hint="remove it, or write all")
    if att.placement == "all" and path != ("middle",):
        ctx.fail((*ap, "placement"), "placement: all is the middle's (after every ResBlock, the last included); a "
                 "level's attention follows each ResBlock with placement: each", found="all", hint="write each")
    return ResolvedAttention(heads=heads, head_dim=att.head_dim if own_width else channels // heads,  # type: ignore[arg-type]
                             norm=default(att.norm, DEFAULTS["attention.norm"]), own_width=own_width,
                             memory=default(att.memory, DEFAULTS["attention.memory"]),
                             qkv_bias=default(att.qkv_bias, DEFAULTS["attention.qkv_bias"]),
                             type=kind, transformer=transformer, joint=joint,
                             residual_scale=default(att.residual_scale, DEFAULTS["attention.residual_scale"]),
                             placement=default(att.placement, DEFAULTS["attention.placement"]))


def _transformer(ctx: Context, att: AttentionSpec, ap: Path) -> ResolvedTransformer:
    values = {name: default(getattr(att, name), DEFAULTS[key]) for name, key in TRANSFORMER_SETTINGS.items()}
    if values["only_cross"] and ctx.spec.context_dim is None:
        ctx.fail((*ap, "only_cross"), "only_cross makes the first attention attend to the context, "
                 "and the spec declares none", found="true", hint="set context_dim, or remove only_cross")
    return ResolvedTransformer(**values)


def _joint(ctx: Context, att: AttentionSpec, ap: Path) -> ResolvedJoint:
    values = {name: default(getattr(att, name), DEFAULTS[key]) for name, key in KIND_SETTINGS["joint"].items()}
    if ctx.spec.context_dim is None:
        ctx.fail(ap, "a joint attention block attends to the context (its keys and values are the positions' and "
                 "the context's), and the spec declares none", hint="set context_dim (the context's width)")
    groups = values["context_norm_groups"]
    if groups and ctx.spec.context_dim is not None and ctx.spec.context_dim % groups:
        ctx.fail((*ap, "context_norm_groups"), f"{groups} groups do not divide the context's {ctx.spec.context_dim} "
                 "features", found=str(groups), allowed=f"a divisor of {ctx.spec.context_dim}: "
                 f"{join_allowed(divisors(ctx.spec.context_dim))}")
    return ResolvedJoint(**values)


def uses_context(att: ResolvedAttention | None) -> bool:
    return att is not None and att.type in ("transformer", "joint")


def _shown(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)  # as YAML writes it
