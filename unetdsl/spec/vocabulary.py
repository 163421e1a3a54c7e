"""The closed vocabularies of the language. The compiler's registries are keyed by exactly
these names (a test checks both sides agree), so no spec string is ever imported or evaluated."""

from __future__ import annotations

from typing import Literal, get_args

ModelKind = Literal["unet", "encoder", "decoder", "autoencoder"]
NormType = Literal["group", "layer", "instance", "batch"]
Activation = Literal["silu", "gelu", "gelu_tanh", "relu", "leaky_relu", "mish", "elu"]
Order = Literal["pre", "post"]
Downsample = Literal["conv", "avgpool", "maxpool", "resblock"]
Upsample = Literal["nearest", "bilinear", "transposed", "resblock"]
TimeEmbedding = Literal["sinusoidal", "fourier", "learned"]
TimeInjection = Literal["add", "scale_shift"]
AttentionType = Literal["self", "transformer"]


def names(vocabulary: object) -> tuple[str, ...]:
    """The names of a Literal vocabulary, in declaration order."""
    return tuple(get_args(vocabulary))
