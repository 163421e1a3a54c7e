"""Export a built model and prove the written file computes what the eager model computes.

The file is written to a temporary name next to the target, loaded back the way a deployment
would load it, compared with the eager model on the sample input, and only then renamed into
place: a failed check or an interrupted write leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import __version__, torchscript
from .errors import UnetdslError
from .fsutil import atomic_path
from .sample import SampleInputs, sample_inputs
from .spec.resolved import ResolvedSpec


class ExportCheckError(UnetdslError):
    """The exported file does not compute what the eager model computes."""


@dataclass
class ExportReport:
    path: Path
    max_abs_diff: float
    checked_shapes: list[list[int]]


def metadata(spec: ResolvedSpec) -> dict[str, str]:
    """Provenance stored inside every exported file."""
    return {
        "unetdsl/spec.json": json.dumps(spec.to_spec_data(), sort_keys=True),
        "unetdsl/spec_id": spec.spec_id,
        "unetdsl/version": __version__,
        "unetdsl/torch_version": torch.__version__,
    }


def _run(model: nn.Module, inputs: SampleInputs) -> torch.Tensor:
    with torch.inference_mode():
        out: torch.Tensor = model(inputs.x, inputs.t, inputs.y)
        return out


def export_torchscript(model: nn.Module, path: str | os.PathLike[str], *, atol: float = 1e-5) -> ExportReport:
    """Script `model`, write it (with its spec as extra files), reload and compare. Atomic."""
    spec: ResolvedSpec = model.spec  # type: ignore[assignment]
    model.eval()
    scripted = torchscript.script(model)
    inputs = sample_inputs(spec, batch=2)
    expected = _run(model, inputs)
    target = Path(path)
    with atomic_path(target) as tmp:
        torchscript.save(scripted, tmp, metadata(spec))
        loaded = torchscript.load(tmp)
        got = _run(loaded, inputs)
        diff = (got.float() - expected.float()).abs().max().item() if got.shape == expected.shape else float("inf")
        if not diff <= atol:  # also catches NaN
            raise ExportCheckError(
                f"the written TorchScript file disagrees with the eager model: max |diff| {diff:.3g} > {atol:g} "
                f"(shapes {list(got.shape)} vs {list(expected.shape)}); {target} was not written")
    return ExportReport(target, diff, [list(inputs.x.shape)])
