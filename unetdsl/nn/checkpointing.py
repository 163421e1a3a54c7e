"""Activation checkpointing as a switch on the modules themselves, not a wrapper around them.

A module that derives from `Checkpointable` runs its body through `torch.utils.checkpoint`
(non-reentrant) when `checkpointing` is on and autograd is recording: its activations are freed
after forward and recomputed in backward. The switch is a training-time setting: it is off by
default, not part of the spec (nor of the spec id), and never changes the state-dict keys, so
checkpoints saved with it on load into a model with it off. Scripted code never takes the
checkpointed path (`torch.jit.is_scripting()`; the method is `torch.jit.unused`), so a model
trained with checkpointing still scripts and exports as it is.

Each subclass writes the three-line pattern itself because TorchScript needs each signature typed:

    def forward(self, x, temb):
        if self.checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return self._checkpointed(x, temb)   # @torch.jit.unused: checkpoint(self._forward, ...)
        return self._forward(x, temb)
"""

from collections.abc import Callable
from typing import Any

from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint


def checkpoint(function: Callable[..., Any], *args: Any, use_reentrant: bool = False) -> Any:
    """torch.utils.checkpoint with unetdsl's choice spelled out: non-reentrant (works with
    inputs that need no grad, keyword-free calls, FSDP2 and torch.compile), RNG state preserved
    so dropout masks are the same in the recomputation."""
    return _checkpoint(function, *args, use_reentrant=use_reentrant, preserve_rng_state=True)


class Checkpointable(nn.Module):
    """A module whose forward may run under activation checkpointing (see the module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self.checkpointing = False
