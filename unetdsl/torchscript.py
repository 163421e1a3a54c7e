"""TorchScript entry points, with torch 2.13's deprecation warnings silenced *only here*.

TorchScript is deprecated upstream, but it is what our users deploy (C++ libtorch servers), so
unetdsl delivers it on purpose; torch.export and ONNX are offered beside it. These wrappers
silence exactly the `torch.jit.<fn>` is deprecated` DeprecationWarnings for the call they make
and leave every other warning alone.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

_DEPRECATED = r"`torch\.jit\.(script|trace|load|save|freeze)` is deprecated"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATED, category=DeprecationWarning)
        yield


def script(model: nn.Module) -> torch.jit.ScriptModule:
    with _quiet():
        return torch.jit.script(model)


def freeze(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    with _quiet():
        return torch.jit.freeze(module)


def save(module: torch.jit.ScriptModule, path: str | os.PathLike[str], extra_files: dict[str, str]) -> None:
    with _quiet():
        torch.jit.save(module, os.fspath(path), _extra_files=extra_files)


def load(path: str | os.PathLike[str], extra_files: dict[str, Any] | None = None,
         map_location: str | torch.device | None = None) -> torch.jit.ScriptModule:
    """Load a TorchScript file. It is code: only for files unetdsl wrote (or the user trusts)."""
    with _quiet():
        return torch.jit.load(os.fspath(path), map_location=map_location, _extra_files=extra_files)
