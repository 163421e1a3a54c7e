"""The closed vocabularies of the language. The compiler's registries are keyed by exactly
these names (a test checks both sides agree), so no spec string is ever imported or evaluated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

ModelKind = Literal["unet", "encoder", "decoder", "autoencoder", "controlnet"]
# the kinds whose channel flow is a U-Net's (a ControlNet is written as the U-Net it controls)
UNET_KINDS = ("unet", "controlnet")
NormType = Literal["group", "layer", "instance", "batch", "rms"]
Activation = Literal["silu", "gelu", "gelu_tanh", "relu", "leaky_relu", "mish", "elu"]
Order = Literal["pre", "post"]
Downsample = Literal["conv", "avgpool", "maxpool", "resblock", "pixel_unshuffle", "conv4"]
Upsample = Literal["nearest", "bilinear", "transposed", "resblock", "filter"]
TimeEmbedding = Literal["sinusoidal", "fourier", "learned"]
TimeInjection = Literal["add", "scale_shift"]
AttentionType = Literal["self", "transformer", "joint", "linear"]
ConditionProject = Literal["mlp", "linear", "none"]
ConditionInto = Literal["time", "features"]
# NCSN++'s progressive pyramids (score SDE, EDM's SongUNet encoder_type / decoder_type)
InputPyramid = Literal["none", "skip", "residual"]
OutputPyramid = Literal["none", "skip"]
# the denoiser a raw network is wrapped in (Karras et al. 2022, table 1; EDM2 uses edm's)
Preconditioning = Literal["edm", "vp", "ve"]
# where the width changes between levels: in the next ResBlock (diffusers) or in the resampler (lucidrains)
ChannelChange = Literal["block", "resample", "mirror"]
# which encoder outputs a U-Net keeps for its decoder
Skips = Literal["every", "blocks", "levels"]


@dataclass(frozen=True)
class NormKind:
    """What a norm type does, as the resolver and the compiler need to know it (one row per name,
    so no rule spells out norm names)."""

    groups: str  # "given": GroupNorm with the spec's groups | "one": one group | "per_channel" | "none" (not grouped)
    per_channel_mean: bool  # subtracts each channel's own mean: a bias in the conv before it does nothing
    erases_added_time: bool  # ...per sample, over positions alone: a time embedding added before it is subtracted again
    batch_statistics: bool  # statistics over the batch: training and sampling (often batch 1) differ


NORM_KINDS: dict[str, NormKind] = {
    "group": NormKind(groups="given", per_channel_mean=False, erases_added_time=False, batch_statistics=False),
    "layer": NormKind(groups="one", per_channel_mean=False, erases_added_time=False, batch_statistics=False),
    "instance": NormKind(groups="per_channel", per_channel_mean=True, erases_added_time=True, batch_statistics=False),
    "batch": NormKind(groups="none", per_channel_mean=True, erases_added_time=False, batch_statistics=True),
    # RMSNorm (lucidrains): each position scaled to unit RMS over the channels, no mean removed
    "rms": NormKind(groups="none", per_channel_mean=False, erases_added_time=False, batch_statistics=False),
}


def names(vocabulary: object) -> tuple[str, ...]:
    """The names of a Literal vocabulary, in declaration order."""
    return tuple(get_args(vocabulary))
