"""What a spec costs, known before anything is allocated: parameters, FLOPs, activation memory,
training-state memory and the receptive field, per part of the model and in total.

The model is compiled with fake CPU tensors (`FakeTensorMode`: shapes, dtypes and strides on
the meta device, no storage, but the CPU's kernel choices) and run there, once for inference and
once per training step variant (forward, MSE loss, backward), under one dispatch mode (`_Meter`)
that

- counts FLOPs with `torch.utils.flop_counter`'s own formulas (so figures agree with
  `FlopCounterMode` on a real forward: multiply-adds x 2 of convolutions, linear layers and
  attention matmuls; elementwise ops, norms and activations count 0),
- follows every storage from the op that creates it until it is freed (weak references on the
  meta storages), giving live and peak bytes as an allocator without a cache would see them,
- attributes both to the part of the model running (stem, time, encoder i, middle, decoder i,
  head), and walks the convolutions and pools up to the bottleneck for the receptive field.

Fake *CPU* tensors rather than plain meta ones because kernel choices change memory: attention
runs the CPU flash kernel, as `F.scaled_dot_product_attention` does for float32/16/bf16 on CPU
(CUDA's kernels keep the same O(tokens) state), where the meta device would take the math path
and materialise the (tokens x tokens) score matrices that real runs never hold.

This is the one estimator: `unetdsl summary`, the table `build` prints and the resource guard
that refuses impossible builds (`resources.py`) all read an `Estimate`."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count

from .errors import UnetdslError
from .sample import sample_inputs
from .spec.resolved import ResolvedLevel, ResolvedSettings, ResolvedSpec

aten = torch.ops.aten
_FLASH = aten._scaled_dot_product_flash_attention_for_cpu
_FLASH_BACKWARD = aten._scaled_dot_product_flash_attention_for_cpu_backward
# FlopCounterMode has no formula for the CPU flash kernel (it would count a real CPU forward's
# attention as 0): count it as the math path's two matmuls, as FlopCounterMode does for CUDA's.
_FLOPS: dict[Any, Callable[..., int]] = {
    **flop_registry,
    _FLASH: lambda q, k, v, *a, out_val=None, **kw: sdpa_flop_count(q.shape, k.shape, v.shape),
    _FLASH_BACKWARD: lambda g, q, k, v, *a, out_val=None, **kw: sdpa_backward_flop_count(
        g.shape, q.shape, k.shape, v.shape),
}

# the attention kernels, whichever path SDPA takes on the fake CPU tensors
_ATTENTION = {_FLASH, aten._scaled_dot_product_attention_math, aten._scaled_dot_product_efficient_attention,
              aten._scaled_dot_product_flash_attention}

# granularities of activation checkpointing a training step is estimated for
CHECKPOINTING: tuple[str | None, ...] = (None, "block", "level")
# the training state per parameter in bytes (ZeRO's accounting): AdamW in float32 keeps weights,
# gradients and two moments (4 + 4 + 8); bf16 mixed precision keeps bf16 weights and gradients
# beside float32 master weights and moments (2 + 2 + 4 + 8): the same 16 bytes.
TRAINING_STATE_BYTES = {"adamw_fp32": 16, "bf16_mixed": 16}


@dataclass
class PartEstimate:
    """One row: a part of the model at the resolution it runs at."""

    part: str  # "stem", "time", "encoder 0", ..., "middle", "decoder 0", ..., "head"
    resolution: list[int] | None  # spatial size the part runs at (None: the time MLP)
    channels: str
    blocks: int | None
    resample: str | None  # the level's downsample/upsample method
    attention: dict[str, int] | None  # heads, head_dim, tokens
    parameters: int = 0
    flops: int = 0  # forward, at the estimate's batch
    kept_bytes: int = 0  # activations this part leaves for backward (training, no checkpointing)


@dataclass
class TrainingEstimate:
    checkpointing: str | None
    kept_bytes: int  # activations held for backward when forward ends
    peak_bytes: int  # peak of activations + gradients over forward, loss and backward


@dataclass
class Estimate:
    batch: int
    sample_size: list[int]
    dtype: str
    parameters: int
    parameter_bytes: int  # parameters and buffers in `dtype`
    flops: int  # one forward at `batch`
    inference_bytes: int  # peak activations of a no-grad forward (input and weights excluded)
    receptive_field: int  # input positions per side seen at the bottleneck, by convolutions alone
    global_attention: bool  # attention before the bottleneck: it sees the whole input
    parts: list[PartEstimate]
    training_flops: int | None = None  # forward + backward at `batch`
    training: list[TrainingEstimate] = field(default_factory=list)
    # what costs time besides FLOPs (resources.py's guard): the modules a build constructs, scripts or
    # traces and reloads, and the attention score elements one forward computes (B x heads x Lq x Lk per
    # call: softmax and exp per element, which FLOPs miss: at one channel per head they are all the work)
    modules: int = 0
    attention_scores: int = 0
    attention_largest: int = 0  # the score elements of the largest single attention call (a math kernel holds them)
    written_bytes: int = 0  # every activation one forward writes: the memory traffic of norms, activations, adds

    def training_state_bytes(self, scheme: str = "adamw_fp32") -> int:
        return self.parameters * TRAINING_STATE_BYTES[scheme]

    def step_bytes(self, t: TrainingEstimate) -> int:
        """A steady-state AdamW step's peak: weights and the two float32 moments, which live
        across steps, plus the simulated peak of activations and gradients."""
        return self.parameter_bytes + 8 * self.parameters + t.peak_bytes

    def as_data(self) -> dict[str, Any]:
        """The `summary --json` document (documented in the README)."""
        return {
            "batch": self.batch,
            "sample_size": list(self.sample_size),
            "dtype": self.dtype,
            "parameters": self.parameters,
            "parameter_bytes": self.parameter_bytes,
            "flops": {"forward": self.flops, "training_step": self.training_flops},
            "memory": {
                "inference_activations": self.inference_bytes,
                "training": {str(t.checkpointing).lower(): {
                    "kept_activations": t.kept_bytes,
                    "peak_activations_and_gradients": t.peak_bytes,
                    "step_total": self.step_bytes(t),
                } for t in self.training},
                "training_state": {scheme: self.training_state_bytes(scheme) for scheme in TRAINING_STATE_BYTES},
            },
            "receptive_field": {"bottleneck": self.receptive_field, "global_attention": self.global_attention},
            "levels": [asdict(p) for p in self.parts],
        }


# --- the meter ---------------------------------------------------------------------------------
# op -> (kernel, stride, dilation) extractor, for the receptive field (all kernels are cubic)
_WINDOWS: dict[Any, Callable[..., tuple[int, int, int]]] = {
    aten.convolution: lambda x, w, b, stride, padding, dilation, *a: (w.shape[2], stride[0], dilation[0]),
    **{op: (lambda x, k, s=(), *a: (k[0], (s or k)[0], 1)) for op in (
        aten.avg_pool1d, aten.avg_pool2d, aten.avg_pool3d, aten.max_pool1d, aten.max_pool2d,
        aten.max_pool3d, aten.max_pool2d_with_indices, aten.max_pool3d_with_indices)},
}


def _conv_transient(x: torch.Tensor, w: torch.Tensor) -> int:
    """Bytes an unpacked CPU convolution holds beside its input and output while it runs, unseen
    by a dispatch mode: oneDNN reorders the weight into its blocked layout on every call, and for
    a channels-last input aten first copies a default-layout weight to channels-last. Measured on
    DDPM at batch 4 (peak RSS inside each conv): 10.0 MiB over the input for the decoder's
    512->256 3x3 conv = two 4.5 MiB weight copies + its 1 MiB output. The peak of a no-grad
    forward is inside such a conv."""
    copies = 1
    if x.dim() in (4, 5):
        cl = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        if x.is_contiguous(memory_format=cl) and not x.is_contiguous() and not w.is_contiguous(memory_format=cl):
            copies = 2
    return copies * w.untyped_storage().nbytes()


class _Meter(TorchDispatchMode):
    """Counts FLOPs, live/peak bytes and the receptive field of the ops run under it, each
    attributed to `self.part` (set by hooks; outside any part: the stem until the head has run)."""

    def __init__(self) -> None:
        super().__init__()
        self.part = "stem"
        self.flops: dict[str, int] = {}
        self.live = self.peak = 0
        self.owner: dict[int, tuple[str, int]] = {}  # live storage -> (part that made it, bytes)
        self.field, self.jump = 1, 1  # receptive field and stride product so far
        self.before_bottleneck = True
        self.attention_before_bottleneck = False
        self.scores = 0  # attention score elements
        self.written = 0  # bytes of every storage made
        self.largest_scores = 0

    def exclude(self, tensors: Iterator[torch.Tensor]) -> None:
        """Storages that exist before the run (weights, inputs): never counted, even when an op
        returns a view of one (a transposed weight, a detached parameter in a recomputation)."""
        for t in tensors:
            self.owner[t.untyped_storage()._cdata] = ("", 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in _FLOPS:
            self.flops[self.part] = self.flops.get(self.part, 0) + _FLOPS[packet](*args, **kwargs, out_val=out)
        if self.before_bottleneck:
            if packet in _WINDOWS:
                k, s, d = _WINDOWS[packet](*args)
                self.field += (k - 1) * d * self.jump
                self.jump *= s
            elif packet in _ATTENTION:
                self.attention_before_bottleneck = True
        if packet in _ATTENTION:  # q (B, H, Lq, D), k (B, H, Lk, D)
            q, k = args[0], args[1]
            call = q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2]
            self.scores += call
            self.largest_scores = max(self.largest_scores, call)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t.untyped_storage())
        if packet is aten.convolution and not torch.is_grad_enabled():
            self.peak = max(self.peak, self.live + _conv_transient(args[0], args[1]))
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = storage._cdata
        if key in self.owner:  # a view, or an in-place op's result
            return
        nbytes = storage.nbytes()
        self.written += nbytes
        self.owner[key] = (self.part, nbytes)
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        _, nbytes = self.owner.pop(key)
        self.live -= nbytes

    def kept(self) -> dict[str, int]:
        by_part: dict[str, int] = {}
        for part, nbytes in self.owner.values():
            by_part[part] = by_part.get(part, 0) + nbytes
        return by_part


def _halves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name prefix, net): an autoencoder's two halves, each a net of its own; any other model is one."""
    if isinstance(getattr(model, "encoder", None), nn.ModuleList) or not hasattr(model, "decode"):
        return [("", model)]
    halves: list[tuple[str, nn.Module]] = [("encoder ", model.get_submodule("encoder")),
                                           ("decoder ", model.get_submodule("decoder"))]
    return halves


def _parts(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """(part, module, the part that work done after it belongs to): glue after the head is the
    head's, any other glue the stem's (an autoencoder's quant convs go to its halves' head/stem)."""
    for prefix, net in _halves(model):
        if prefix:  # the half itself: what runs before its conv_in (the post-quant conv) is its stem
            yield f"{prefix}stem", net, f"{prefix}head"
        for name in ("conv_in", "time_embedding", "middle", "head"):
            module = getattr(net, name, None)
            if module is not None:
                part = prefix + {"conv_in": "stem", "time_embedding": "time"}.get(name, name)
                yield part, module, f"{prefix}head" if name == "head" else f"{prefix}stem"
        for side in ("encoder", "decoder"):
            for i, level in enumerate(getattr(net, side, ())):
                yield f"{side} {i}", level, f"{prefix}stem"
        hint = getattr(net, "controlnet_cond_embedding", None)
        if hint is not None:  # a ControlNet: its hint embedding (before the stem's add), its zero convs
            yield "hint", hint, "stem"
            for conv in _zero_convs(net):
                yield "residuals", conv, "residuals"


def _zero_convs(controlnet: nn.Module) -> list[nn.Module]:
    """A ControlNet's zero convs: one per skip, then the middle's."""
    down: nn.ModuleList = controlnet.get_submodule("controlnet_down_blocks")  # type: ignore[assignment]
    return [*down, controlnet.get_submodule("controlnet_mid_block")]


@contextmanager
def _metered(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Iterator[_Meter]:
    meter = _Meter()
    meter.exclude(iter((*model.parameters(), *model.buffers(), *inputs)))
    handles = []
    for name, module, after in _parts(model):
        def enter(mod: nn.Module, args: Any, name: str = name) -> None:
            meter.part = name

        def leave(mod: nn.Module, args: Any, out: Any, name: str = name, after: str = after) -> None:
            meter.part = after
            if name.endswith("middle"):  # the first middle: an autoencoder's encoder's
                meter.before_bottleneck = False

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        with meter:
            yield meter
    finally:
        for h in handles:
            h.remove()


# --- the estimate ------------------------------------------------------------------------------
def fake_model(spec: ResolvedSpec, mode: FakeTensorMode, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The compiled model in fake CPU tensors: every shape, no storage."""
    from .compiler import compile_spec

    # (built in `dtype` rather than cast after: Module.to cannot swap fake parameters)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with mode:
            return compile_spec(spec)
    finally:
        torch.set_default_dtype(previous)


class EstimateError(UnetdslError):
    """A size the estimator cannot describe: no machine could run it either."""


# torch sizes are int64: a tensor of 2^63 bytes cannot even be described (a fake or meta tensor
# raises "Storage size calculation overflowed"). The bound below is on batch x positions x widest
# channels x 16; the largest real tensor is at most half of that, at <= 4 bytes an element: < 2^62 bytes
LARGEST_ELEMENTS = 2**60
# the widest tensor per position relative to the widest channel count: a transformer's GEGLU
# projection (2 x 4 x channels) and its byte-size products stay under 16 x channels
WIDEST_PER_CHANNEL = 16


def check_describable(spec: ResolvedSpec, batch: int, size: list[int]) -> None:
    """Raise EstimateError when a forward at `batch` x `size` would hold a tensor of more elements
    than torch can describe (it overflows int64 before any memory is asked for)."""
    channels = [spec.in_channels, spec.out_channels, spec.stem_channels, spec.middle.channels,
                *(lv.channels for lv in (*spec.encoder, *spec.decoder)), spec.context_dim or 0]
    positions = 1
    for n in size:
        positions *= n
    # a decoder-only model's output is larger than its input: up / down per side
    up = 2 ** sum(1 for lv in spec.decoder if lv.upsample is not None)
    growth = max(1, up // spec.downsampling_factor) ** spec.dims
    elements = batch * positions * growth * max(channels) * WIDEST_PER_CHANNEL
    if elements >= LARGEST_ELEMENTS:
        raise EstimateError(
            f"a forward at batch {batch} x {list(size)} would hold tensors of about 2^{elements.bit_length() - 1} "
            f"elements, more than unetdsl estimates (2^60; torch cannot describe 2^63 bytes); no machine can run it: "
            "use a smaller size or batch")


def estimate(spec: ResolvedSpec, *, batch: int = 1, size: list[int] | None = None,
             dtype: torch.dtype = torch.float32, training: bool = True) -> Estimate:
    """Everything `summary` reports, for one forward at `batch` x `size` (default: the spec's
    sample size) in `dtype`; with `training`, also a training step per checkpointing choice."""
    from .training import set_activation_checkpointing

    size = list(size or spec.sample_size)
    check_describable(spec, batch, size)
    mode = FakeTensorMode()
    model = fake_model(spec, mode, dtype)
    with mode:
        sample = sample_inputs(spec, batch=batch, size=size, dtype=dtype)
    inputs = sample.args()

    model.eval()
    with mode, torch.no_grad(), _metered(model, sample.tensors()) as infer:
        model(*inputs)
    if spec.model == "autoencoder":  # each half's rows, the decoder's at the latent size
        latent = [n // spec.downsampling_factor for n in size]
        parts = [*_rows(spec.part("encoder"), model.encoder, size, "encoder "),  # type: ignore[arg-type]
                 *_rows(spec.part("decoder"), model.decoder, latent, "decoder ")]  # type: ignore[arg-type]
    else:
        parts = _rows(spec, model, size)
    for p in parts:
        p.flops = infer.flops.get(p.part, 0)

    result = Estimate(
        batch=batch, sample_size=size, dtype=str(dtype).removeprefix("torch."),
        parameters=sum(p.numel() for p in model.parameters()),
        parameter_bytes=sum(t.nbytes for t in (*model.parameters(), *model.buffers())),
        flops=sum(infer.flops.values()), inference_bytes=infer.peak,
        receptive_field=infer.field, global_attention=infer.attention_before_bottleneck, parts=parts,
        modules=sum(1 for _ in model.modules()), attention_scores=infer.scores, attention_largest=infer.largest_scores,
        written_bytes=infer.written,
    )
    if training:
        model.train()
        for granularity in CHECKPOINTING:
            set_activation_checkpointing(model, granularity)
            with mode, _metered(model, sample.tensors()) as step:
                outs = model(*inputs)
                outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]  # a ControlNet's residuals
                kept = step.kept()
                sum(F.mse_loss(o, torch.empty_like(o)) for o in outs).backward()  # type: ignore[union-attr]
                del outs
            model.zero_grad(set_to_none=True)
            result.training.append(TrainingEstimate(granularity, sum(kept.values()), step.peak))
            if granularity is None:
                result.training_flops = sum(step.flops.values())
                for p in parts:
                    p.kept_bytes = kept.get(p.part, 0)
        set_activation_checkpointing(model, None)
    return result


def _width(lv: ResolvedLevel) -> str:
    """A level's width, and the width it ends at where its resampler or last conv changes it."""
    return f"{lv.channels}->{lv.end_channels}" if lv.end_channels and lv.end_channels != lv.channels else str(lv.channels)


def _rows(spec: ResolvedSpec, model: nn.Module, size: list[int], prefix: str = "") -> list[PartEstimate]:
    """The parts in forward order, with what the spec says of each and their parameter counts
    (`prefix`: an autoencoder half's, on its stem, middle and head; a quant conv is its head's or stem's)."""
    def params(name: str, index: int | None = None) -> int:
        module = getattr(model, name)
        if index is not None:
            module = module[index]
        extra = {"conv_in": "post_quant_conv", "head": "quant_conv"}.get(name)
        more = getattr(model, extra, None) if extra else None
        return sum(p.numel() for p in module.parameters()) + (sum(p.numel() for p in more.parameters()) if more else 0)

    def attention(s: ResolvedSettings, at: list[int]) -> dict[str, int] | None:
        if s.attention is None:
            return None
        tokens = 1
        for n in at:
            tokens *= n
        a = s.attention
        extra = {"memory": a.memory} if a.memory else {}  # (learned key/value slots every query also sees)
        return {"heads": a.heads, "head_dim": a.head_dim, "tokens": tokens, **extra,
                **({"linear": 1} if a.type == "linear" else {})}

    rows = [PartEstimate(f"{prefix}stem", list(size), f"{spec.in_channels}->{spec.stem_channels}", None, None, None,
                         params("conv_in"))]
    if spec.time is not None:
        rows.append(PartEstimate("time", None, f"{spec.time.features}->{spec.time.dim}", None, None, None,
                                 params("time_embedding")))
    at = list(size)
    for i, lv in enumerate(spec.encoder):
        rows.append(PartEstimate(f"encoder {i}", list(at), _width(lv), len(lv.blocks), lv.downsample,
                                 attention(lv, at), params("encoder", i)))
        if lv.downsample:
            at = [n // 2 for n in at]
    m = spec.middle
    width = f"{m.in_channels}->{m.channels}" if m.in_channels else str(m.channels)
    rows.append(PartEstimate(f"{prefix}middle", list(at), width, m.blocks, None, attention(m, at), params("middle")))
    if spec.controlnet is not None:  # no decoder, no head: the hint embedding, then the zero convs
        c = spec.controlnet
        zero = _zero_convs(model)
        return [rows[0], PartEstimate("hint", [n * c.hint_factor for n in size],
                                      "->".join(map(str, (c.hint_channels, *c.embedding, spec.stem_channels))),
                                      None, None, None, params("controlnet_cond_embedding")), *rows[1:],
                PartEstimate("residuals", None, f"{len(zero)} zero convs", None, None, None,
                             sum(p.numel() for z in zero for p in z.parameters()))]
    for i, lv in enumerate(spec.decoder):
        rows.append(PartEstimate(f"decoder {i}", list(at), _width(lv), len(lv.blocks), lv.upsample,
                                 attention(lv, at), params("decoder", i)))
        if lv.upsample:
            at = [n * 2 for n in at]
    rows.append(PartEstimate(f"{prefix}head", list(at), f"{spec.head.in_channels}->{spec.out_channels}", None, None, None,
                             params("head")))
    return rows
