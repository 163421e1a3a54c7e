"""Pass 2, the channel flow: every level's blocks with the channels they take and give (a U-Net
decoder block takes a skip tensor besides its input), the decoder mirrored from the encoder when
omitted, the resampling of each level, the middle and the head; each place's norms are checked
against the channel counts they really see."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import Path
from ..spec.models import DecoderLevel, EncoderLevel, LevelSettings, MiddleSpec
from ..spec.resolved import ResolvedBlock, ResolvedHead, ResolvedLevel, ResolvedMiddle, ResolvedSettings
from ..spec.settings import DEFAULTS, LEVEL_SETTINGS
from ..spec.vocabulary import UNET_KINDS
from .attention import resolve_attention
from .context import Context
from .inherit import BUILTIN, Setting, default, pick, plain_settings, setting
from .norms import resolve_norm


@dataclass
class Flow:
    stem: int  # conv_in's output channels
    size: list[int]
    encoder: list[ResolvedLevel]
    middle: ResolvedMiddle
    decoder: list[ResolvedLevel]
    head: ResolvedHead


FILTERED = ("avgpool", "resblock", "filter")  # the resampling methods a resample_filter shapes


def check_filter(ctx: Context, lv: EncoderLevel | DecoderLevel, path: Path, resample: tuple[str, Setting] | None,
                 what: str) -> None:
    """A filter other than the box: an even number of taps with a non-zero sum, on a level that
    resamples with avgpool or resblock (conv, maxpool and the interpolating upsamplers have none)."""
    f = setting(ctx, lv, path, "resample_filter")
    taps = [float(v) for v in f.value]
    where = f.origin or (*path, "resample_filter")
    if taps == [1.0, 1.0]:
        return
    if len(taps) % 2 or sum(taps) == 0:
        ctx.fail(where, f"a resample filter has an even number of taps and a non-zero sum (it is normalised to 1): "
                 f"{taps}", allowed="e.g. [1, 1] or [1, 3, 3, 1]")
    if resample is not None and resample[1].value not in FILTERED and not _pyramid(ctx, resample[0]):
        ctx.fail(where, f"{what} resamples by {resample[1].value}, which has no filter; resample_filter shapes "
                 f"{' and '.join(FILTERED)} resampling and the pyramids'", found=str(taps),
                 hint=f"use {' or '.join(FILTERED)} there, or set the filter on the levels that do")


def check_time_at(ctx: Context, lv: LevelSettings, path: Path) -> None:
    """time_at: first joins the embedding (projected to the block's output width) at the first norm's
    output: conv1's in post order; in pre order that norm sees the block's input."""
    at = setting(ctx, lv, path, "time_at")
    if at.value == "first" and setting(ctx, lv, path, "order").value == "pre":
        ctx.fail(at.origin or (*path, "time_at"), "time_at: first joins the embedding at the first norm's output, "
                 "which in pre order normalises the block's input (before conv1 sets its width)",
                 hint="set order: post (lucidrains' conv -> norm -> scale-shift -> act), or time_at: second")


def _pyramid(ctx: Context, resample: str) -> bool:
    """Whether the side a level `resample`s on has a pyramid (whose resampling the level's filter shapes)."""
    s = ctx.spec
    if resample == "downsample":
        return s.encoder is not None and s.encoder.input_pyramid not in (None, "none")
    return s.decoder is not None and s.decoder.output_pyramid not in (None, "none")


def level(ctx: Context, lv: EncoderLevel | DecoderLevel, path: Path, blocks: list[ResolvedBlock],
          resample: tuple[str, Setting] | None, what: str, end: int = 0) -> ResolvedLevel:
    """One level: its settings inherited, its norms checked against what its blocks see."""
    order = setting(ctx, lv, path, "order").value
    seen: list[tuple[int, str]] = []
    for j, b in enumerate(blocks):
        first = b.in_channels + b.skip_channels
        # pre-activation: norm1 sees the block input; post: it sees conv1's output.
        label = f"{what} block {j}"
        mid = b.mid_channels or b.out_channels  # conv1's output
        if order == "pre":
            skip = f" ({b.in_channels} + {b.skip_channels} skip)" if b.skip_channels else ""
            seen.append((first, f"{label}'s first norm{skip}"))
            seen.append((mid, f"{label}'s second norm"))
        else:
            seen.append((mid, f"{label}'s first norm"))
            seen.append((b.out_channels, f"{label}'s second norm"))
    if lv.attention is not None and lv.attention.norm is not False:
        seen.append((lv.channels, f"{what}'s attention norm"))
    changed = blocks[-1].out_channels if blocks and blocks[-1].out_channels != lv.channels else 0
    if lv.attention is not None and changed:  # channel_change mirror: the last attention runs at the width it ends at
        if lv.attention.norm is not False:
            seen.append((changed, f"{what}'s last attention norm"))
        # (the heads the level's width gives, which the last attention keeps)
        heads = lv.attention.heads or (max(lv.channels // lv.attention.head_dim, 1) if lv.attention.head_dim else 1)
        own = lv.attention.heads is not None and lv.attention.head_dim is not None
        if not own and changed % heads:
            ctx.fail((*path, "attention"), f"{what} ends at {changed} channels (channel_change: mirror), and its last "
                     f"attention's heads do not divide them", found=str(changed),
                     hint="give the attention a width of its own (heads and head_dim), or change the widths")
    resolved_resample: dict[str, Any] = {}
    if resample is not None:
        key, chosen = resample
        resolved_resample[key] = chosen.value
        if chosen.value == "resblock":
            seen.append((lv.channels, f"{what}'s {key} ResBlock"))
            if end:
                seen.append((end, f"{what}'s {key} ResBlock's second norm"))
    check_filter(ctx, lv, path, resample, what)
    check_time_at(ctx, lv, path)
    return ResolvedLevel(
        channels=lv.channels,
        blocks=blocks,
        norm=resolve_norm(ctx, lv, path, seen),
        **plain_settings(ctx, lv, path),
        attention=resolve_attention(ctx, lv.attention, lv.channels, path),
        **resolved_resample,
        end_channels=end,
    )


@dataclass(frozen=True)
class Side:
    """What differs between the encoder's levels and the decoder's: their name, how a level ends
    (the setting, at level and side, and its default) and which way skip tensors flow."""

    name: str  # "encoder" | "decoder"
    resample: str  # "downsample" | "upsample"
    pushes: bool  # a U-Net encoder's blocks push skips; its decoder's pop them


ENCODER = Side("encoder", "downsample", pushes=True)
DECODER = Side("decoder", "upsample", pushes=False)


NO_CONV = ("avgpool", "maxpool", "filter")  # resamplers without a conv: they cannot change the width


def side(ctx: Context, sd: Side, placed: Sequence[tuple[EncoderLevel | DecoderLevel, Path, int | None]],
         prev: int, skips: list[int], mode: str = "every", ends: Sequence[int] = (), change: str = "block"
         ) -> tuple[list[ResolvedLevel], int]:
    """One side's levels, in forward order, from `prev` input channels: each (level, the path its
    settings are reported at, the blocks a U-Net decoder level must have or None). Encoder blocks
    push their outputs on the U-Net `skips` stack (and each downsample where `every`); decoder blocks
    pop one each (`mode` levels: each level's output before its downsample is pushed, and each decoder
    level's first block pops one). `ends`: the width each level ends at (0 or none: its own), in its
    resampler or last conv (`change` resample) or in its last block's second conv (mirror).
    Returns the levels and the channels the last one gives."""
    every = mode == "every"
    unet = ctx.spec.model in UNET_KINDS
    part = getattr(ctx.spec, sd.name)
    side_default = getattr(part, sd.resample) if part is not None else None
    builtin = DEFAULTS[f"{sd.name}.{sd.resample}"]
    out: list[ResolvedLevel] = []
    for k, (lv, path, need) in enumerate(placed):
        n = lv.blocks if lv.blocks is not None else (need if need is not None else BUILTIN["blocks"])
        if need is not None and n != need:
            mirror = len(placed) - 1 - k
            counted = f"{need - 1} blocks + 1" if every else "one per block: skips: blocks"
            ctx.fail((*path, "blocks"),
                     f"decoder level {k} consumes the {need} skip tensors encoder level {mirror} "
                     f"leaves at its resolution ({counted}), one per block",
                     found=str(n), allowed=str(need), hint="or omit blocks")
            n = need
        blocks = []
        end = ends[k] if k < len(ends) else 0
        for j in range(n):
            pops = unet and not sd.pushes and (mode != "levels" or j == 0)
            skip = skips.pop() if pops and skips else 0
            out_channels = lv.channels
            mid = 0
            if change == "mirror" and end and j == n - 1:  # the width changes in the last block's second conv
                out_channels, mid = end, lv.channels
            blocks.append(ResolvedBlock(in_channels=prev, skip_channels=skip, out_channels=out_channels,
                                        mid_channels=mid))
            prev = out_channels
            if unet and sd.pushes and (mode != "levels" or j == n - 1):
                skips.append(prev)
        resample = None
        if k < len(placed) - 1:  # every level but the last changes the resolution
            resample = (sd.resample, pick((getattr(lv, sd.resample), (*path, sd.resample)),
                                          (side_default, (sd.name, sd.resample)), builtin=builtin))
            method = resample[1]
            if end and change == "resample" and method.value in NO_CONV:
                ctx.fail(method.origin or (*path, sd.resample), f"with channel_change: resample a level's resampler "
                         f"sets the next level's width, and {method.value} has no conv to do it",
                         found=method.value, hint="use conv, pixel_unshuffle or resblock, or channel_change: block")
            prev = end or prev
            if unet and sd.pushes and every:
                skips.append(prev)
        else:
            prev = end or prev  # (channel_change resample: the side's last 3x3 conv)
        out.append(level(ctx, lv, path, blocks, resample, f"{sd.name} level {k}", end))
    return out, prev


def mirrored(enc_levels: list[EncoderLevel], encoder: list[ResolvedLevel], mode: str = "every") -> list[DecoderLevel]:
    """The decoder a U-Net gets when it lists none: the encoder's levels reversed with their
    channels (the width each encoder level ends at: its own, or with channel_change resample the next
    part's) and per-level settings (attention included, as DDPM's AttnUpBlock mirrors its
    AttnDownBlock), one block more per level for the extra skip where every output is kept."""
    return [
        DecoderLevel(channels=encoder[i].out_channels, blocks=len(encoder[i].blocks) + (1 if mode == "every" else 0),
                     norm=lv.norm, attention=lv.attention, **{name: getattr(lv, name) for name in LEVEL_SETTINGS})
        for i, lv in reversed(list(enumerate(enc_levels)))
    ]


def resolve_flow(ctx: Context) -> Flow:
    s = ctx.spec
    enc_levels = s.encoder.levels if s.encoder is not None else []
    dec_given = s.decoder.levels if s.decoder is not None else None
    size = s.sample_size if isinstance(s.sample_size, list) else [s.sample_size] * s.dims

    first_channels = enc_levels[0].channels if enc_levels else (dec_given or [])[0].channels
    given = s.stem.channels if s.stem is not None else None
    if given is not None and not enc_levels:
        ctx.fail(("stem", "channels"), "a model without an encoder feeds its stem to the middle: the stem's width is "
                 "the middle's", found=str(given), allowed=str(first_channels), hint="remove stem.channels")
        given = None
    features = s.time.features if s.time is not None and s.time.into == "input" and s.time.features else 0
    stem_conv = s.stem is None or s.stem.conv is not False
    stem = prev = (given or first_channels) if stem_conv else s.in_channels + features
    mode = default(s.encoder.skips if s.encoder else None, DEFAULTS["encoder.skips"])
    every = mode == "every"
    change = default(s.channel_change, DEFAULTS["channel_change"])
    resample = change == "resample"
    mid_spec = s.middle or MiddleSpec()
    mid_channels = enc_levels[-1].channels if enc_levels else (dec_given or [])[0].channels
    if mid_spec.channels is not None and enc_levels:
        mid_channels = mid_spec.channels
    elif mid_spec.channels is not None and mid_spec.channels != mid_channels:
        ctx.fail(("middle", "channels"), "a model without an encoder starts at its middle: its width is the first "
                 "decoder level's", found=str(mid_spec.channels), allowed=str(mid_channels), hint="remove it")
    skips: list[int] = [stem] if every else []  # U-Net skip stack: conv_in, every block, every downsample
    enc_ends = [*(lv.channels for lv in enc_levels[1:]), mid_channels] if resample else []
    encoder, prev = side(ctx, ENCODER, [(lv, ("encoder", "levels", i), None) for i, lv in enumerate(enc_levels)],
                         prev, skips, mode, enc_ends, change)

    factor = 2 ** max(len(enc_levels) - 1, 0)
    if enc_levels and any(x % factor for x in size):
        ctx.fail(("sample_size",),
                 f"sample_size {size if s.dims > 1 else size[0]} is not divisible by {factor}, "
                 f"the encoder's total downsampling ({len(enc_levels) - 1} halvings)",
                 found=str(s.sample_size), allowed=f"a multiple of {factor}")

    # middle: at the deepest channels (its first ResBlock reaching them from `prev` where they differ)
    if not enc_levels:
        prev = mid_channels
    mblocks = mid_spec.blocks if mid_spec.blocks is not None else BUILTIN["middle_blocks"]
    mseen = [(mid_channels, "the middle blocks")] if mblocks else []
    if prev != mid_channels:
        mseen.append((prev, "the middle's first block's first norm"))
        if not mblocks:
            ctx.fail(("middle", "channels"), f"the middle has no ResBlock to change the width from the encoder's "
                     f"{prev} channels", found=str(mid_channels), hint="give the middle blocks, or channel_change: "
                     "resample (the encoder's last 3x3 conv changes it), or remove middle.channels")
    if mid_spec.attention is not None and mid_spec.attention.norm is not False:
        mseen.append((mid_channels, "the middle attention"))
    check_time_at(ctx, mid_spec, ("middle",))
    if mid_spec.resample:
        check_filter(ctx, mid_spec, ("middle",), None, "the middle")  # type: ignore[arg-type]
    middle = ResolvedMiddle(
        resample=bool(mid_spec.resample),
        channels=mid_channels,
        in_channels=prev if prev != mid_channels else 0,
        blocks=mblocks,
        norm=resolve_norm(ctx, mid_spec, ("middle",), mseen),
        **plain_settings(ctx, mid_spec, ("middle",)),
        attention=resolve_attention(ctx, mid_spec.attention, mid_channels, ("middle",)),
    )

    decoder: list[ResolvedLevel] = []
    if s.model in (*UNET_KINDS, "autoencoder") or dec_given is not None:
        dec_levels = list(dec_given) if dec_given is not None else mirrored(list(enc_levels), encoder, mode)
        # problems in a mirrored level are the encoder level's settings: point there
        placed = [(dlv, ("decoder", "levels", k) if dec_given is not None
                   else ("encoder", "levels", len(enc_levels) - 1 - k),
                   len(encoder[len(enc_levels) - 1 - k].blocks) + (1 if every else 0)
                   if s.model in UNET_KINDS and mode != "levels" else None)
                  for k, dlv in enumerate(dec_levels)]
        head_conv = s.head is None or s.head.conv is not False
        dec_ends: list[int] = []
        if resample:
            dec_ends = [*(d.channels for d in dec_levels[1:]), stem]
        elif change == "mirror":  # each level ends at the next one's width; the last at the output's without a head
            dec_ends = [*(d.channels for d in dec_levels[1:]), 0 if head_conv else s.out_channels]
        prev = mid_channels
        decoder, prev = side(ctx, DECODER, placed, prev, skips, mode, dec_ends, change)
        if not head_conv and prev != s.out_channels:
            ctx.fail(("head", "conv"), f"without a head the last decoder level gives the output: its {prev} channels "
                     f"are not the {s.out_channels} output channels",
                     hint="channel_change: mirror ends the last level at out_channels, or keep the head")
    if not decoder:
        prev = mid_channels
    # an autoencoder's encoder half ends in a head of its own on the middle's channels, with the same settings
    also = [(mid_channels, "the encoder half's output head norm")] if s.model == "autoencoder" else []
    if s.decoder is not None and s.decoder.output_pyramid not in (None, "none"):  # a head at every level but the last
        also += [(lv.out_channels if change == "mirror" else lv.channels, f"the output pyramid's head norm at decoder "
                  f"level {k}") for k, lv in enumerate(decoder[:-1])]
    if s.head is not None and s.head.stem_block:  # the same defaults' norm: `groups: auto` chosen over both
        also.append((prev + stem, "the head's stem block's first norm"))
    head = resolve_head(ctx, prev, also)
    if s.head is not None and s.head.stem_block:
        head = head.model_copy(update={"stem_block": stem_block(ctx, prev, stem)})
    return Flow(stem=stem, size=size, encoder=encoder, middle=middle, decoder=decoder, head=head)


def stem_block(ctx: Context, channels: int, stem: int) -> ResolvedSettings:
    """The head's ResBlock on cat(features, stem output): (channels + stem) -> channels, with the defaults'
    settings (lucidrains' final_res_block)."""
    path = ("head", "stem_block")
    if ctx.spec.model not in UNET_KINDS:  # (a ControlNet's spec is its U-Net's: it has no head to run it)
        ctx.fail(path, f"the stem block concatenates the stem's output with the decoder's, which a {ctx.spec.model} "
                 "does not have at one size", hint="remove it (a U-Net only)")
    place = LevelSettings()  # nothing of its own: every setting is the defaults'
    order = setting(ctx, place, path, "order").value
    seen = [(channels + stem if order == "pre" else channels, "the head's stem block's first norm"),
            (channels, "the head's stem block's second norm")]
    check_time_at(ctx, place, path)
    return ResolvedSettings(norm=resolve_norm(ctx, place, path, seen), **plain_settings(ctx, place, path),
                            attention=None)


def resolve_head(ctx: Context, channels: int, also: list[tuple[int, str]]) -> ResolvedHead:
    """The output head on the last part's `channels`: norm and activation (from defaults) unless
    `head.norm: false`, then the output conv. `also`: other channel counts the same head settings
    normalise (an autoencoder's encoder half)."""
    h = ctx.spec.head
    conv = h is None or h.conv is not False
    norm_on = conv and (h.norm if h is not None and h.norm is not None else DEFAULTS["head.norm"])
    return ResolvedHead(
        in_channels=channels, conv=conv,
        norm=resolve_norm(ctx, None, ("head",), [(channels, "the output head's norm"), *also], carries_time=False)
        if norm_on else None,
        # (no head: nothing of one applies, and its fields keep their built-in values)
        activation=setting(ctx, LevelSettings(activation=h.activation if h else None), ("head",), "activation").value
        if conv else LEVEL_SETTINGS["activation"].default,
        kernel_size=h.kernel_size if h is not None and h.kernel_size is not None else DEFAULTS["head.kernel_size"],
        divide_by_timestep=default(h.divide_by_timestep if h else None, DEFAULTS["head.divide_by_timestep"]),
    )
