"""Named vector conditions: each group's inputs resolved (a sinusoid takes the time section's
settings), and the rules that relate them to the rest of the spec: they join the time embedding
(so they need one), their names are the keys of one `cond` mapping (unique, not the model's own
argument names), and a group added without a projection must already have the width it joins."""

from __future__ import annotations

from ..spec.models import RESERVED_CONDITION_NAMES, ConditionSpec
from ..spec.resolved import ResolvedCondition, ResolvedConditionInput, ResolvedTime
from ..spec.settings import DEFAULTS
from .context import Context
from .inherit import default

# the widest joined input a group may project (its first layer holds joined x width weights)
MAX_JOINED_WIDTH = 2**20


def resolve_conditions(ctx: Context, groups: list[ConditionSpec] | None,
                       time: ResolvedTime | None) -> list[ResolvedCondition]:
    if not groups:
        return []
    if time is None:
        ctx.fail(("conditions",), "conditions are added to the time embedding, so they need a time section",
                 hint="add a `time:` section, or remove conditions")
        return []
    sinusoid = (time.flip_sin_to_cos, time.freq_shift, time.max_period) if time.embedding == "sinusoidal" else (
        DEFAULTS["sinusoidal.flip_sin_to_cos"], DEFAULTS["sinusoidal.freq_shift"], DEFAULTS["sinusoidal.max_period"])
    seen: dict[str, tuple[int, int]] = {}
    out: list[ResolvedCondition] = []
    for g, group in enumerate(groups):
        if group.pool_context is not None or group.inputs is None:
            pooled = _pooled(ctx, g, group, time)
            if pooled is not None:
                out.append(pooled)
            continue
        inputs = []
        for i, inp in enumerate(group.inputs):
            where = ("conditions", g, "inputs", i, "name")
            if inp.name in RESERVED_CONDITION_NAMES:
                ctx.fail(where, f"{inp.name!r} is one of the model's own arguments", found=inp.name,
                         hint="name the condition after what it holds (e.g. text_embeds, time_ids)")
            elif inp.name in seen:
                ctx.fail(where, f"{inp.name!r} is also conditions.{seen[inp.name][0]}.inputs.{seen[inp.name][1]}: "
                         "each name is one key of `cond`", found=inp.name)
            seen.setdefault(inp.name, (g, i))
            flip, shift, period = sinusoid
            half = (inp.sinusoid or 0) // 2
            if inp.sinusoid and shift >= half:  # the time section's rule (check_time), at this input's width
                ctx.fail(("conditions", g, "inputs", i, "sinusoid"), f"the time section's freq_shift {shift:g} is not "
                         f"below half of these {inp.sinusoid} features ({half}): the frequency exponent divides by "
                         "their difference, so every output is NaN", found=str(inp.sinusoid),
                         allowed=f"more than {2 * int(shift) + 1}" if float(shift).is_integer() else None)
            inputs.append(ResolvedConditionInput(name=inp.name, width=inp.width, sinusoid=inp.sinusoid or 0,
                                                 flip_sin_to_cos=bool(flip), freq_shift=float(shift),
                                                 max_period=float(period), scale=float(default(inp.scale, 1.0))))
        project = default(group.project, DEFAULTS["condition.project"])
        into = default(group.into, DEFAULTS["condition.into"])
        if group.bias is not None and project != "linear":
            ctx.fail(("conditions", g, "bias"), f"bias is the linear projection's; this group's project is {project}",
                     hint="remove bias, or use project: linear")
        if group.activation is not None and project != "mlp":
            ctx.fail(("conditions", g, "activation"), f"activation is the mlp's; this group's project is {project}",
                     hint="remove activation, or use project: mlp")
        resolved = ResolvedCondition(
            inputs=inputs, project=project, into=into, width=time.dim if into == "time" else time.features,
            bias=default(group.bias, DEFAULTS["condition.bias"]),
            activation=default(group.activation, DEFAULTS["condition.activation"]))
        joined = resolved.joined_width
        if joined > MAX_JOINED_WIDTH:
            ctx.fail(("conditions", g, "inputs"), f"the inputs join to {joined:,} values per sample",
                     found=f"{joined:,}", allowed=f"at most {MAX_JOINED_WIDTH:,}")
        if project == "none" and joined != resolved.width:
            target = "time.dim" if into == "time" else "time.features"
            ctx.fail(("conditions", g, "project"), f"added without a projection, the inputs must join to the "
                     f"{resolved.width} values of {target} they are added to; they join to {joined}",
                     found=f"{joined}", hint="use project: linear or mlp, or change the widths")
        out.append(resolved)
    return out


def _pooled(ctx: Context, g: int, group: ConditionSpec, time: ResolvedTime) -> ResolvedCondition | None:
    """A group that is the context attention-pooled: exactly one of inputs and pool_context, a
    context to pool, heads dividing its width, and no projection settings (it has its own)."""
    if group.pool_context is None:
        ctx.fail(("conditions", g), "a condition group has inputs or pools the context",
                 allowed="inputs: [{name: ..., width: ...}] | pool_context: {heads: N}")
        return None
    if group.inputs is not None:
        ctx.fail(("conditions", g, "pool_context"), "a group has inputs or pools the context, not both",
                 hint="give the pooled context a group of its own")
    for key in ("project", "bias", "activation"):
        if getattr(group, key) is not None:
            ctx.fail(("conditions", g, key), f"a pooled context has its own projection: {key} does not apply",
                     hint="remove it")
    width = ctx.spec.context_input_dim or ctx.spec.context_dim
    if width is None:
        ctx.fail(("conditions", g, "pool_context"), "pool_context pools the model's context, and the spec "
                 "declares none", hint="set context_dim")
        return None
    heads = group.pool_context.heads
    if width % heads:
        ctx.fail(("conditions", g, "pool_context", "heads"), f"{heads} heads do not divide the context's {width} "
                 "features", found=str(heads), allowed=f"a divisor of {width}")
        return None
    into = default(group.into, DEFAULTS["condition.into"])
    return ResolvedCondition(inputs=[], pool_heads=heads, pool_width=width, project="linear", into=into,
                             width=time.dim if into == "time" else time.features, bias=True,
                             activation=DEFAULTS["condition.activation"])
