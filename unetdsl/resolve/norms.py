"""Norms: a place's norm settings inherited field by field from `defaults.norm`; `groups: auto`
chosen; and every GroupNorm checked against the channel counts it really sees. A `groups` value
that fails is reported once, where it was set, naming every place it fails."""

from __future__ import annotations

from ..errors import Path, divisors, join_allowed
from ..spec.models import LevelSettings, NormSpec
from ..spec.resolved import ResolvedNorm
from ..spec.settings import TIME_SETTINGS
from ..spec.vocabulary import NORM_KINDS
from .context import Context
from .inherit import BUILTIN, Setting, pick


def norm_settings(ctx: Context, level: LevelSettings | None, path: Path) -> dict[str, Setting]:
    lv = level.norm if level is not None and level.norm is not None else NormSpec()
    df = ctx.defaults.norm or NormSpec()
    p, d = (*path, "norm"), ("defaults", "norm")
    return {
        "type": pick((lv.type, (*p, "type")), (df.type, (*d, "type")), builtin=BUILTIN["norm_type"]),
        "groups": pick((lv.groups, (*p, "groups")), (df.groups, (*d, "groups")), builtin=BUILTIN["groups"]),
        "eps": pick((lv.eps, (*p, "eps")), (df.eps, (*d, "eps")), builtin=BUILTIN["eps"]),
        "min_group_size": pick((lv.min_group_size, (*p, "min_group_size")), (df.min_group_size, (*d, "min_group_size")),
                               builtin=BUILTIN["min_group_size"]),
    }


def resolve_norm(ctx: Context, level: LevelSettings | None, path: Path, seen: list[tuple[int, str]],
                 *, carries_time: bool = True) -> ResolvedNorm:
    """Norm for a place whose GroupNorms see the channel counts in `seen` ((count, what) pairs)."""
    ns = norm_settings(ctx, level, path)
    kind, groups, eps = ns["type"].value, ns["groups"], ns["eps"].value
    t = ctx.spec.time
    traits = NORM_KINDS[kind]
    adds_time = (t is not None and t.into != "input"  # (time as input channels reaches no ResBlock)
                 and (t.injection or TIME_SETTINGS["injection"].default) == "add")
    if traits.erases_added_time and carries_time and seen and adds_time:
        keep = ", ".join(name for name, k in NORM_KINDS.items() if not k.erases_added_time)
        ctx.fail(ns["type"].origin or (*path, "norm", "type"),
                 f"{kind} norm subtracts each channel's own mean, erasing the time embedding that "
                 "injection: add puts in front of it: the blocks would ignore the timestep",
                 found=kind, allowed=f"{keep}; or set time.injection: scale_shift")
    if traits.batch_statistics:
        ctx.warn(ns["type"].origin or path, (
            f"{kind} norm uses batch statistics: training and sampling (often batch 1) then differ; "
            "group norm is the usual choice for diffusion models"))
    size = ns["min_group_size"]
    if traits.groups != "given":  # (an inherited min_group_size, like inherited groups, has nothing to size here)
        return ResolvedNorm(type=kind, groups=None, eps=eps)
    counts = sorted({c for c, _ in seen})
    if groups.value == "auto":
        if size.value:
            ctx.fail(size.origin or (*path, "norm", "min_group_size"), "min_group_size caps a number of groups; "
                     "groups: auto chooses one itself", hint="give groups a number (EDM: 32)")
        chosen = max(divisors(gcd_all(counts) or 1, BUILTIN["auto_max_groups"]))
        return ResolvedNorm(type="group", groups=chosen, eps=eps)
    if size.value:  # the groups per place: each count must still split into whole groups
        resolved = ResolvedNorm(type="group", groups=groups.value, eps=eps, min_group_size=size.value)
        for c, what in seen:
            g = resolved.groups_for(c)
            if g < 1 or c % g:
                ctx.fail(size.origin or (*path, "norm", "min_group_size"), f"{c} channels of {what} make "
                         f"{max(g, 0)} group(s) of at least {size.value} (min(groups, channels // min_group_size))"
                         f"{'' if g < 1 else f', which do not divide {c}'}", found=str(size.value))
                break
        return resolved
    # Collected per origin and reported once by `report_groups`, with every place it fails.
    where = groups.origin or ("defaults", "norm", "groups")
    record = ctx.group_uses.setdefault(where, (groups.value, groups.origin is None, [], []))
    record[2].extend(counts)
    record[3].extend((c, what) for c, what in seen if c % groups.value)
    return ResolvedNorm(type="group", groups=groups.value, eps=eps)


def report_groups(ctx: Context) -> None:
    for where, (groups, builtin, counts, bad) in ctx.group_uses.items():
        if not bad:
            continue
        c, what = bad[0]
        fixed = gcd_all(counts)
        more = f" and {len(bad) - 1} more place(s)" if len(bad) > 1 else ""
        ctx.fail(
            where,
            f"GroupNorm groups {groups}{' (the default)' if builtin else ''} does not divide "
            f"the {c} channels of {what}{more}",
            found=str(groups),
            allowed=f"a divisor of {fixed}, so it divides every channel count it normalises "
            f"({join_allowed(sorted(set(counts)))}): {join_allowed(divisors(fixed))}",
            hint="or write groups: auto" + (" under defaults.norm" if builtin else ""),
        )


def gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def gcd_all(values: list[int]) -> int:
    g = 0
    for v in values:
        g = gcd(g, v)
    return g
