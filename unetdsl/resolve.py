"""Spec -> ResolvedSpec: the single gate between the language and the compiler.

Two passes, each reporting *all* its problems at once:
1. structure: sections present for the model kind, level counts, sample size, exclusive fields;
2. expansion: defaults inherited, decoder mirrored, channel flow computed, `groups: auto` chosen,
   and every GroupNorm/attention checked against the channels it really sees (a decoder block's
   first norm sees its input *plus* the skip it concatenates).

Problems point at the path where the offending value was *set* (a level, or `defaults`), so the
front end can attach `file:line:col`. No torch here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from .errors import InternalError, Path, Problem, SpecError, divisors, join_allowed, sort_problems
from .spec.models import (
    AttentionSpec,
    DecoderLevel,
    EncoderLevel,
    FourierTime,
    LearnedTime,
    LevelSettings,
    MiddleSpec,
    NormSpec,
    SinusoidalTime,
    Spec,
)
from .spec.resolved import (
    ResolvedAttention,
    ResolvedBlock,
    ResolvedHead,
    ResolvedLevel,
    ResolvedMiddle,
    ResolvedNorm,
    ResolvedSpec,
    ResolvedTime,
)
from .spec.settings import LEVEL_SETTINGS

# Built-in defaults (diffusers UNet2DModel / DDPM where it has the setting).
BUILTIN: dict[str, Any] = {
    "norm_type": "group",
    "groups": 32,
    "eps": 1e-5,
    **{name: s.default for name, s in LEVEL_SETTINGS.items()},  # activation, order, dropout, ...
    "blocks": 2,
    "middle_blocks": 2,
    "auto_max_groups": 32,
}

T = TypeVar("T")


@dataclass(frozen=True)
class Setting:
    """A resolved value and the path it was set at (None: a built-in default)."""

    value: Any
    origin: Path | None


def _pick(*candidates: tuple[Any, Path], builtin: Any) -> Setting:
    """The first non-None candidate (most specific first), else the built-in default."""
    for value, path in candidates:
        if value is not None:
            return Setting(value, path)
    return Setting(builtin, None)


class _Resolver:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.defaults = spec.defaults or LevelSettings()
        # origin path -> (groups, is_builtin_default, every channel count, failing (count, place))
        self.group_uses: dict[Path, tuple[int, bool, list[int], list[tuple[int, str]]]] = {}

    def fail(self, path: Path, message: str, **kw: Any) -> None:
        self.problems.append(Problem(path, message, **kw))

    # ---------------------------------------------------------------- pass 1: structure
    def check_structure(self) -> None:
        s = self.spec
        kind = s.model
        if kind in ("unet", "encoder") and s.encoder is None:
            self.fail(("encoder",), f"a model of kind {kind!r} needs an encoder section",
                      allowed="encoder: {levels: [{channels: ...}, ...]}")
        if kind == "decoder":
            if s.encoder is not None:
                self.fail(("encoder",), "a standalone decoder has no encoder",
                          hint="remove the encoder section, or use model: unet")
            if s.decoder is None or s.decoder.levels is None:
                self.fail(("decoder",) if s.decoder is None else ("decoder", "levels"),
                          "a standalone decoder must list its levels (there is no encoder to mirror)",
                          allowed="decoder: {levels: [{channels: ...}, ...]} (lowest resolution first)")
        if kind == "encoder" and s.decoder is not None:
            self.fail(("decoder",), "a standalone encoder has no decoder",
                      hint="remove the decoder section, or use model: unet")
        if kind == "unet" and s.time is None:
            self.fail(("time",), "a U-Net is conditioned on the timestep: the time section is required",
                      allowed="time: {embedding: sinusoidal | fourier | learned, ...}")
        if s.classes is not None and s.time is None:
            self.fail(("classes",), "classes are embedded into the time embedding, so they need a time section",
                      hint="add time: {embedding: sinusoidal}")
        if kind == "unet" and s.encoder is not None and s.decoder is not None and s.decoder.levels is not None:
            n_enc, n_dec = len(s.encoder.levels), len(s.decoder.levels)
            if n_enc != n_dec:
                self.fail(("decoder", "levels"),
                          f"a U-Net decoder needs one level per encoder level: found {n_dec}, the encoder has {n_enc}",
                          found=str(n_dec), allowed=str(n_enc), hint="or omit decoder.levels to mirror the encoder")
        # sample size: one number per spatial dimension
        if isinstance(s.sample_size, list) and len(s.sample_size) != s.dims:
            self.fail(("sample_size",), f"sample_size lists {len(s.sample_size)} sizes for dims: {s.dims}",
                      found=str(s.sample_size), allowed=f"one number, or a list of {s.dims}")
        # the last level neither down- nor upsamples
        if s.encoder is not None:
            last = len(s.encoder.levels) - 1
            if s.encoder.levels[last].downsample is not None:
                self.fail(("encoder", "levels", last, "downsample"),
                          "the last encoder level does not downsample", hint="remove this key")
        if s.decoder is not None and s.decoder.levels is not None:
            last = len(s.decoder.levels) - 1
            if s.decoder.levels[last].upsample is not None:
                self.fail(("decoder", "levels", last, "upsample"),
                          "the last decoder level does not upsample", hint="remove this key")
        # exclusive / type-dependent fields
        for path, norm in self._all_norms():
            if norm.groups is not None and norm.type not in (None, "group"):
                self.fail((*path, "groups"), f"groups applies only to norm type 'group', not {norm.type!r}",
                          hint="remove groups, or set type: group")
        for path, att in self._all_attention():
            if att.heads is not None and att.head_dim is not None:
                self.fail(path, "give attention heads or head_dim, not both",
                          found=f"heads: {att.heads}, head_dim: {att.head_dim}")
        if isinstance(s.time, FourierTime) and s.time.features is not None and s.time.features % 2:
            self.fail(("time", "features"), f"fourier features come in sin/cos pairs: {s.time.features} is odd",
                      found=str(s.time.features), allowed="an even number")
        if s.head is not None and s.head.divide_by_timestep and s.time is None:
            self.fail(("head", "divide_by_timestep"), "dividing the output by the timestep needs a time section",
                      hint="add time: {embedding: fourier} (t is then the noise level), or remove this key")
        middle = s.middle or MiddleSpec()
        mblocks = middle.blocks if middle.blocks is not None else BUILTIN["middle_blocks"]
        if middle.attention is not None and mblocks < 2:
            self.fail(("middle", "attention"),
                      f"middle attention sits between two ResBlocks; middle has {mblocks} block(s)",
                      hint="set middle.blocks: 2 or remove the attention")

    def _all_norms(self) -> list[tuple[Path, NormSpec]]:
        out: list[tuple[Path, NormSpec]] = []
        s = self.spec
        if s.defaults is not None and s.defaults.norm is not None:
            out.append((("defaults", "norm"), s.defaults.norm))
        for path, lv in self._all_levels():
            if lv.norm is not None:
                out.append(((*path, "norm"), lv.norm))
        return out

    def _all_levels(self) -> list[tuple[Path, LevelSettings]]:
        s = self.spec
        out: list[tuple[Path, LevelSettings]] = []
        if s.encoder is not None:
            out += [(("encoder", "levels", i), lv) for i, lv in enumerate(s.encoder.levels)]
        if s.middle is not None:
            out.append((("middle",), s.middle))
        if s.decoder is not None and s.decoder.levels is not None:
            out += [(("decoder", "levels", i), lv) for i, lv in enumerate(s.decoder.levels)]
        return out

    def _all_attention(self) -> list[tuple[Path, AttentionSpec]]:
        out = []
        for path, lv in self._all_levels():
            att = getattr(lv, "attention", None)
            if att is not None:
                out.append(((*path, "attention"), att))
        return out

    # ---------------------------------------------------------------- pass 2: expansion
    def setting(self, level: LevelSettings, path: Path, name: str) -> Setting:
        return _pick((getattr(level, name), (*path, name)),
                     (getattr(self.defaults, name), ("defaults", name)), builtin=BUILTIN[name])

    def plain_settings(self, level: LevelSettings, path: Path) -> dict[str, Any]:
        """Every plain level setting (spec/settings.py) of `level`: its own, else defaults', else built in."""
        return {name: self.setting(level, path, name).value for name in LEVEL_SETTINGS}

    def norm_settings(self, level: LevelSettings | None, path: Path) -> dict[str, Setting]:
        lv = level.norm if level is not None and level.norm is not None else NormSpec()
        df = self.defaults.norm or NormSpec()
        p, d = (*path, "norm"), ("defaults", "norm")
        return {
            "type": _pick((lv.type, (*p, "type")), (df.type, (*d, "type")), builtin=BUILTIN["norm_type"]),
            "groups": _pick((lv.groups, (*p, "groups")), (df.groups, (*d, "groups")), builtin=BUILTIN["groups"]),
            "eps": _pick((lv.eps, (*p, "eps")), (df.eps, (*d, "eps")), builtin=BUILTIN["eps"]),
        }

    def resolve_norm(self, level: LevelSettings | None, path: Path, seen: list[tuple[int, str]],
                     *, carries_time: bool = True) -> ResolvedNorm:
        """Norm for a place whose GroupNorms see the channel counts in `seen` ((count, what) pairs)."""
        ns = self.norm_settings(level, path)
        kind, groups, eps = ns["type"].value, ns["groups"], ns["eps"].value
        t = self.spec.time
        if kind == "instance" and carries_time and seen and t is not None and (t.injection or "add") == "add":
            self.fail(ns["type"].origin or (*path, "norm", "type"),
                      "instance norm subtracts each channel's own mean, erasing the time embedding that "
                      "injection: add puts in front of it: the blocks would ignore the timestep",
                      found="instance", allowed="group, layer, batch; or set time.injection: scale_shift")
        if kind == "batch":
            self.warnings.append(Problem(ns["type"].origin or path, (
                "batch norm uses batch statistics: training and sampling (often batch 1) then differ; "
                "group norm is the usual choice for diffusion models")))
        if kind != "group":
            return ResolvedNorm(type=kind, groups=None, eps=eps)
        counts = sorted({c for c, _ in seen})
        if groups.value == "auto":
            common = 0
            for c in counts:
                common = _gcd(common, c)
            chosen = max(divisors(common or 1, BUILTIN["auto_max_groups"]))
            return ResolvedNorm(type="group", groups=chosen, eps=eps)
        # Collected per origin and reported once by `report_groups`, with every place it fails.
        where = groups.origin or ("defaults", "norm", "groups")
        record = self.group_uses.setdefault(where, (groups.value, groups.origin is None, [], []))
        record[2].extend(counts)
        record[3].extend((c, what) for c, what in seen if c % groups.value)
        return ResolvedNorm(type="group", groups=groups.value, eps=eps)

    def report_groups(self) -> None:
        for where, (groups, builtin, counts, bad) in self.group_uses.items():
            if not bad:
                continue
            c, what = bad[0]
            fixed = _gcd_all(counts)
            more = f" and {len(bad) - 1} more place(s)" if len(bad) > 1 else ""
            self.fail(
                where,
                f"GroupNorm groups {groups}{' (the default)' if builtin else ''} does not divide "
                f"the {c} channels of {what}{more}",
                found=str(groups),
                allowed=f"a divisor of {fixed}, so it divides every channel count it normalises "
                f"({join_allowed(sorted(set(counts)))}): {join_allowed(divisors(fixed))}",
                hint="or write groups: auto" + (" under defaults.norm" if builtin else ""),
            )

    def resolve_attention(self, att: AttentionSpec | None, channels: int, path: Path) -> ResolvedAttention | None:
        if att is None:
            return None
        ap = (*path, "attention")
        if att.head_dim is not None:
            if channels % att.head_dim:
                self.fail((*ap, "head_dim"), f"head_dim {att.head_dim} does not divide the level's {channels} channels",
                          found=str(att.head_dim), allowed=f"a divisor of {channels}: {join_allowed(divisors(channels))}")
                return None
            return ResolvedAttention(heads=channels // att.head_dim, head_dim=att.head_dim, norm=_default(att.norm, True))
        heads = att.heads or 1
        if channels % heads:
            self.fail((*ap, "heads"), f"{heads} heads do not divide the level's {channels} channels",
                      found=str(heads), allowed=f"a divisor of {channels}: {join_allowed(divisors(channels))}")
            return None
        return ResolvedAttention(heads=heads, head_dim=channels // heads, norm=_default(att.norm, True))

    def level(
        self, lv: EncoderLevel | DecoderLevel, path: Path, blocks: list[ResolvedBlock],
        resample: tuple[str, Setting] | None, what: str,
    ) -> ResolvedLevel:
        order = self.setting(lv, path, "order").value
        seen: list[tuple[int, str]] = []
        for j, b in enumerate(blocks):
            first = b.in_channels + b.skip_channels
            # pre-activation: norm1 sees the block input; post: it sees conv1's output.
            label = f"{what} block {j}"
            if order == "pre":
                skip = f" ({b.in_channels} + {b.skip_channels} skip)" if b.skip_channels else ""
                seen.append((first, f"{label}'s first norm{skip}"))
            else:
                seen.append((b.out_channels, f"{label}'s first norm"))
            seen.append((b.out_channels, f"{label}'s second norm"))
        if lv.attention is not None and lv.attention.norm is not False:
            seen.append((lv.channels, f"{what}'s attention norm"))
        resolved_resample: dict[str, Any] = {}
        if resample is not None:
            key, setting = resample
            resolved_resample[key] = setting.value
            if setting.value == "resblock":
                seen.append((lv.channels, f"{what}'s {key} ResBlock"))
        return ResolvedLevel(
            channels=lv.channels,
            blocks=blocks,
            norm=self.resolve_norm(lv, path, seen),
            **self.plain_settings(lv, path),
            attention=self.resolve_attention(lv.attention, lv.channels, path),
            **resolved_resample,
        )

    def resolve(self) -> ResolvedSpec:
        s = self.spec
        self.check_structure()
        if self.problems:
            raise SpecError(self.problems)

        enc_levels = s.encoder.levels if s.encoder is not None else []
        dec_given = s.decoder.levels if s.decoder is not None else None
        size = s.sample_size if isinstance(s.sample_size, list) else [s.sample_size] * s.dims

        first_channels = enc_levels[0].channels if enc_levels else (dec_given or [])[0].channels
        stem = first_channels
        prev = stem
        skips: list[int] = [stem]  # U-Net skip stack: conv_in, every block, every downsample
        encoder: list[ResolvedLevel] = []
        for i, lv in enumerate(enc_levels):
            path: Path = ("encoder", "levels", i)
            n = lv.blocks if lv.blocks is not None else BUILTIN["blocks"]
            blocks = []
            for _ in range(n):
                blocks.append(ResolvedBlock(in_channels=prev, skip_channels=0, out_channels=lv.channels))
                prev = lv.channels
                skips.append(prev)
            resample = None
            if i < len(enc_levels) - 1:
                assert s.encoder is not None
                resample = ("downsample", _pick((lv.downsample, (*path, "downsample")),
                                                (s.encoder.downsample, ("encoder", "downsample")), builtin="conv"))
                skips.append(prev)
            encoder.append(self.level(lv, path, blocks, resample, f"encoder level {i}"))

        factor = 2 ** max(len(enc_levels) - 1, 0)
        if enc_levels and any(x % factor for x in size):
            self.fail(("sample_size",),
                      f"sample_size {size if s.dims > 1 else size[0]} is not divisible by {factor}, "
                      f"the encoder's total downsampling ({len(enc_levels) - 1} halvings)",
                      found=str(s.sample_size), allowed=f"a multiple of {factor}")

        # middle: at the deepest channels
        mid_spec = s.middle or MiddleSpec()
        mid_channels = enc_levels[-1].channels if enc_levels else (dec_given or [])[0].channels
        if not enc_levels:
            prev = mid_channels
        mblocks = mid_spec.blocks if mid_spec.blocks is not None else BUILTIN["middle_blocks"]
        mseen = [(mid_channels, "the middle blocks")] if mblocks else []
        if mid_spec.attention is not None and mid_spec.attention.norm is not False:
            mseen.append((mid_channels, "the middle attention"))
        middle = ResolvedMiddle(
            channels=mid_channels,
            blocks=mblocks,
            norm=self.resolve_norm(mid_spec, ("middle",), mseen),
            **self.plain_settings(mid_spec, ("middle",)),
            attention=self.resolve_attention(mid_spec.attention, mid_channels, ("middle",)),
        )

        decoder: list[ResolvedLevel] = []
        if s.model == "unet" or dec_given is not None:
            is_unet = s.model == "unet"
            if dec_given is not None:
                dec_levels: list[DecoderLevel] = list(dec_given)
                mirrored = False
            else:
                # Mirror the encoder: same channels and per-level settings (attention included, as
                # DDPM's AttnUpBlock mirrors its AttnDownBlock), one more block for the extra skip.
                dec_levels = [
                    DecoderLevel(channels=lv.channels, blocks=len(encoder[i].blocks) + 1, norm=lv.norm,
                                 attention=lv.attention, **{name: getattr(lv, name) for name in LEVEL_SETTINGS})
                    for i, lv in reversed(list(enumerate(enc_levels)))
                ]
                mirrored = True
            for k, dlv in enumerate(dec_levels):
                # Problems in a mirrored level are the encoder level's settings: point there.
                path = ("decoder", "levels", k) if not mirrored else ("encoder", "levels", len(enc_levels) - 1 - k)
                if is_unet:
                    mirror = len(enc_levels) - 1 - k
                    need = len(encoder[mirror].blocks) + 1
                    n = dlv.blocks if dlv.blocks is not None else need
                    if n != need:
                        self.fail((*path, "blocks"),
                                  f"decoder level {k} consumes the {need} skip tensors encoder level {mirror} "
                                  f"leaves at its resolution ({need - 1} blocks + 1), one per block",
                                  found=str(n), allowed=str(need), hint="or omit blocks")
                        n = need
                else:
                    n = dlv.blocks if dlv.blocks is not None else BUILTIN["blocks"]
                blocks = []
                for _ in range(n):
                    skip = skips.pop() if is_unet else 0
                    blocks.append(ResolvedBlock(in_channels=prev, skip_channels=skip, out_channels=dlv.channels))
                    prev = dlv.channels
                resample = None
                if k < len(dec_levels) - 1:
                    ups = s.decoder.upsample if s.decoder is not None else "nearest"
                    resample = ("upsample", _pick((dlv.upsample, (*path, "upsample")),
                                                  (ups, ("decoder", "upsample")), builtin="nearest"))
                decoder.append(self.level(dlv, path, blocks, resample, f"decoder level {k}"))
        if not decoder:
            prev = mid_channels

        head_spec = s.head
        head_norm_on = head_spec.norm if head_spec is not None and head_spec.norm is not None else True
        head_norm = (self.resolve_norm(None, ("head",), [(prev, "the output head's norm")], carries_time=False)
                     if head_norm_on else None)
        head = ResolvedHead(
            in_channels=prev,
            norm=head_norm,
            activation=self.setting(LevelSettings(activation=head_spec.activation if head_spec else None),
                                    ("head",), "activation").value,
            kernel_size=head_spec.kernel_size if head_spec is not None and head_spec.kernel_size is not None else 3,
            divide_by_timestep=bool(head_spec is not None and head_spec.divide_by_timestep),
        )
        # `defaults` norm feeds the head; the explicit form records it even when the head has none.
        self.warn_suspicious(encoder, decoder)
        time = self.resolve_time(first_channels)
        self.report_groups()
        if self.problems:
            raise SpecError(self.problems)
        return ResolvedSpec(
            unetdsl=s.unetdsl,
            name=s.name,
            description=s.description,
            model=s.model,
            dims=s.dims,
            in_channels=s.in_channels,
            out_channels=s.out_channels,
            sample_size=size,
            time=time,
            classes=s.classes,
            stem_channels=stem,
            encoder=encoder,
            middle=middle,
            decoder=decoder,
            head=head,
            defaults_settings=self.plain_settings(LevelSettings(), ("defaults",)),
            zero_out=bool(s.init.zero_out) if s.init is not None and s.init.zero_out is not None else False,
            center_input=bool(s.center_input),
            asymmetric_padding=bool(s.encoder is not None and s.encoder.asymmetric_padding),
        )

    def warn_suspicious(self, encoder: list[ResolvedLevel], decoder: list[ResolvedLevel]) -> None:
        """Valid specs that are probably not what was meant: warned, never refused."""
        s = self.spec
        if any(lv.downsample == "conv" for lv in encoder) and (s.encoder is None or s.encoder.asymmetric_padding is None):
            self.warnings.append(Problem(("encoder",), (
                "strided-conv downsampling pads one position on every side (diffusers' default, downsample_padding: "
                "1); DDPM and the LDM / Stable Diffusion autoencoders pad only right/bottom"),
                hint="write encoder.asymmetric_padding: true for their weights, or false to keep this"))
        if s.model == "decoder" and len(decoder) >= 2 and all(
                a.channels < b.channels for a, b in itertools.pairwise(decoder)):
            self.warnings.append(Problem(("decoder", "levels"), (
                f"a decoder's levels run in the order data flows, lowest resolution first; these grow from "
                f"{decoder[0].channels} to {decoder[-1].channels} channels as the resolution grows, the reverse of "
                f"the usual shape"), hint="were they listed highest resolution first? reverse them"))

    def resolve_time(self, first_channels: int) -> ResolvedTime | None:
        t = self.spec.time
        if t is None:
            return None
        dim = t.dim if t.dim is not None else 4 * first_channels
        injection = t.injection or "add"
        if isinstance(t, SinusoidalTime):
            return ResolvedTime(
                embedding="sinusoidal", features=t.features or first_channels, dim=dim, injection=injection,
                flip_sin_to_cos=_default(t.flip_sin_to_cos, True), freq_shift=float(_default(t.freq_shift, 0.0)),
                max_period=float(_default(t.max_period, 10000.0)), scale=1.0, log=False, timesteps=0,
            )
        if isinstance(t, FourierTime):
            return ResolvedTime(
                embedding="fourier", features=t.features or 2 * first_channels, dim=dim, injection=injection,
                flip_sin_to_cos=_default(t.flip_sin_to_cos, False), freq_shift=0.0, max_period=10000.0,
                scale=float(_default(t.scale, 16.0)), log=_default(t.log, True), timesteps=0,
            )
        assert isinstance(t, LearnedTime)
        return ResolvedTime(
            embedding="learned", features=t.features or first_channels, dim=dim, injection=injection,
            flip_sin_to_cos=False, freq_shift=0.0, max_period=10000.0, scale=1.0, log=False, timesteps=t.timesteps,
        )


def _default(value: T | None, fallback: T) -> T:
    return fallback if value is None else value


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _gcd_all(values: list[int]) -> int:
    g = 0
    for v in values:
        g = _gcd(g, v)
    return g


def resolve(spec: Spec, *, warnings: list[Problem] | None = None) -> ResolvedSpec:
    """Check every cross-field rule and expand `spec`. Raises SpecError listing all problems."""
    r = _Resolver(spec)
    try:
        resolved = r.resolve()
    except ValidationError as exc:  # a form the resolver built broke the language's own bounds: ours
        raise InternalError(f"resolving produced a value outside the language's bounds: {exc}") from exc
    if warnings is not None:
        warnings.extend(sort_problems(r.warnings))  # one warning per place it was set
    return resolved

