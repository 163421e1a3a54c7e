"""Weights in safetensors, loaded strictly: every tensor used, every parameter filled, no
silent cast, no NaN/Inf. Never a pickle.

    load_weights(model, "w.safetensors")   # WeightsError listing the first offenders
    save(model, "m.safetensors")           # weights + resolved spec + version in the metadata
    load("m.safetensors")                  # rebuilds the model from the stored spec
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from . import __version__
from .errors import UnetdslError
from .fsutil import atomic_path

FIRST = 8  # how many offenders an error lists


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class WeightsError(UnetdslError):
    """A weights file that does not fit the model (or is not a readable safetensors file)."""


def _listing(names: list[str]) -> str:
    more = f" ... and {len(names) - FIRST} more" if len(names) > FIRST else ""
    return ", ".join(names[:FIRST]) + more


def read_tensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file, or a WeightsError saying why not."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: no such weights file")
    try:
        with safe_open(str(p), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            # clone: tensors read straight from the file can be unaligned, which sends CPU kernels
            # down other SIMD paths (results then differ from the saved model in the last bits)
            tensors = {k: f.get_tensor(k).clone() for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{p}: not a readable safetensors file ({exc}); truncated or another format? "
                           "unetdsl reads weights only as safetensors, never pickles") from None
    return tensors, metadata


def check_weights(model: nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise WeightsError unless `tensors` fills `model`'s state exactly."""
    state = model.state_dict()
    problems = []
    missing = sorted(set(state) - set(tensors))
    unexpected = sorted(set(tensors) - set(state))
    if missing:
        problems.append(f"missing {len(missing)} tensor(s) the model needs: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) the model has no place for: {_listing(unexpected)}")
    shared = sorted(set(state) & set(tensors))
    shapes = [f"{k} {list(tensors[k].shape)} (model: {list(state[k].shape)})" for k in shared
              if tensors[k].shape != state[k].shape]
    if shapes:
        problems.append(f"{len(shapes)} tensor(s) of the wrong shape: {_listing(shapes)}")
    float_dtypes = sorted({_name(tensors[k].dtype) for k in shared if tensors[k].is_floating_point()})
    kinds = [f"{k} {_name(tensors[k].dtype)} (model: {_name(state[k].dtype)})" for k in shared
             if tensors[k].is_floating_point() != state[k].is_floating_point()]
    if kinds:
        problems.append(f"{len(kinds)} tensor(s) of the wrong kind: {_listing(kinds)}")
    if len(float_dtypes) > 1:
        problems.append(f"mixed floating dtypes {', '.join(float_dtypes)}: save the file in one dtype")
    bad = [k for k in shared if tensors[k].is_floating_point() and not torch.isfinite(tensors[k]).all()]
    if bad:
        problems.append(f"{len(bad)} tensor(s) holding NaN or Inf: {_listing(bad)}")
    if problems:
        raise WeightsError(f"{source} does not fit the model:\n  - " + "\n  - ".join(problems))


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> torch.dtype | None:
    """Fill `model` from a safetensors file, exactly. The model takes the file's floating dtype
    (an explicit, lossless step: the file says what it is); returns that dtype."""
    tensors, _ = read_tensors(path)
    check_weights(model, tensors, str(path))
    dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    dtype = next(iter(dtypes)) if dtypes else None
    if dtype is not None:
        model.to(dtype=dtype)
    model.load_state_dict(tensors, strict=True)
    return dtype


# --- unetdsl's own checkpoint: weights + the spec that builds them ------------------------------
SPEC_KEY, ID_KEY, VERSION_KEY = "unetdsl/spec.json", "unetdsl/spec_id", "unetdsl/version"


def save(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """One safetensors file: the weights, and the resolved spec, spec id and version as metadata."""
    spec = getattr(model, "spec", None)
    if spec is None:
        raise WeightsError("unetdsl.save needs a model made by unetdsl.build_model (it stores model.spec)")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {SPEC_KEY: json.dumps(spec.to_spec_data(), sort_keys=True), ID_KEY: spec.spec_id, VERSION_KEY: __version__}
    target = Path(path)
    with atomic_path(target) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return target


def load(path: str | os.PathLike[str], *, device: torch.device | str | None = None) -> nn.Module:
    """Rebuild a model saved by `save`: its spec from the metadata (validated again), then the
    weights. Returned in eval mode, ready to sample (as diffusers' `from_pretrained`); call
    `.train()` to resume training."""
    from .compiler import build_model

    tensors, metadata = read_tensors(path)
    if SPEC_KEY not in metadata:
        raise WeightsError(f"{path}: no unetdsl spec in its metadata; build the spec and pass the file as weights")
    model = build_model(json.loads(metadata[SPEC_KEY]), device="meta")
    check_weights(model, tensors, str(path))
    model.load_state_dict(tensors, strict=True, assign=True)  # meta params replaced by the file's tensors
    rebuilt = model.spec.spec_id  # type: ignore[union-attr]
    if rebuilt != metadata.get(ID_KEY):
        raise WeightsError(f"{path}: stored spec id {metadata.get(ID_KEY)} != rebuilt {rebuilt}")
    model.eval()
    return model.to(device) if device is not None else model
