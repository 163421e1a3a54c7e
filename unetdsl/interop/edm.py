"""NVlabs/edm's SongUNet (DDPM++ with the standard encoder and decoder) and DhariwalUNet (ADM)
state dicts -> unetdsl names.

EDM names a part by its resolution: `enc.<R>x<R>_conv` (the stem), `enc.<R>x<R>_block<i>`,
`enc.<R>x<R>_down`, `dec.<R>x<R>_in0` / `_in1` (the middle), `dec.<R>x<R>_block<i>`, `dec.<R>x<R>_up`,
`dec.<R>x<R>_aux_norm` / `_aux_conv` (SongUNet's head; DhariwalUNet's is `out_norm` / `out_conv`);
`map_layer0` / `map_layer1` the time MLP, `map_label` / `map_augment` the label and augmentation
vectors (onto the condition groups taking class_labels / augment_labels). Inside a
block (UNetBlock): norm0, conv0, affine (the time projection), norm1, conv1, skip (the shortcut),
and for attention norm2, qkv, proj. A level's `_down` block is the downsample ending the level above
it (unetdsl's level i ends in what EDM puts at the start of level i + 1), a decoder's `_up` likewise.

EDM's qkv is one 1x1 convolution whose 3C outputs interleave q, k and v per head
(index = head * 3 * (C / heads) + c * 3 + j); it is split into unetdsl's to_q / to_k / to_v linear
layers. The resampling filters (buffers `resample_filter`) must be the spec's `resample_filter` at
that level (the box [1, 1]: average pooling and nearest upsampling; [1, 3, 3, 1]: FIR).
See docs/interop.md for the spec that matches a SongUNet config."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..errors import UnetdslError
from ..spec.resolved import ResolvedSpec

BLOCK = {"norm0": "norm1", "conv0": "conv1", "affine": "time_emb_proj", "norm1": "norm2", "conv1": "conv2",
         "skip": "conv_shortcut"}
ATTENTION = {"norm2": "group_norm", "proj": "to_out"}
PART = re.compile(r"^(enc|dec)\.(\d+)x(\d+)_([a-z_]+?)(\d*)\.(.+)$")


class EdmWeightsError(UnetdslError):
    """A state dict that is not the SongUNet of this spec."""


def map_edm(state: Mapping[str, torch.Tensor], spec: ResolvedSpec) -> dict[str, torch.Tensor]:
    """An EDM SongUNet (DDPM++, standard encoder and decoder) or DhariwalUNet (ADM) state dict under
    unetdsl's names for `spec`."""
    if state and all(k.startswith("model.") for k in state):  # EDM's EDMPrecond / VPPrecond / VEPrecond around it
        if spec.preconditioning is None:
            raise EdmWeightsError("the state dict is a preconditioned network's (every key under 'model.', EDM's "
                                  "EDMPrecond, VPPrecond or VEPrecond): give the spec the same preconditioning "
                                  "(preconditioning: {type: edm | vp | ve})")
        state = {k.removeprefix("model."): v for k, v in state.items()}
    sides = {side: sorted({int(m.group(2)) for k in state if (m := PART.match(k)) and m.group(1) == side},
                          reverse=True) for side in ("enc", "dec")}
    enc_level = {r: i for i, r in enumerate(sides["enc"])}
    dec_level = {r: k for k, r in enumerate(sorted(sides["dec"]))}  # lowest resolution first
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for name, ours in (("map_layer0.", "time_embedding.linear_1."), ("map_layer1.", "time_embedding.linear_2."),
                           ("map_noise.freqs", "time_embedding.time_proj.weight"),
                           ("map_label.", _group(spec, "class_labels")), ("map_augment.", _group(spec, "augment_labels")),
                           ("out_norm.", "head.norm."), ("out_conv.", "head.conv.")):
            if key.startswith(name):
                out[ours + key[len(name):]] = value
        m = PART.match(key)
        if m is None:
            continue
        side, res, part, index, rest = m.group(1), int(m.group(2)), m.group(4), m.group(5), m.group(6)
        if side == "enc":
            level = enc_level[res]
            # the input pyramid joins after the downsample ending the level above (unetdsl's level - 1)
            prefix = {"conv": "conv_in", "block": f"encoder.{level}", "down": f"encoder.{level - 1}.downsample.block",
                      "aux_residual": f"encoder.{level - 1}.pyramid.conv", "aux_skip": f"encoder.{level - 1}.pyramid.conv",
                      "aux_down": ""}
            pyramid = {"aux_residual": "residual", "aux_skip": "skip", "aux_down": "skip"}
        else:
            level = dec_level[res]
            # the output pyramid: a head at every level; the top level's is the model's head
            head = "head" if level == len(spec.decoder) - 1 else f"decoder.{level}.pyramid.head"
            prefix = {"in": "middle", "block": f"decoder.{level}", "up": f"decoder.{level - 1}.upsample.block",
                      "aux_norm": f"{head}.norm", "aux_conv": f"{head}.conv", "aux_up": ""}
            pyramid = {"aux_up": "skip", **({"aux_norm": "skip", "aux_conv": "skip"} if head != "head" else {})}
        if part not in prefix:
            raise EdmWeightsError(f"{key}: {part!r} is not a part of a SongUNet's {'encoder' if side == 'enc' else 'decoder'}")
        _check_pyramid(key, part, pyramid.get(part), spec, side)
        if rest.endswith("resample_filter"):  # the resampling level's filter, which the spec states
            resampled = part in ("down", "up", "aux_residual", "aux_down", "aux_skip", "aux_up")
            owner = (spec.encoder if side == "enc" else spec.decoder)[level - 1 if resampled else level]
            _check_filter(key, value, owner.resample_filter)
            continue
        if part in ("conv", "aux_norm", "aux_conv", "aux_residual", "aux_skip"):
            out[f"{prefix[part]}.{rest}"] = value
            continue
        block = f"{prefix[part]}.resnets.{index}" if part in ("block", "in") else prefix[part]
        attention = f"{prefix[part]}.attentions.{index}"
        layer, _, param = rest.partition(".")
        if layer in BLOCK:
            out[f"{block}.{BLOCK[layer]}.{param}"] = value
        elif layer in ATTENTION:
            out[f"{attention}.{ATTENTION[layer]}.{param}"] = value.flatten(1) if value.dim() == 4 else value
        elif layer == "qkv":
            heads = _heads(spec, side, level, part)
            c = value.shape[0] // 3
            split = value.reshape(heads, c // heads, 3, *value.shape[1:])  # (head, channel, q|k|v, ...)
            for j, name in enumerate(("to_q", "to_k", "to_v")):
                w = split[:, :, j].reshape(c, *value.shape[1:])
                out[f"{attention}.{name}.{param}"] = w.flatten(1) if w.dim() == 4 else w
        else:
            raise EdmWeightsError(f"{key}: {layer!r} is not a layer of a SongUNet block")
    return out


def _check_pyramid(key: str, part: str, kind: str | None, spec: ResolvedSpec, side: str) -> None:
    """A pyramid's weights where the spec has that pyramid (EDM's encoder_type / decoder_type)."""
    if kind is None:
        return
    have = spec.input_pyramid if side == "enc" else spec.output_pyramid
    if have != kind:
        setting = "encoder.input_pyramid" if side == "enc" else "decoder.output_pyramid"
        raise EdmWeightsError(f"{key}: {part!r} belongs to a {'progressive' if side == 'dec' else kind} "
                              f"{'decoder' if side == 'dec' else 'encoder'}, and the spec's {setting} is {have!r}: "
                              f"set it to {kind!r}")


def _group(spec: ResolvedSpec, name: str) -> str:
    """The prefix of the condition group taking the input `name` (EDM's map_label: class_labels,
    map_augment: augment_labels), or a name no key maps to where the spec has none."""
    for g, group in enumerate(spec.conditions):
        if any(i.name == name for i in group.inputs):
            return f"time_embedding.conditions.groups.{g}.project."
    return f"<no condition group takes {name}>."


def _heads(spec: ResolvedSpec, side: str, level: int, part: str) -> int:
    place = spec.middle if part == "in" else (spec.encoder if side == "enc" else spec.decoder)[level]
    if place.attention is None:
        raise EdmWeightsError(f"the spec has no attention at {side} level {level}, and the weights do")
    return place.attention.heads


def _check_filter(key: str, value: torch.Tensor, taps: list[float]) -> None:
    """EDM's buffer (the normalised outer product of its 1-D filter) against the spec's filter."""
    f = torch.tensor(taps, dtype=torch.float64)
    want = (f[:, None] * f[None, :] / f.sum() ** 2)[None, None]
    if value.shape != want.shape or not torch.allclose(value.double(), want, rtol=0, atol=1e-7):
        raise EdmWeightsError(f"{key}: resample filter {value.flatten().tolist()} is not the outer product of the "
                              f"spec's resample_filter {taps} at this level: set resample_filter to EDM's")
