"""Training-time settings for a built model: which modules are the units of work (for FSDP2
sharding and activation checkpointing), and the checkpointing switch. Nothing here changes what
the model computes, its parameters' names, or its spec id; a model with any of it on still
scripts and exports.

    model = unetdsl.build_model("specs/ddpm-cifar10.yaml")      # train mode
    unetdsl.set_activation_checkpointing(model, "block")          # or "level", or None
    for unit in unetdsl.training_units(model, "level"):           # FSDP2, as torchtitan shards blocks
        fully_shard(unit)
    fully_shard(model)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .nn.attention import AttentionBlock
from .nn.checkpointing import Checkpointable
from .nn.resblock import ResBlock
from .nn.transformer import SpatialTransformer
from .nn.unet import Level, MiddleBlock

# granularity -> the module classes that make one unit of work, outermost first
GRANULARITIES: dict[str, tuple[type[nn.Module], ...]] = {
    # every encoder level, the middle, every decoder level: few units, big recomputations
    "level": (Level, MiddleBlock),
    # every ResBlock (resampling ResBlocks included) and every attention or transformer block
    "block": (ResBlock, AttentionBlock, SpatialTransformer),
}


def _granularity(granularity: str) -> tuple[type[nn.Module], ...]:
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; known: {', '.join(GRANULARITIES)}")
    return GRANULARITIES[granularity]


def training_units(model: nn.Module, granularity: str = "level") -> list[nn.Module]:
    """The modules of `model` that form one unit at `granularity`, in forward order: what to
    pass to FSDP2's `fully_shard` one by one (then shard the root), or to checkpoint."""
    kinds = _granularity(granularity)
    return [m for m in model.modules() if isinstance(m, kinds)]


def set_activation_checkpointing(model: nn.Module, granularity: str | None = "block") -> nn.Module:
    """Recompute activations in backward instead of keeping them (torch.utils.checkpoint,
    non-reentrant), per `"block"` (each ResBlock and attention block) or per `"level"` (each
    encoder/decoder level and the middle); `None` turns it off. Returns `model`.

    Gradients are those of the plain model; dropout masks are replayed (RNG state preserved).
    Only modules built by unetdsl are switched, wherever they sit (inside DDP, FSDP2 or
    torch.compile wrappers too, since those keep the modules). Set it before `torch.compile`."""
    chosen = () if granularity is None else _granularity(granularity)
    found = False
    for m in model.modules():
        if isinstance(m, Checkpointable):
            found = True
            m.checkpointing = isinstance(m, chosen)
    if not found:
        raise ValueError("set_activation_checkpointing needs a model built by unetdsl (no unetdsl blocks found)")
    return model


def activation_bytes(step: Callable[[], torch.Tensor]) -> int:
    """Bytes autograd keeps for backward while `step()` runs forward (each storage counted once,
    parameters excluded), then backward on its result: the activation memory of a training step,
    exactly and repeatably (a process's RSS is neither). `step` returns the loss."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, nn.Parameter):
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step()
    loss.backward()
    return sum(storages.values())
