"""Pass 2, the channel flow: every level's blocks with the channels they take and give (a U-Net
decoder block takes a skip tensor besides its input), the decoder mirrored from the encoder when
omitted, the resampling of each level, the middle and the head; each place's norms are checked
against the channel counts they really see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import Path
from ..spec.models import DecoderLevel, EncoderLevel, LevelSettings, MiddleSpec
from ..spec.resolved import ResolvedBlock, ResolvedHead, ResolvedLevel, ResolvedMiddle
from ..spec.settings import DEFAULTS, LEVEL_SETTINGS
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


def level(ctx: Context, lv: EncoderLevel | DecoderLevel, path: Path, blocks: list[ResolvedBlock],
          resample: tuple[str, Setting] | None, what: str) -> ResolvedLevel:
    """One level: its settings inherited, its norms checked against what its blocks see."""
    order = setting(ctx, lv, path, "order").value
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
        key, chosen = resample
        resolved_resample[key] = chosen.value
        if chosen.value == "resblock":
            seen.append((lv.channels, f"{what}'s {key} ResBlock"))
    return ResolvedLevel(
        channels=lv.channels,
        blocks=blocks,
        norm=resolve_norm(ctx, lv, path, seen),
        **plain_settings(ctx, lv, path),
        attention=resolve_attention(ctx, lv.attention, lv.channels, path),
        **resolved_resample,
    )


def mirrored(enc_levels: list[EncoderLevel], encoder: list[ResolvedLevel]) -> list[DecoderLevel]:
    """The decoder a U-Net gets when it lists none: the encoder's levels reversed with their
    channels and per-level settings (attention included, as DDPM's AttnUpBlock mirrors its
    AttnDownBlock), one block more per level for the extra skip."""
    return [
        DecoderLevel(channels=lv.channels, blocks=len(encoder[i].blocks) + 1, norm=lv.norm, attention=lv.attention,
                     **{name: getattr(lv, name) for name in LEVEL_SETTINGS})
        for i, lv in reversed(list(enumerate(enc_levels)))
    ]


def resolve_flow(ctx: Context) -> Flow:
    s = ctx.spec
    enc_levels = s.encoder.levels if s.encoder is not None else []
    dec_given = s.decoder.levels if s.decoder is not None else None
    size = s.sample_size if isinstance(s.sample_size, list) else [s.sample_size] * s.dims

    first_channels = enc_levels[0].channels if enc_levels else (dec_given or [])[0].channels
    stem = prev = first_channels
    skips: list[int] = [stem]  # U-Net skip stack: conv_in, every block, every downsample
    encoder: list[ResolvedLevel] = []
    for i, lv in enumerate(enc_levels):
        path: Path = ("encoder", "levels", i)
        blocks = []
        for _ in range(lv.blocks if lv.blocks is not None else BUILTIN["blocks"]):
            blocks.append(ResolvedBlock(in_channels=prev, skip_channels=0, out_channels=lv.channels))
            prev = lv.channels
            skips.append(prev)
        resample = None
        if i < len(enc_levels) - 1:
            assert s.encoder is not None
            resample = ("downsample", pick((lv.downsample, (*path, "downsample")),
                                           (s.encoder.downsample, ("encoder", "downsample")),
                                           builtin=DEFAULTS["encoder.downsample"]))
            skips.append(prev)
        encoder.append(level(ctx, lv, path, blocks, resample, f"encoder level {i}"))

    factor = 2 ** max(len(enc_levels) - 1, 0)
    if enc_levels and any(x % factor for x in size):
        ctx.fail(("sample_size",),
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
        norm=resolve_norm(ctx, mid_spec, ("middle",), mseen),
        **plain_settings(ctx, mid_spec, ("middle",)),
        attention=resolve_attention(ctx, mid_spec.attention, mid_channels, ("middle",)),
    )

    decoder: list[ResolvedLevel] = []
    if s.model == "unet" or dec_given is not None:
        is_unet = s.model == "unet"
        dec_levels = list(dec_given) if dec_given is not None else mirrored(list(enc_levels), encoder)
        for k, dlv in enumerate(dec_levels):
            # Problems in a mirrored level are the encoder level's settings: point there.
            path = ("decoder", "levels", k) if dec_given is not None else ("encoder", "levels", len(enc_levels) - 1 - k)
            if is_unet:
                mirror = len(enc_levels) - 1 - k
                need = len(encoder[mirror].blocks) + 1
                n = dlv.blocks if dlv.blocks is not None else need
                if n != need:
                    ctx.fail((*path, "blocks"),
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
                ups = s.decoder.upsample if s.decoder is not None else DEFAULTS["decoder.upsample"]
                resample = ("upsample", pick((dlv.upsample, (*path, "upsample")),
                                             (ups, ("decoder", "upsample")), builtin=DEFAULTS["decoder.upsample"]))
            decoder.append(level(ctx, dlv, path, blocks, resample, f"decoder level {k}"))
    if not decoder:
        prev = mid_channels
    return Flow(stem=stem, size=size, encoder=encoder, middle=middle, decoder=decoder, head=resolve_head(ctx, prev))


def resolve_head(ctx: Context, channels: int) -> ResolvedHead:
    """The output head on the last part's `channels`: norm and activation (from defaults) unless
    `head.norm: false`, then the output conv."""
    h = ctx.spec.head
    norm_on = h.norm if h is not None and h.norm is not None else DEFAULTS["head.norm"]
    return ResolvedHead(
        in_channels=channels,
        norm=resolve_norm(ctx, None, ("head",), [(channels, "the output head's norm")], carries_time=False)
        if norm_on else None,
        activation=setting(ctx, LevelSettings(activation=h.activation if h else None), ("head",), "activation").value,
        kernel_size=h.kernel_size if h is not None and h.kernel_size is not None else DEFAULTS["head.kernel_size"],
        divide_by_timestep=default(h.divide_by_timestep if h else None, DEFAULTS["head.divide_by_timestep"]),
    )
