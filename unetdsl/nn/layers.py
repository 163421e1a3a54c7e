"""Dimension-independent layer factories (guided-diffusion's conv_nd idea) and registries of
the closed names of the language: activations, norms, interpolation modes.

Every registry is a dict; an unknown name raises KeyError listing the known ones. Nothing here
imports or evaluates a name it does not list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE: dict[int, type[nn.Module]] = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
AVG_POOL: dict[int, type[nn.Module]] = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
MAX_POOL: dict[int, type[nn.Module]] = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
BATCH_NORM: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


K = TypeVar("K")
V = TypeVar("V")


def lookup(registry: Mapping[K, V], key: K, what: str) -> V:
    try:
        return registry[key]
    except KeyError:
        known = ", ".join(str(k) for k in registry)
        raise KeyError(f"unknown {what} {key!r}; known: {known}") from None


def conv_nd(dims: int, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
            padding: int = 0, bias: bool = True) -> nn.Module:
    cls = lookup(CONV, dims, "number of dims")
    return cls(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter (guided-diffusion): a residual branch then starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


# --- activations -------------------------------------------------------------------------------
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,  # negative slope 0.01 (torch's default)
    "mish": nn.Mish,
    "elu": nn.ELU,
}


def activation(name: str) -> nn.Module:
    factory = lookup(ACTIVATIONS, name, "activation")
    return factory()


# --- norms -------------------------------------------------------------------------------------
class GroupNorm32(nn.GroupNorm):
    """GroupNorm whose statistics are computed in float32 when the input is float16/bfloat16, the
    result cast back (guided-diffusion's GroupNorm32; CUDA autocast's float32 list has group_norm
    too): a half-precision mean/variance over a group of thousands of values loses the digits
    that matter. float32 and float64 inputs are normalised as they are, so the values and the
    weights are exactly nn.GroupNorm's (and diffusers')."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float16 and x.dtype != torch.bfloat16:
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


# layer and instance norm are GroupNorm with 1 group / 1 group per channel: per-sample statistics
# in any number of dims, affine per channel, identical to LayerNorm-over-(C,...) / InstanceNorm.
NORMS: dict[str, Callable[[int, int, int, float], nn.Module]] = {
    "group": lambda dims, channels, groups, eps: GroupNorm32(groups, channels, eps=eps),
    "layer": lambda dims, channels, groups, eps: GroupNorm32(1, channels, eps=eps),
    "instance": lambda dims, channels, groups, eps: GroupNorm32(channels, channels, eps=eps),
    "batch": lambda dims, channels, groups, eps: BATCH_NORM[dims](channels, eps=eps),
}


def norm(kind: str, dims: int, channels: int, groups: int, eps: float) -> nn.Module:
    factory = lookup(NORMS, kind, "norm")
    return factory(dims, channels, groups, eps)


# interpolate() modes per upsampling name and number of dims
INTERPOLATION: dict[str, dict[int, str]] = {
    "nearest": {1: "nearest", 2: "nearest", 3: "nearest"},
    "bilinear": {1: "linear", 2: "bilinear", 3: "trilinear"},
}


def broadcast_to_spatial(v: torch.Tensor, dims: int) -> torch.Tensor:
    """(B, C) -> (B, C, 1, ..., 1) with `dims` trailing ones: the same value at every position."""
    for _ in range(dims):
        v = v.unsqueeze(-1)
    return v
