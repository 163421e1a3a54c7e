"""Valid specs that are probably not what was meant: warned, never refused."""

from __future__ import annotations

import itertools

from ..spec.resolved import ResolvedLevel
from .context import Context


def warn_suspicious(ctx: Context, encoder: list[ResolvedLevel], decoder: list[ResolvedLevel]) -> None:
    s = ctx.spec
    if any(lv.downsample == "conv" for lv in encoder) and (s.encoder is None or s.encoder.asymmetric_padding is None):
        ctx.warn(("encoder",), (
            "strided-conv downsampling pads one position on every side (diffusers' default, downsample_padding: "
            "1); DDPM and the LDM / Stable Diffusion autoencoders pad only right/bottom"),
            hint="write encoder.asymmetric_padding: true for their weights, or false to keep this")
    if s.model == "decoder" and len(decoder) >= 2 and all(a.channels < b.channels for a, b in itertools.pairwise(decoder)):
        ctx.warn(("decoder", "levels"), (
            f"a decoder's levels run in the order data flows, lowest resolution first; these grow from "
            f"{decoder[0].channels} to {decoder[-1].channels} channels as the resolution grows, the reverse of "
            f"the usual shape"), hint="were they listed highest resolution first? reverse them")
