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

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from .compiler import build_model


def __getattr__(name: str) -> Any:
    # torch is heavy: only the compiler pulls it in, and only when asked for.
    if name == "build_model":
        from .compiler import build_model

        return build_model
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
    "load_spec",
    "resolve_spec",
]
