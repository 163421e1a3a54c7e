"""Dimension-independent layer factories (guided-diffusion's conv_nd idea) and registries of
the closed names of the language: activations, norms, interpolation modes.

Every registry is a dict; an unknown name raises KeyError listing the known ones. Nothing here
imports or evaluates a name it does not list.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

import torch
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from .rmsnorm import RMSNorm


class Conv2d(nn.Conv2d):
    """nn.Conv2d (the same parameters, names and numbers) that, in CPU inference, convolves with
    its weight packed once into oneDNN's blocked layout instead of reordering it on every call.

    Every oneDNN convolution first reorders the weight into the blocked layout its kernel reads
    (and, for a channels-last input, aten copies it to channels-last before that): for weights
    that are large against the work (SD's 1280-channel 3x3 convs at 8x8 latents) that is most of
    the time. Inductor's CPU freezing and IPEX pack weights once; so does this, in eager:
    - only where nothing can differentiate through it or trace it: grad disabled
      (`torch.inference_mode()` / `torch.no_grad()`), not TorchScript (skipped when scripting),
      not torch.export / torch.compile (they see the plain convolution);
    - CPU, float32 or bfloat16 (where oneDNN runs it: `PACKED_DTYPES`), zero padding, when oneDNN
      is available;
    - weights with a version counter: not those made inside `torch.inference_mode()` (build or
      load the model outside it, then run it inside); not under `torch.autocast("cpu")`, whose
      reduced-precision convolution aten runs, nor inside `torch.func` transforms (vmap, jvp) or
      forward-mode AD;
    - the packed copy is remade when the weight changes (its version counter or storage: an
      optimizer step, `load_state_dict`, `.to()`), and for a 1x1 kernel when the input's shape
      changes (`packs_for_any_shape`); dropped by `.train()`, never in `state_dict`, never
      pickled or deep-copied.
    It costs a second copy of the conv weights while the model serves; `set_prepacking(model,
    False)` turns it off. The numbers are the unpacked call's up to float32 rounding (oneDNN may
    pick another kernel for the packed weight: differences of ~1e-6 on DDPM's outputs)."""

    prepack = True  # class default (unannotated: TorchScript need not type it); set_prepacking sets it per module
    __jit_ignored_attributes__ = ("_packed",)  # the packed copy, when present, is Python-side only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # noqa: SIM102 (TorchScript skips this block only when nested)
            if self._packable(x):
                return self._packed_forward(x)
        return self._conv_forward(x, self.weight, self.bias)

    @torch.jit.unused
    def _packable(self, x: torch.Tensor) -> bool:
        # under torch.autocast("cpu") aten's convolution runs in the autocast dtype; oneDNN's packed
        # op has no autocast rule and would run float32 (slower, and another output dtype). It has
        # no batching rule nor forward derivative either: not inside torch.func transforms (vmap,
        # jvp, ...) nor forward-mode AD, which grad mode does not show.
        # a weight made inside torch.inference_mode() has no version counter, so a later in-place
        # change (load_state_dict in inference mode) could not be seen: it convolves unpacked.
        # plain tensors only, outside any dispatch mode: fake tensors (unetdsl.estimate), meta
        # weights, FLOP counters and tracers must see the ordinary convolution. is_compiling()
        # comes first: dynamo folds it to True and never reaches the dispatch-mode query, which it
        # cannot trace (it would break the graph at every convolution)
        return (not torch.compiler.is_compiling() and self.prepack and MKLDNN_PACKING and not torch.is_grad_enabled()
                and type(x) is torch.Tensor and x.device.type == "cpu" and not self.weight.is_meta
                and not self.weight.is_inference() and not torch.is_autocast_enabled("cpu")
                and torch._C._functorch.peek_interpreter_stack() is None
                and torch.autograd.forward_ad._current_level < 0
                and x.dtype in PACKED_DTYPES and self.weight.dtype == x.dtype and x.dim() == 4
                and self.padding_mode == "zeros" and not isinstance(self.padding, str)
                and _get_current_dispatch_mode() is None)

    @torch.jit.unused
    def _packed_forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        # a 1x1 weight's packed layout holds for one input shape (packs_for_any_shape): packed
        # again when the shape changes, one fast reorder, as the unpacked call pays on every call
        shape = None if packs_for_any_shape(self.kernel_size) else tuple(x.shape)
        key = (w._version, w.data_ptr(), w.dtype, shape)
        cached = self.__dict__.get("_packed")
        if cached is None or cached[0] != key:
            packed = torch._C._nn.mkldnn_reorder_conv2d_weight(  # type: ignore[call-arg]
                w.detach().to_mkldnn(), list(self.padding), list(self.stride), list(self.dilation), self.groups,
                list(x.shape))
            cached = self.__dict__["_packed"] = (key, packed)
        # (B, Cin, H, W) channels-last -> (B, Cout, H', W') channels-last
        return torch.ops.mkldnn._convolution_pointwise(
            x.contiguous(memory_format=torch.channels_last), cached[1], self.bias, list(self.padding),
            list(self.stride), list(self.dilation), self.groups, "none", [], "")

    def train(self, mode: bool = True) -> Conv2d:
        self.__dict__.pop("_packed", None)
        return super().train(mode)

    def __getstate__(self) -> dict[str, object]:  # pickling and deepcopy: never the packed copy
        state = dict(super().__getstate__())
        state.pop("_packed", None)
        return state


# oneDNN's packed-weight convolution, as inductor's CPU freezing uses it
MKLDNN_PACKING = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
# bfloat16 only on CPUs whose oneDNN runs it (AVX-512 and up), the check inductor's mkldnn fusions make
PACKED_DTYPES: tuple[torch.dtype, ...] = (torch.float32,) + (
    (torch.bfloat16,) if MKLDNN_PACKING and torch.ops.mkldnn._is_mkldnn_bf16_supported() else ())


def packs_for_any_shape(kernel_size: tuple[int, ...]) -> bool:
    """Whether a weight packed once for oneDNN serves inputs of every shape: kernels larger than 1x1.

    The blocked layout oneDNN's kernel reads is chosen for the problem's shape. For 3x3 kernels it
    was the same across every batch and size measured (11 channel pairs from 3->128 to 2560->1280,
    batches 1-8, sizes 4-64: no reorder at run time). For 1x1 kernels it is not (brgconv_1x1
    blocks its output channels by 48 or 64 or 32 with the problem): run at another shape, a 1x1
    weight packed once was reordered on every call by oneDNN's slow reference reorder, 1.5-13x
    slower in 225 of 891 shape pairs (640->640 on 16x16: 20 ms against 1.5 ms). Unpacked, a 1x1
    convolution reorders its (small) weight each call with a fast jit reorder: within 5-15 % of
    packed at its own shape. So eager packs a 1x1 weight for the input shape it runs at and again
    when that shape changes; a frozen TorchScript file, which serves every shape and writes nothing
    while it serves, leaves its 1x1 convolutions unpacked (`torchscript_packing`)."""
    return any(k != 1 for k in kernel_size)


def set_prepacking(model: nn.Module, enabled: bool) -> nn.Module:
    """Whether the model's 2D convolutions pack their weights for CPU inference (`Conv2d`):
    on by default; off saves the packed copies' memory. Returns `model`."""
    for m in model.modules():
        if isinstance(m, Conv2d):
            m.prepack = enabled
            m.__dict__.pop("_packed", None)
    return model


@contextlib.contextmanager
def prepacking_off(model: nn.Module) -> Iterator[nn.Module]:
    """The model with its weights unpacked for a few calls (one check forward gains nothing from
    packing, and would hold a second copy of the conv weights): each module's setting is restored
    on exit, its packed copy made again on its next packed call."""
    convs = [m for m in model.modules() if isinstance(m, Conv2d)]
    saved = [m.prepack for m in convs]
    set_prepacking(model, False)
    try:
        yield model
    finally:
        for m, was in zip(convs, saved, strict=True):
            m.prepack = was


CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: Conv2d, 3: nn.Conv3d}
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


def in_place(act: nn.Module) -> nn.Module:
    """The activation writing into its input, for inference calls on a tensor the caller made
    (a norm's output): no new (B, C, *S) tensor. Each new tensor of that size costs far more than
    the arithmetic on the CPU: glibc hands large blocks back to the kernel when freed, so every
    new one page-faults in again (a SiLU after a GroupNorm of (8, 128, 32, 32): 3.4 ms out of place
    against 0.3 ms in place on 2 cores). An activation without an in-place form (GELU) is returned
    as it is."""
    if not hasattr(act, "inplace"):
        return act
    twin = copy.deepcopy(act)
    twin.inplace = True  # type: ignore[assignment]
    return twin


# --- norms -------------------------------------------------------------------------------------
# GroupNorm is ATen's: its CPU and CUDA kernels accumulate the statistics of float16/bfloat16
# inputs in float32 (opmath / acc_type) and write the result in the input's dtype, so a half-
# precision model needs no float32 round trip of its own (guided-diffusion's GroupNorm32 casts
# x, weight and bias up and the result back: four more kernels per norm for the same numbers;
# a bfloat16 GroupNorm of (8, 128, 32, 32) on 2 CPU cores took 3.4 ms with them, 0.34 ms without).
# tests/test_training.py checks the float32-accurate statistics on an input with a large offset.
# layer and instance norm are GroupNorm with 1 group / 1 group per channel: per-sample statistics
# in any number of dims, affine per channel, identical to LayerNorm-over-(C,...) / InstanceNorm.
NORMS: dict[str, Callable[[int, int, int, float], nn.Module]] = {
    "group": lambda dims, channels, groups, eps: nn.GroupNorm(groups, channels, eps=eps),
    "layer": lambda dims, channels, groups, eps: nn.GroupNorm(1, channels, eps=eps),
    "instance": lambda dims, channels, groups, eps: nn.GroupNorm(channels, channels, eps=eps),
    "batch": lambda dims, channels, groups, eps: BATCH_NORM[dims](channels, eps=eps),
    "rms": lambda dims, channels, groups, eps: RMSNorm(channels, eps=eps),
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
