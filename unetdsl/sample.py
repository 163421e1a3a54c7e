"""Example inputs for a resolved spec: what checks, summaries and exports run the model on."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .spec.resolved import ResolvedSpec, ResolvedTime


@dataclass
class SampleInputs:
    x: torch.Tensor  # (B, Cin, *S)
    t: torch.Tensor | None  # (B,)
    y: torch.Tensor | None  # (B,) class labels
    context: torch.Tensor | None = None  # (B, tokens, context_dim)
    cond: dict[str, torch.Tensor] | None = None  # {name: (B, width)}, in the spec's order
    hint: torch.Tensor | None = None  # a ControlNet's: (B, hint_channels, *S x hint_factor)
    residuals: list[torch.Tensor] | None = None  # a controlled U-Net's: a ControlNet's output

    def args(self) -> tuple[Any, ...]:
        """The model's positional arguments: forward(x, t, y, context, cond[, hint | residuals])."""
        last = self.hint if self.hint is not None else self.residuals
        return (self.x, self.t, self.y, self.context, self.cond, *([last] if last is not None else []))

    def present(self) -> tuple[Any, ...]:
        """The inputs the model has, in order (what an exported artifact takes; cond a mapping)."""
        return tuple(a for a in self.args() if a is not None)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """present() with `cond` replaced by its tensors, in the spec's order, and `residuals` by its
        (ONNX's inputs)."""
        return tuple(v for a in self.present()
                     for v in (a.values() if isinstance(a, dict) else a if isinstance(a, list) else (a,)))


# the context's token count in sample inputs: CLIP's 77 would only slow every check down; the
# checks' second input uses another count, so that a fixed count cannot pass unnoticed
SAMPLE_TOKENS = 8


# timestep samplers per embedding: integer steps for tables/sinusoids, positive sigmas for fourier
_TIMESTEPS: dict[str, Callable[[ResolvedTime, int, torch.Generator], torch.Tensor]] = {
    "sinusoidal": lambda t, b, g: torch.randint(0, 1000, (b,), generator=g),
    "learned": lambda t, b, g: torch.randint(0, t.timesteps, (b,), generator=g),
    "fourier": lambda t, b, g: torch.rand(b, generator=g) * 80.0 + 0.01,  # log(t) needs t > 0
}


def sample_inputs(spec: ResolvedSpec, *, batch: int = 2, size: list[int] | None = None, seed: int = 0,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  tokens: int = SAMPLE_TOKENS, residuals: bool = False) -> SampleInputs:
    """Inputs for `spec` at `batch` x `size`; with `residuals`, a U-Net's residuals too (what a
    ControlNet of it gives: one per skip, then the middle's)."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, spec.in_channels, *(size or spec.sample_size))
    x = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    t = None
    if spec.preconditioning is not None:  # a denoiser takes the noise level: log-uniform over EDM's [0.002, 80]
        t = torch.exp(torch.rand(batch, generator=g) * (math.log(80.0) - math.log(0.002)) + math.log(0.002)).to(device)
    elif spec.time is not None:
        t = _TIMESTEPS[spec.time.embedding](spec.time, batch, g).to(device)
    y = torch.randint(0, spec.classes, (batch,), generator=g).to(device) if spec.classes is not None else None
    context = None
    if spec.context_dim is not None:
        width = spec.context_input_dim or spec.context_dim  # (the model projects a context_input_dim one itself)
        context = torch.randn(batch, tokens, width, generator=g).to(device=device, dtype=dtype)
    cond = None
    if spec.condition_inputs:  # vectors; values a sinusoid embeds are sizes and steps (SDXL's time_ids): 0..1024
        cond = {i.name: (torch.randint(0, 1025, (batch, i.width), generator=g).to(dtype) if i.sinusoid
                         else torch.randn(batch, i.width, generator=g).to(dtype)).to(device)
                for i in spec.condition_inputs}
    hint = None
    if spec.controlnet is not None:  # an image in [-1, 1]
        hint_shape = (batch, spec.controlnet.hint_channels, *(s * spec.controlnet.hint_factor for s in shape[2:]))
        hint = (torch.rand(hint_shape, generator=g) * 2 - 1).to(device=device, dtype=dtype)
    res = None
    if residuals:  # small: a ControlNet's zero convs start at zero
        res = [(torch.randn(batch, c, *(n // scale for n in shape[2:]), generator=g) * 0.1).to(device=device, dtype=dtype)
               for c, scale in zip(spec.residual_channels, spec.residual_scales, strict=True)]
    return SampleInputs(x, t, y, context, cond, hint, res)


def first_nonfinite(model: torch.nn.Module, inputs: SampleInputs) -> str | None:
    """The first module (in call order) whose output holds NaN or Inf on `inputs`, as
    "name (Type)": where a non-finite forward starts, for a message that says why. None when
    every output is finite."""
    found: list[str] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(module: torch.nn.Module, _args: object, out: object) -> None:
        if not found and isinstance(out, torch.Tensor) and out.is_floating_point() and not torch.isfinite(out).all():
            found.append(f"{names.get(module) or 'the model'} ({type(module).__name__})")

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.inference_mode():
            model(*inputs.args())
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None
