"""The library's entry point for models: any spec source -> a built model; a saved file -> the
model it was saved from.

    model = unetdsl.build_model("specs/ddpm-cifar10.yaml", seed=0)
    model = unetdsl.load("m.safetensors")      # written by unetdsl.save(model, "m.safetensors")

It sits at the end of the pipeline (front end -> resolver -> resource guard -> compiler), so
that no stage imports a later one."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from .compiler import compile_spec, memory_format_for
from .frontend import SpecSource, resolve_spec
from .spec.resolved import ResolvedSpec
from .weights import WeightsError, read_header


def build_model(
    spec: SpecSource,
    *,
    overrides: Sequence[str] = (),
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    memory_format: str = "auto",
    seed: int | None = None,
    check_resources: bool = True,
    weights: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """A path, YAML string, dict, Spec or ResolvedSpec -> the model, with its resolved spec at
    `model.spec`. The spec is fully checked before any tensor is allocated; `device="meta"`
    builds without allocating (parameter counts of huge specs). `memory_format` is the layout
    the 2D/3D body may run in: "channels_last" (oneDNN's faster convolutions, chosen per part by
    input size), "contiguous", or "auto" (default: channels-last for the CPU, contiguous for a
    GPU, where it measured faster); it never changes the numbers' meaning, nor the layout of
    inputs and outputs.

    The model is returned in **training mode**, as every `nn.Module` constructor and diffusers'
    `from_config` return it (dropout active): call `.eval()` before sampling. (`unetdsl.load`,
    which reads trained weights, returns eval mode, as diffusers' `from_pretrained`.)
    `seed` makes the initial weights a function of the seed alone: the same seed gives
    bit-identical weights whatever the global RNG state, and the global RNG is left untouched.
    Without it the weights draw from torch's global RNG, as any `nn.Module` does.

    `check_resources`: first count the parameters on the meta device and raise
    `unetdsl.resources.ResourceError` when the weights cannot fit in the target device's
    available memory (instead of dying in the allocator, or in the OOM killer).

    `weights`: a safetensors file to fill the model from (strictly, as `unetdsl.load_weights`),
    instead of drawing random weights: the model is built on the meta device and its parameters
    become the file's tensors, views of one buffer the file is read into (`unetdsl.weights.materialize`:
    the model owns it; changing or truncating the file afterwards never touches the model),
    in the file's floating dtype unless `dtype` says otherwise. No `seed` then.

    `root`: the folder tree a spec's `extends` may read from (default: the spec file's folder)."""
    resolved, _ = resolve_spec(spec, overrides, root=root)
    target = torch.device(device or "cpu")
    memory_format = memory_format_for(memory_format, target)
    if weights is not None and seed is not None:
        raise ValueError("build_model: pass weights or seed, not both (the weights come from the file)")
    if weights is not None:
        return _from_weights(resolved, weights, target, dtype, memory_format, check_resources)
    if check_resources and target.type != "meta":
        from .resources import check_parameters

        with torch.device("meta"):
            counted = sum(p.numel() for p in compile_spec(resolved).parameters())
        check_parameters(counted, dtype=dtype or torch.float32, device=target)
    # fork the RNG of the device the weights are drawn on, so `seed` leaves the caller's RNG as it was
    forked = [target.index if target.index is not None else torch.cuda.current_device()] if target.type == "cuda" else []
    with torch.random.fork_rng(devices=forked, enabled=seed is not None), target:
        if seed is not None:
            torch.manual_seed(seed)
        model = compile_spec(resolved, memory_format=memory_format)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model.train()


def _from_weights(resolved: ResolvedSpec, weights: str | os.PathLike[str], target: torch.device,
                  dtype: torch.dtype | None, memory_format: str, check_resources: bool) -> nn.Module:
    """Built on meta (no allocation, no random draw), then filled from the file (one read, no copy after)."""
    from .weights import materialize

    with torch.device("meta"):
        model = compile_spec(resolved, memory_format=memory_format)
    if check_resources and target.type not in ("meta", "cpu"):  # on the CPU the read buffer is the weights
        from .resources import check_parameters

        check_parameters(sum(p.numel() for p in model.parameters()), dtype=dtype or torch.float32, device=target)
    materialize(model, weights, memory_format=memory_format)
    if target.type != "cpu" or dtype is not None:
        model = model.to(device=target, dtype=dtype)
    return model.train()


def load(path: str | os.PathLike[str], *, device: torch.device | str | None = None) -> nn.Module:
    """Rebuild a model saved by `unetdsl.save`: the resolved spec it stores (validated: every rule
    of the language, and its id; never read through the YAML front end, so a file cannot make
    unetdsl read another), then the weights. Returned in eval mode, ready to sample (as diffusers'
    `from_pretrained`); call `.train()` to resume training. The file is data: its header is
    checked against the model before any tensor is read."""
    from .provenance import ID_KEY, SPEC_KEY, StoredSpecError, resolved_from_stored

    _, metadata = read_header(path)
    try:
        resolved = resolved_from_stored(metadata.get(SPEC_KEY), metadata.get(ID_KEY))
    except StoredSpecError as exc:
        hint = "; build the spec and pass the file as weights" if SPEC_KEY not in metadata else ""
        raise WeightsError(f"{path}: {exc}{hint}") from None
    # built on meta and filled from the file in place, in the layout of the target device
    return build_model(resolved, device=device, weights=path).eval()


def controlnet_from_unet(unet: nn.Module, *, hint_channels: int = 3, embedding: Sequence[int] = (16, 32, 96, 256),
                         name: str | None = None, seed: int | None = None) -> nn.Module:
    """A ControlNet for the unetdsl U-Net `unet`, as diffusers' `ControlNetModel.from_unet` makes
    one (the usual start of training): the U-Net's spec with `model: controlnet` and the hint
    embedding's `hint_channels` and stage widths `embedding`; its stem, time embedding (with its
    conditions), encoder and middle copied from `unet`; the hint embedding drawn (from `seed`),
    its last conv and every zero conv zero, so that the pair computes what `unet` alone does.
    On the device and in the dtype and train/eval mode of `unet`."""
    from .errors import InternalError

    spec: ResolvedSpec | None = getattr(unet, "spec", None)
    if spec is None or spec.model != "unet":
        raise ValueError("controlnet_from_unet takes a U-Net built by unetdsl (model: unet)")
    view = spec.view() | {"model": "controlnet", "name": name or f"{spec.name[:53]}-controlnet",
                          "controlnet": {"hint_channels": hint_channels, "embedding": list(embedding)}}
    param = next(unet.parameters())
    model = build_model(view, device=param.device, dtype=param.dtype, seed=seed)
    own = model.state_dict()
    trunk = {k: v for k, v in unet.state_dict().items() if k in own}  # stem, time embedding, encoder, middle
    added = set(own) - set(trunk)
    if any(not k.startswith("controlnet_") for k in added):  # the trunk is the U-Net's by construction
        raise InternalError(f"a ControlNet's trunk differs from its U-Net's: {sorted(added)[:3]}")
    model.load_state_dict(trunk, strict=False)
    return model.train(unet.training)
