"""Spec -> ResolvedSpec: the single gate between the language and the compiler.

Two passes, each reporting *all* its problems at once:
1. structure (structure.py): sections present for the model kind, level counts, sample size,
   exclusive fields;
2. expansion: settings inherited (inherit.py; the plain ones defined once in spec/settings.py),
   the channel flow with skips and the mirrored decoder (channels.py), `groups: auto` chosen and
   every GroupNorm checked against the channels it really sees (norms.py: a decoder block's first
   norm sees its input *plus* the skip it concatenates), attention (attention.py), the time
   embedding (time.py), and warnings for valid-but-suspicious specs (suspicious.py).

Problems point at the path where the offending value was *set* (a level, or `defaults`), so the
front end can attach `file:line:col`. No torch here.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..errors import InternalError, Problem, SpecError, sort_problems
from ..spec.models import Spec
from ..spec.resolved import ResolvedControlNet, ResolvedLatent, ResolvedPreconditioning, ResolvedSpec
from ..spec.settings import DEFAULTS
from .attention import uses_context
from .channels import resolve_flow
from .conditions import resolve_conditions
from .context import Context
from .inherit import default
from .norms import report_groups
from .structure import check_structure
from .suspicious import warn_suspicious
from .time import check_time, resolve_time


def resolve(spec: Spec, *, warnings: list[Problem] | None = None) -> ResolvedSpec:
    """Check every cross-field rule and expand `spec`. Raises SpecError listing all problems."""
    ctx = Context(spec)
    try:
        resolved = _resolve(ctx)
    except ValidationError as exc:  # a form the resolver built broke the language's own bounds: ours
        raise InternalError(f"resolving produced a value outside the language's bounds: {exc}") from exc
    if warnings is not None:
        warnings.extend(sort_problems(ctx.warnings))  # one warning per place it was set
    return resolved


def _resolve(ctx: Context) -> ResolvedSpec:
    spec = ctx.spec
    check_structure(ctx)
    if ctx.problems:
        raise SpecError(ctx.problems)
    flow = resolve_flow(ctx)
    warn_suspicious(ctx, flow.encoder, flow.decoder)
    attending = [lv for lv in (*flow.encoder, flow.middle, *flow.decoder) if uses_context(lv.attention)]
    if spec.context_dim is not None and not attending:
        ctx.fail(("context_dim",), "the model takes a context, and no attention block attends to it",
                 found=str(spec.context_dim), hint="give the levels that should attend to it "
                 "`attention: {type: transformer}`, or remove context_dim")
    if spec.context_input_dim is not None and spec.context_dim is None:
        ctx.fail(("context_input_dim",), "context_input_dim is the width a context is projected from to "
                 "context_dim, and the spec declares no context_dim", hint="set context_dim, or remove this key")
    time = resolve_time(spec.time, flow.stem)
    if time is not None:
        check_time(ctx, time)
    conditions = resolve_conditions(ctx, spec.conditions, time)
    if spec.latent is not None and spec.latent.scaling_factor is None:
        # no silent 1: the published autoencoders' latents are scaled (a diffusion model trained on them expects it)
        ctx.fail(("latent",), "a latent section states its scaling_factor", hint="add `scaling_factor: X` "
                 "(Stable Diffusion 1.x/2.x's VAE: 0.18215; SDXL's: 0.13025; 1 for unscaled latents)")
    report_groups(ctx)
    if ctx.problems:
        raise SpecError(ctx.problems)
    resolved = _resolved(ctx, flow, time, conditions)
    least = resolved.smallest_multiple * resolved.downsampling_factor
    if min(resolved.sample_size) < least:  # reflect padding: each resampling's input must outsize its padding
        ctx.fail(("sample_size",), f"sample_size {min(resolved.sample_size)} leaves too few positions for the "
                 f"reflect-padded resampling (its padding must stay below the size it pads): at least {least}",
                 found=str(spec.sample_size), allowed=f"a multiple of {resolved.downsampling_factor} from {least}")
        raise SpecError(ctx.problems)
    return resolved


def _resolved(ctx: Context, flow: Any, time: Any, conditions: Any) -> ResolvedSpec:
    spec = ctx.spec
    return ResolvedSpec(
        unetdsl=spec.unetdsl,
        name=spec.name,
        description=spec.description,
        model=spec.model,
        dims=spec.dims,
        in_channels=spec.in_channels,
        out_channels=spec.out_channels,
        sample_size=flow.size,
        time=time,
        classes=spec.classes,
        context_dim=spec.context_dim,
        context_input_dim=spec.context_input_dim,
        conditions=conditions,
        latent=_latent(spec),
        controlnet=_controlnet(spec),
        stem_channels=flow.stem,
        stem_kernel=default(spec.stem.kernel_size if spec.stem else None, DEFAULTS["stem.kernel_size"]),
        stem_conv=default(spec.stem.conv if spec.stem else None, DEFAULTS["stem.conv"]),
        encoder=flow.encoder,
        middle=flow.middle,
        decoder=flow.decoder,
        head=flow.head,
        zero_out=default(spec.init.zero_out if spec.init else None, DEFAULTS["init.zero_out"]),
        center_input=default(spec.center_input, DEFAULTS["center_input"]),
        asymmetric_padding=default(spec.encoder.asymmetric_padding if spec.encoder else None,
                                   DEFAULTS["encoder.asymmetric_padding"]),
        input_pyramid=default(spec.encoder.input_pyramid if spec.encoder else None, DEFAULTS["encoder.input_pyramid"]),
        output_pyramid=default(spec.decoder.output_pyramid if spec.decoder else None,
                               DEFAULTS["decoder.output_pyramid"]),
        preconditioning=_preconditioning(spec),
        channel_change=default(spec.channel_change, DEFAULTS["channel_change"]),
        skips=default(spec.encoder.skips if spec.encoder else None, DEFAULTS["encoder.skips"]),
    )


def _preconditioning(spec: Spec) -> ResolvedPreconditioning | None:
    p = spec.preconditioning
    if p is None:
        return None
    return ResolvedPreconditioning(
        type=p.type, **{k: type(DEFAULTS[f"preconditioning.{k}"])(default(getattr(p, k), DEFAULTS[f"preconditioning.{k}"]))
                        for k in ("sigma_data", "beta_d", "beta_min", "timesteps")})


def _controlnet(spec: Spec) -> ResolvedControlNet | None:
    c = spec.controlnet
    if c is None:
        return None
    return ResolvedControlNet(
        hint_channels=default(c.hint_channels, DEFAULTS["controlnet.hint_channels"]),
        embedding=list(default(c.embedding, DEFAULTS["controlnet.embedding"])),
    )


def _latent(spec: Spec) -> ResolvedLatent | None:
    lat = spec.latent
    if lat is None:
        return None
    return ResolvedLatent(
        channels=lat.channels,
        # each conv defaults on where its half is
        quant_conv=default(lat.quant_conv, spec.model in ("autoencoder", "encoder")),
        post_quant_conv=default(lat.post_quant_conv, spec.model in ("autoencoder", "decoder")),
        scaling_factor=float(lat.scaling_factor if lat.scaling_factor is not None else 1.0),  # (refused when absent)
    )


__all__ = ["resolve"]
