"""unetdsl: a validated YAML spec -> a scriptable diffusion U-Net.

    spec, warnings = unetdsl.resolve_spec("specs/ddpm-cifar10.yaml")
    model = unetdsl.build_model("specs/ddpm-cifar10.yaml")

The front end (load, validate, resolve) does not import torch; `build_model` does, lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import InternalError, Problem, SpecError, UnetdslError
from .frontend import load_spec, resolve_spec
from .spec import ResolvedSpec, Spec
from .version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from .api import build_model, controlnet_from_unet, load
    from .artifacts import export
    from .nn.layers import set_prepacking
    from .training import set_activation_checkpointing, training_units
    from .weights import load_weights, save

# torch is heavy: only these pull it in, and only when first asked for.
_LAZY = {"build_model": "api", "controlnet_from_unet": "api", "export": "artifacts", "save": "weights", "load": "api",
         "load_weights": "weights",
         "set_activation_checkpointing": "training", "training_units": "training",
         "set_prepacking": "nn.layers"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'unetdsl' has no attribute {name!r}")


__all__ = [
    "InternalError",
    "Problem",
    "ResolvedSpec",
    "Spec",
    "SpecError",
    "UnetdslError",
    "__version__",
    "build_model",
    "controlnet_from_unet",
    "export",
    "load",
    "load_spec",
    "load_weights",
    "resolve_spec",
    "save",
    "set_activation_checkpointing",
    "set_prepacking",
    "training_units",
]
