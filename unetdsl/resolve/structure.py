"""Pass 1, structure: the sections the model kind needs, level counts, the sample size's shape,
the last levels' resampling, and settings that exclude one another. Reports every problem."""

from __future__ import annotations

from ..errors import Path
from ..spec.models import AttentionSpec, FourierTime, LearnedTime, LevelSettings, MiddleSpec, NormSpec, Spec
from ..spec.vocabulary import NORM_KINDS, UNET_KINDS
from .context import Context
from .inherit import BUILTIN


def check_structure(ctx: Context) -> None:
    """Sections present for the model kind, level counts, sample size, exclusive fields."""
    s = ctx.spec
    kind = s.model
    if kind in (*UNET_KINDS, "encoder", "autoencoder") and s.encoder is None:
        ctx.fail(("encoder",), f"a model of kind {kind!r} needs an encoder section",
                 allowed="encoder: {levels: [{channels: ...}, ...]}")
    if kind == "decoder":
        if s.encoder is not None:
            ctx.fail(("encoder",), "a standalone decoder has no encoder",
                     hint="remove the encoder section, or use model: unet")
        if s.decoder is None or s.decoder.levels is None:
            ctx.fail(("decoder",) if s.decoder is None else ("decoder", "levels"),
                     "a standalone decoder must list its levels (there is no encoder to mirror)",
                     allowed="decoder: {levels: [{channels: ...}, ...]} (lowest resolution first)")
    if kind == "encoder" and s.decoder is not None:
        ctx.fail(("decoder",), "a standalone encoder has no decoder",
                 hint="remove the decoder section, or use model: unet")
    if kind == "autoencoder":
        if s.latent is None:
            ctx.fail(("latent",), "an autoencoder needs a latent section", allowed="latent: {channels: 4, ...}")
        for key in ("time", "classes", "context_dim"):
            if getattr(s, key) is not None:
                ctx.fail((key,), f"an autoencoder takes images only: it has no {key}", hint=f"remove {key}")
    if s.latent is not None:
        check_latent(ctx)
    if kind == "controlnet" and s.controlnet is None:
        ctx.fail(("controlnet",), "a ControlNet states what it adds to the U-Net it controls: the controlnet "
                 "section is required", allowed="controlnet: {hint_channels: 3, embedding: [16, 32, 96, 256]}")
    if kind != "controlnet" and s.controlnet is not None:
        ctx.fail(("controlnet",), f"the controlnet section belongs to model: controlnet, not {kind}",
                 hint="remove it, or set model: controlnet (the rest of the spec is then the U-Net it controls)")
    if kind in UNET_KINDS and s.time is None:
        ctx.fail(("time",), f"a {'ControlNet' if kind == 'controlnet' else 'U-Net'} is conditioned on the "
                 "timestep: the time section is required",
                 allowed="time: {embedding: sinusoidal | fourier | learned, ...}")
    if s.classes is not None and s.time is None:
        ctx.fail(("classes",), "classes are embedded into the time embedding, so they need a time section",
                 hint="add time: {embedding: sinusoidal}")
    if kind in UNET_KINDS and s.encoder is not None and s.decoder is not None and s.decoder.levels is not None:
        n_enc, n_dec = len(s.encoder.levels), len(s.decoder.levels)
        if n_enc != n_dec:
            ctx.fail(("decoder", "levels"),
                     f"a U-Net decoder needs one level per encoder level: found {n_dec}, the encoder has {n_enc}",
                     found=str(n_dec), allowed=str(n_enc), hint="or omit decoder.levels to mirror the encoder")
    # sample size: one number per spatial dimension
    if isinstance(s.sample_size, list) and len(s.sample_size) != s.dims:
        ctx.fail(("sample_size",), f"sample_size lists {len(s.sample_size)} sizes for dims: {s.dims}",
                 found=str(s.sample_size), allowed=f"one number, or a list of {s.dims}")
    # the last level neither down- nor upsamples
    if s.encoder is not None:
        last = len(s.encoder.levels) - 1
        if s.encoder.levels[last].downsample is not None:
            ctx.fail(("encoder", "levels", last, "downsample"),
                     "the last encoder level does not downsample", hint="remove this key")
    if s.decoder is not None and s.decoder.levels is not None:
        last = len(s.decoder.levels) - 1
        if s.decoder.levels[last].upsample is not None:
            ctx.fail(("decoder", "levels", last, "upsample"),
                     "the last decoder level does not upsample", hint="remove this key")
    check_pyramids(ctx)
    check_preconditioning(ctx)
    check_dance_diffusion_options(ctx)
    # exclusive / type-dependent fields
    for path, norm in all_norms(s):
        for key in ("groups", "min_group_size"):
            if getattr(norm, key) is not None and norm.type is not None and NORM_KINDS[norm.type].groups != "given":
                ctx.fail((*path, key), f"{key} applies only to norm type 'group', not {norm.type!r}",
                         hint=f"remove {key}, or set type: group")
    for path, att in all_attention(s):
        att_kind = att.type or "self"
        if att.heads is not None and att.head_dim is not None and att_kind not in ("self", "linear"):
            ctx.fail(path, f"give attention heads or head_dim, not both: a {att_kind} block works at its level's width",
                     found=f"heads: {att.heads}, head_dim: {att.head_dim}",
                     hint="both (a width of its own, heads x head_dim) only for type self or linear")
    if isinstance(s.time, FourierTime) and s.time.features is not None and s.time.features % 2:
        ctx.fail(("time", "features"), f"fourier features come in sin/cos pairs: {s.time.features} is odd",
                 found=str(s.time.features), allowed="an even number")
    if s.head is not None and s.head.divide_by_timestep and s.time is None:
        ctx.fail(("head", "divide_by_timestep"), "dividing the output by the timestep needs a time section",
                 hint="add time: {embedding: fourier} (t is then the noise level), or remove this key")
    middle = s.middle or MiddleSpec()
    mblocks = middle.blocks if middle.blocks is not None else BUILTIN["middle_blocks"]
    if middle.attention is not None and middle.attention.placement != "all" and mblocks < 2:
        ctx.fail(("middle", "attention"),
                 f"middle attention sits between two ResBlocks; middle has {mblocks} block(s)",
                 hint="set middle.blocks: 2 or remove the attention")


def check_pyramids(ctx: Context) -> None:
    """A pyramid joins at the resamplings: its side must have one (two levels at least)."""
    s = ctx.spec
    if s.encoder is not None and s.encoder.input_pyramid not in (None, "none") and len(s.encoder.levels) < 2:
        ctx.fail(("encoder", "input_pyramid"), "an input pyramid joins the features after each downsample, and this "
                 "encoder has one level (no downsample)", hint="add a level, or remove input_pyramid")
    if s.decoder is not None and s.decoder.output_pyramid not in (None, "none"):
        mirrors = s.model in (*UNET_KINDS, "autoencoder")  # a decoder listing no levels mirrors the encoder
        levels = s.decoder.levels or (s.encoder.levels if s.encoder is not None and mirrors else [])
        if len(levels) < 2:
            ctx.fail(("decoder", "output_pyramid"), "an output pyramid sums a head at every decoder level, and this "
                     "decoder has one level", hint="add a level, or remove output_pyramid")


PRECONDITIONING_OWN = {"edm": ("sigma_data",), "vp": ("beta_d", "beta_min", "timesteps"), "ve": ()}


def check_preconditioning(ctx: Context) -> None:
    """The denoiser c_skip x + c_out F(...): a U-Net (or its ControlNet) with a time section whose output is
    its input's shape; each setting on the kind that reads it."""
    s, p = ctx.spec, ctx.spec.preconditioning
    if p is None:
        return
    if s.model not in UNET_KINDS:
        ctx.fail(("preconditioning",), f"preconditioning makes a U-Net a denoiser of its input; a model of kind "
                 f"{s.model!r} has none", hint="remove preconditioning, or use model: unet")
    elif s.time is None:
        pass  # (the missing time section is reported on its own)
    elif s.in_channels != s.out_channels:
        ctx.fail(("preconditioning",), f"the denoiser adds c_skip x to the network's output: its {s.out_channels} "
                 f"output channels must be the {s.in_channels} input channels", found=str(s.out_channels),
                 allowed=str(s.in_channels), hint="make out_channels in_channels, or remove preconditioning (a "
                 "network with extra outputs, such as a learned variance, is wrapped outside unetdsl)")
    if isinstance(s.time, LearnedTime):
        ctx.fail(("time", "embedding"), "a learned table is indexed by integer timesteps, and with preconditioning "
                 "the network's noise input is c_noise, a real number", hint="use embedding: sinusoidal or fourier")
    if isinstance(s.time, FourierTime) and s.time.log is not False:
        c_noise = {"edm": "ln(sigma) / 4", "ve": "ln(sigma / 2)", "vp": "(M - 1) t(sigma)"}[p.type]
        ctx.fail(("time", "log") if s.time.log else ("time", "embedding"), "with preconditioning the network's noise "
                 f"input is c_noise ({c_noise}), already a log and negative below sigma 1: fourier's log would make "
                 "it NaN",
                 hint="write time: {embedding: fourier, log: false} (EDM's NCSN++)")
    if s.head is not None and s.head.divide_by_timestep:
        ctx.fail(("head", "divide_by_timestep"), "the preconditioning's c_out already scales the output by the noise "
                 "level", hint="remove divide_by_timestep (a VE score model: preconditioning type ve)")
    for key in ("sigma_data", "beta_d", "beta_min", "timesteps"):
        if getattr(p, key) is not None and key not in PRECONDITIONING_OWN[p.type]:
            owner = " and ".join(k for k, own in PRECONDITIONING_OWN.items() if key in own)
            ctx.fail(("preconditioning", key), f"{key} is a setting of {owner} preconditioning, not {p.type}",
                     hint=f"remove {key}")


def check_dance_diffusion_options(ctx: Context) -> None:
    """time.into input, stem.conv and head.conv false: where they apply and what they exclude."""
    s = ctx.spec
    if s.time is not None and s.time.into == "input":
        if s.time.features is None:
            ctx.fail(("time", "features"), "time features concatenated to the input are input channels: state how many",
                     hint="add features: N (Dance Diffusion: 16)")
        for key in ("dim", "injection", "activation", "post_activation"):
            if getattr(s.time, key) is not None:
                ctx.fail(("time", key), f"{key} belongs to the embedding the ResBlocks take, and with into: input none "
                         "does (no MLP)", hint=f"remove {key}")
        for key, what in (("classes", "class labels"), ("conditions", "conditions")):
            if getattr(s, key) is not None:
                ctx.fail((key,), f"{what} join the time MLP, which a model with time into: input does not have",
                         hint="remove them, or time.into: blocks")
    if s.stem is not None and s.stem.conv is False:
        for key in ("channels", "kernel_size"):
            if getattr(s.stem, key) is not None:
                ctx.fail(("stem", key), f"a model without a stem conv has no stem {key.replace('_', ' ')}",
                         hint=f"remove {key}, or stem.conv")
        if s.model not in (*UNET_KINDS, "encoder"):
            ctx.fail(("stem", "conv"), f"a {s.model} starts from its latent or middle: stem.conv false is for U-Nets "
                     "and encoders", hint="remove it")
    if s.head is not None and s.head.conv is False:
        if s.model not in ("unet", "controlnet", "decoder"):  # (a ControlNet's spec is its U-Net's)
            ctx.fail(("head", "conv"), f"the last decoder ResBlock gives the output, and a {s.model} has none",
                     hint="remove it (a U-Net or decoder only)")
        for key in ("norm", "kernel_size", "activation", "stem_block", "divide_by_timestep"):
            if getattr(s.head, key):
                ctx.fail(("head", key), f"a model without a head conv has no head {key.replace('_', ' ')}",
                         hint=f"remove {key}")


def check_latent(ctx: Context) -> None:
    """A latent section on the model kinds that have one, agreeing with their channels."""
    s, lat = ctx.spec, ctx.spec.latent
    assert lat is not None
    if s.model in UNET_KINDS:
        kind = "ControlNet" if s.model == "controlnet" else "U-Net"
        ctx.fail(("latent",), f"a {kind} has no latent section (it is a model of an autoencoder's latents: "
                 "its in/out channels are the latent channels)", hint="remove latent, or use model: autoencoder")
    if s.model == "encoder" and s.out_channels != 2 * lat.channels:
        ctx.fail(("out_channels",), f"an encoder to a {lat.channels}-channel latent gives the posterior's mean and "
                 f"log-variance: {2 * lat.channels} channels", found=str(s.out_channels), allowed=str(2 * lat.channels))
    if s.model == "decoder" and s.in_channels != lat.channels:
        ctx.fail(("in_channels",), f"a decoder of a {lat.channels}-channel latent takes {lat.channels} channels",
                 found=str(s.in_channels), allowed=str(lat.channels))
    if s.model == "encoder" and lat.post_quant_conv:
        ctx.fail(("latent", "post_quant_conv"), "the post-quant conv is the decoder's: an encoder has none",
                 hint="remove it")
    if s.model == "decoder" and lat.quant_conv:
        ctx.fail(("latent", "quant_conv"), "the quant conv is the encoder's: a decoder has none", hint="remove it")


def all_norms(s: Spec) -> list[tuple[Path, NormSpec]]:
    out: list[tuple[Path, NormSpec]] = []
    if s.defaults is not None and s.defaults.norm is not None:
        out.append((("defaults", "norm"), s.defaults.norm))
    for path, lv in all_levels(s):
        if lv.norm is not None:
            out.append(((*path, "norm"), lv.norm))
    return out


def all_levels(s: Spec) -> list[tuple[Path, LevelSettings]]:
    out: list[tuple[Path, LevelSettings]] = []
    if s.encoder is not None:
        out += [(("encoder", "levels", i), lv) for i, lv in enumerate(s.encoder.levels)]
    if s.middle is not None:
        out.append((("middle",), s.middle))
    if s.decoder is not None and s.decoder.levels is not None:
        out += [(("decoder", "levels", i), lv) for i, lv in enumerate(s.decoder.levels)]
    return out


def all_attention(s: Spec) -> list[tuple[Path, AttentionSpec]]:
    out = []
    for path, lv in all_levels(s):
        att = getattr(lv, "attention", None)
        if att is not None:
            out.append(((*path, "attention"), att))
    return out
