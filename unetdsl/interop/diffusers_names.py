"""diffusers' names for what unetdsl names otherwise, shared by every class's converter (both
directions). Data only: the converters import this, nothing here imports them."""

from __future__ import annotations

ACTIVATIONS = {"silu": "silu", "swish": "silu", "mish": "mish", "gelu": "gelu", "relu": "relu"}
TIME_EMBEDDINGS = {"positional": "sinusoidal", "fourier": "fourier", "learned": "learned"}
INJECTIONS = {"default": "add", "scale_shift": "scale_shift"}
FOURIER_SCALE = 16.0  # UNet2DModel's GaussianFourierProjection(scale=16, log=True, flip_sin_to_cos=False)
# unetdsl activation -> the diffusers name written into configs
WRITTEN_ACTIVATIONS = {v: k for k, v in ACTIVATIONS.items() if k != "swish"}
