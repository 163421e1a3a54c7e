"""Plain data -> Spec, with pydantic's errors turned into located, readable Problems."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from ..errors import Path, Problem, SpecError, brief, describe
from ..positions import Positions
from ..scalars import YAML11_BOOLEANS, resolve_plain
from .models import Spec

# Names other projects use for something in our vocabulary: pointed at, never accepted silently.
SYNONYMS = {
    "positional": "sinusoidal",  # diffusers' time_embedding_type
    "swish": "silu",
    "strided": "conv",
    "stride": "conv",
    "interpolate": "nearest",
    "upconv": "transposed",
    "deconv": "transposed",
    "gn": "group",
    "groupnorm": "group",
    "scale-shift": "scale_shift",
    # cross-attention is a layer of the transformer block (with context_dim), not an attention type
    "cross": "transformer",
    "cross_attention": "transformer",
    "crossattention": "transformer",
    "spatial_transformer": "transformer",
}
# what a pattern-checked string may be, by its pattern (the name of a spec, of a condition)
PATTERNS = {
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$": "letters, digits, '.', '_' and '-' (starting with a letter or digit), "
                                         "at most 64",
    r"^[A-Za-z_][A-Za-z0-9_]{0,63}$": "a Python identifier: letters, digits and '_', not starting with a digit, "
                                      "at most 64",
}


# Keys other codebases use for a setting unetdsl has: (whose name, where it lives in unetdsl).
# An unknown key that is one of these gets the pointer as its hint instead of a bare refusal.
FOREIGN_KEYS: dict[str, tuple[str, str]] = {
    # diffusers UNet2DModel / UNet2DConditionModel / AutoencoderKL config keys
    "block_out_channels": ("diffusers", "one encoder level per entry: encoder.levels[i].channels"),
    "layers_per_block": ("diffusers", "blocks, on each level (the decoder gets one more per skip)"),
    "norm_num_groups": ("diffusers", "norm: {groups: N} under defaults (or a level)"),
    "norm_eps": ("diffusers", "norm: {eps: X} under defaults (or a level)"),
    "act_fn": ("diffusers", "activation, under defaults (or a level)"),
    "attention_head_dim": ("diffusers", "attention: {head_dim: N} on a level: UNet2DModel means channels per "
                                        "head; UNet2DConditionModel means the number of heads, attention: {heads: N}"),
    "num_attention_heads": ("diffusers", "attention: {heads: N} on a level"),
    "down_block_types": ("diffusers", "encoder.levels; a level with attention: {...} is an AttnDownBlock2D"),
    "up_block_types": ("diffusers", "decoder.levels (mirrored from the encoder when omitted)"),
    "time_embedding_type": ("diffusers", "time: {embedding: sinusoidal | fourier | learned}"),
    "resnet_time_scale_shift": ("diffusers", "time: {injection: scale_shift}"),
    "num_class_embeds": ("diffusers", "classes"),
    "downsample_padding": ("diffusers", "encoder: {asymmetric_padding: true} for padding 0"),
    "downsample_type": ("diffusers", "encoder: {downsample: conv | resblock | avgpool | maxpool}"),
    "upsample_type": ("diffusers", "decoder: {upsample: nearest | bilinear | transposed | resblock}"),
    "center_input_sample": ("diffusers", "center_input"),
    "latent_channels": ("diffusers", "out_channels of the encoder (x2 for mean and log-variance), in_channels of "
                                     "the decoder"),
    # guided-diffusion (ADM) flags
    "num_channels": ("guided-diffusion", "encoder.levels[0].channels (one level per channel_mult entry)"),
    "model_channels": ("guided-diffusion", "encoder.levels[0].channels (one level per channel_mult entry); EDM's "
                       "SongUNet stem at model_channels below a wider level 0: stem: {channels: N}"),
    "channel_mult": ("guided-diffusion", "one encoder level per multiplier: encoder.levels[i].channels"),
    "num_res_blocks": ("guided-diffusion / latent-diffusion", "blocks, on each level"),
    "attention_resolutions": ("guided-diffusion", "attention: {...} on the levels at those resolutions"),
    "attn_resolutions": ("latent-diffusion", "attention: {...} on the levels at those resolutions"),
    "num_heads": ("guided-diffusion", "attention: {heads: N} on a level"),
    "num_head_channels": ("guided-diffusion", "attention: {head_dim: N} on a level"),
    "use_scale_shift_norm": ("guided-diffusion", "time: {injection: scale_shift}"),
    "resblock_updown": ("guided-diffusion", "encoder: {downsample: resblock} and decoder: {upsample: resblock}"),
    "learn_sigma": ("guided-diffusion", "out_channels: twice the input channels (mean and variance)"),
    "image_size": ("guided-diffusion", "sample_size"),
    "num_classes": ("guided-diffusion", "classes"),
    "use_fp16": ("guided-diffusion", "unetdsl build --dtype float16 (not part of the spec)"),
    # latent-diffusion / Stable Diffusion first-stage configs
    "ch": ("latent-diffusion", "encoder.levels[0].channels (one level per ch_mult entry)"),
    "ch_mult": ("latent-diffusion", "one encoder level per multiplier: encoder.levels[i].channels"),
    "z_channels": ("latent-diffusion", "out_channels of the encoder (2 x z_channels with double_z), in_channels of "
                                       "the decoder"),
    "double_z": ("latent-diffusion", "out_channels: 2 x z_channels on the encoder"),
    "resolution": ("latent-diffusion", "sample_size"),
    "in_ch": ("latent-diffusion", "in_channels"),
    "out_ch": ("latent-diffusion", "out_channels"),
    "resamp_with_conv": ("latent-diffusion", "encoder: {downsample: conv}, decoder: {upsample: nearest} (+ conv)"),
    # diffusers UNet2DConditionModel (Stable Diffusion, SDXL, DeepFloyd IF)
    "cross_attention_dim": ("diffusers", "context_dim (the width of the context every transformer block "
                                         "cross-attends to)"),
    "transformer_layers_per_block": ("diffusers", "attention: {type: transformer, depth: N} on a level"),
    "use_linear_projection": ("diffusers", "attention: {type: transformer, linear_projection: true} on a level"),
    "addition_embed_type": ("diffusers", "conditions: [{inputs: [{name: text_embeds, width: 1280}, {name: "
                                         "time_ids, width: 6, sinusoid: 256}]}] for SDXL's text_time; "
                                         "conditions: [{pool_context: {heads: 64}}] for DeepFloyd IF's text"),
    "time_embedding_act_fn": ("diffusers", "time: {post_activation: gelu}"),
    "conv_in_kernel": ("diffusers", "stem: {kernel_size: N}"),
    "resnet_out_scale_factor": ("diffusers", "residual_scale: 1 / it (a level setting)"),
    "resnet_skip_time_act": ("diffusers", "time_activation: false (a level setting)"),
    "skip_scale": ("EDM", "residual_scale (a level setting; EDM's sqrt(1/2))"),
    "addition_time_embed_dim": ("diffusers", "conditions[i].inputs[j].sinusoid (the features of each time id)"),
    "projection_class_embeddings_input_dim": ("diffusers", "the widths of a condition group's inputs (conditions)"),
    "class_embed_type": ("diffusers", "conditions: a group of one input named class_labels (project mlp, linear "
                                      "or none; sinusoid for 'timestep')"),
    "encoder_hid_dim": ("diffusers", "context_input_dim: the context's width as given, projected to context_dim "
                                     "(DeepFloyd IF's text projection)"),
    "cross_attention_norm": ("diffusers", "attention: {type: joint, context_norm_groups: 32} (group_norm)"),
}


def validate_data(data: Any, positions: Positions | None = None) -> Spec:
    """Type-check `data` against the language. Raises SpecError with every problem found."""
    try:
        return Spec.model_validate(data, strict=True)
    except ValidationError as exc:
        raise SpecError(problems_from_pydantic(exc, data, positions)) from None


def problems_from_pydantic(exc: ValidationError, data: Any, positions: Positions | None) -> list[Problem]:
    # A union reports one error per member; group by the data path and merge what each allowed.
    grouped: dict[tuple[Path, str], list[dict[str, Any]]] = {}
    for details in exc.errors(include_url=False):
        err: dict[str, Any] = dict(details)
        path = _data_path(err["loc"], data, err["type"])
        if err["type"] == "union_tag_not_found":  # a time section without its `embedding` key
            path, err = (*path, "embedding"), {**err, "type": "missing"}
        kind = "extra" if err["type"] == "extra_forbidden" else "missing" if err["type"] == "missing" else "value"
        grouped.setdefault((path, kind), []).append(err)
    problems = []
    for (path, kind), errs in grouped.items():
        problems.append(_problem(path, kind, errs, data, positions))
    return problems


def _data_path(loc: tuple[Any, ...], data: Any, err_type: str) -> Path:
    """Drop pydantic's union-member labels from `loc`, keeping only keys/indexes of the data."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, (dict, list)) and isinstance(part, (str, int)) and _has(node, part):
            out.append(part)
            node = node[part]  # type: ignore[index]
        elif i == len(loc) - 1 and err_type == "missing" and isinstance(part, str):
            out.append(part)
        # else: a union tag such as 'int' or 'sinusoidal' - not a place in the data
    return tuple(out)


def _allowed(err: dict[str, Any]) -> str | None:
    t, ctx = err["type"], err.get("ctx") or {}
    table = {
        "int_type": "a whole number (no quotes, no decimal point)",
        "int_from_float": "a whole number (no decimal point)",
        "float_type": "a number",
        "bool_type": "true or false",
        "string_type": "a string",
        "model_type": "a mapping of settings",
        "model_attributes_type": "a mapping of settings",
        "dict_type": "a mapping",
        "list_type": "a list",
        "none_required": "null",
        "union_tag_not_found": "a mapping with an 'embedding' key",
        "finite_number": "a finite number",
    }
    if t in table:
        return table[t]
    if t == "literal_error":
        return str(ctx.get("expected", "")).replace("'", "")
    if t == "union_tag_invalid":
        return str(ctx.get("expected_tags", "")).replace("'", "")
    if t == "greater_than_equal":
        return f">= {ctx['ge']}"
    if t == "greater_than":
        return f"> {ctx['gt']}"
    if t == "less_than_equal":
        return f"<= {ctx['le']}"
    if t == "less_than":
        return f"< {ctx['lt']}"
    if t == "too_short":
        return f"at least {ctx.get('min_length')} item(s)"
    if t == "too_long":
        return f"at most {ctx.get('max_length')} item(s)"
    if t == "string_pattern_mismatch":
        return PATTERNS.get(str(ctx.get("pattern")), f"matching {ctx.get('pattern')}")
    if t == "string_too_long":
        return f"at most {ctx.get('max_length')} characters"
    return None


def _problem(path: Path, kind: str, errs: list[dict[str, Any]], data: Any, positions: Positions | None) -> Problem:
    def loc(key: bool = False) -> Any:
        return positions.location(path, key=key) if positions is not None else None

    if kind == "extra":
        key = path[-1] if path else "?"
        allowed_keys = _allowed_keys(path[:-1], data)
        close = difflib.get_close_matches(str(key), allowed_keys, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else None
        if isinstance(key, str) and key in FOREIGN_KEYS and key not in allowed_keys:
            who, where = FOREIGN_KEYS[key]
            owner = f"{who}'" if who.endswith("s") else f"{who}'s"
            hint = f"{key!r} is {owner} name; in unetdsl: {where}"
        if key == "<<":
            hint = "YAML merge keys are not supported; write the settings out, or use `defaults`"
        return Problem(path, f"unknown key {key!r}", allowed=", ".join(allowed_keys) or None, hint=hint,
                       location=loc(key=True))
    if kind == "missing":
        if path[-1] == "embedding":
            return Problem(path, "missing required key 'embedding'", location=loc(key=True),
                           allowed="sinusoidal, fourier, learned")
        return Problem(path, f"missing required key {path[-1]!r}", location=loc(key=True),
                       hint=_field_description(path, data))
    value = errs[0].get("input")
    if errs[0]["type"] in ("union_tag_invalid", "union_tag_not_found") and isinstance(value, dict):
        value = value.get("embedding")  # a time section: the tag it names is the value at fault
        path = (*path, "embedding") if "embedding" in (errs[0].get("input") or {}) else path
    allowed = []
    for e in errs:
        a = _allowed(e)
        if a and a not in allowed:
            allowed.append(a)
    # An int/float pair of union errors reads best as its bound, when one member failed a bound.
    bound = [a for a in allowed if a[:1] in "<>" or a.startswith("at ")]
    use_bound = bound and len(bound) < len(allowed) and not isinstance(value, str)
    allowed_text = " and ".join(bound) if use_bound else " or ".join(allowed)
    hint = None
    if isinstance(value, str) and value in YAML11_BOOLEANS:
        hint = f"{value!r} is a string in YAML 1.2; write true or false"
    elif isinstance(value, str) and _looks_numeric(value):
        hint = f"remove the quotes: {brief(value)[1:-1]}"
    elif isinstance(value, float) and value.is_integer() and any(e["type"].startswith("int_") for e in errs):
        hint = f"write {int(value)}"
    elif isinstance(value, bool) and any(e["type"] in ("int_type", "float_type") for e in errs):
        hint = "booleans are not numbers here"
    elif isinstance(value, str) and value.lower() in SYNONYMS and SYNONYMS[value.lower()] in allowed_text:
        hint = f"unetdsl calls this {SYNONYMS[value.lower()]!r}"
    elif isinstance(value, str) and allowed_text:
        words = allowed_text.replace(" or ", ", ").split(", ")
        close = difflib.get_close_matches(value, words, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else None
    types_seen = {e["type"] for e in errs}
    if types_seen & {"greater_than_equal", "greater_than", "less_than_equal", "less_than"}:
        message = "out of range"
    elif types_seen & {"too_short", "too_long", "string_too_long"}:
        message = "wrong length"
    elif types_seen & {"literal_error", "union_tag_invalid", "string_pattern_mismatch"}:
        message = "not an allowed value"
    else:
        message = "wrong type"
    location = positions.location(path) if positions is not None else None
    return Problem(path, message, found=describe(value), allowed=allowed_text or None, hint=hint, location=location)


def _looks_numeric(text: str) -> bool:
    """Whether `text` written without quotes reads as a number in YAML (so "remove the quotes"
    is advice that works): Python's float() also takes fullwidth digits and '1_0', YAML does not."""
    try:
        value = resolve_plain(text)
    except Exception:  # a YAML trap (ambiguous number, too many digits): no such advice
        return False
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- introspection for "allowed keys" ----------------------------------------------------------
def _models_at(path: Path, data: Any) -> list[type[BaseModel]]:
    """The model classes that could describe the mapping at `path` (several for unions)."""
    current: list[Any] = [Spec]
    node = data
    for part in path:
        nxt: list[Any] = []
        for ann in current:
            for m in _flatten(ann):
                if isinstance(part, int) and get_origin(m) is list:
                    nxt.extend(get_args(m)[:1])
                elif _is_model(m) and isinstance(part, str) and part in m.model_fields:
                    nxt.append(m.model_fields[part].annotation)
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None  # type: ignore[index]
        current = nxt
    models = [m for ann in current for m in _flatten(ann) if isinstance(m, type) and issubclass(m, BaseModel)]
    # a discriminated union: pick the member the data names
    if len(models) > 1 and isinstance(node, dict) and "embedding" in node:
        named = [m for m in models if "embedding" in m.model_fields
                 and node["embedding"] in get_args(m.model_fields["embedding"].annotation)]
        models = named or models
    return models


def _is_model(m: Any) -> bool:
    return isinstance(m, type) and issubclass(m, BaseModel)


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return isinstance(part, str) and part in node
    return isinstance(part, int) and not isinstance(part, bool) and 0 <= part < len(node)


def _flatten(ann: Any) -> list[Any]:
    origin = get_origin(ann)
    if origin is typing.Annotated:
        return _flatten(get_args(ann)[0])
    if origin in (Union, types.UnionType):
        return [x for a in get_args(ann) for x in _flatten(a)]
    return [ann]


def _allowed_keys(path: Path, data: Any) -> list[str]:
    keys: list[str] = []
    for m in _models_at(path, data):
        keys += [k for k in m.model_fields if k not in keys]
    return keys


def _field_description(path: Path, data: Any) -> str | None:
    for m in _models_at(path[:-1], data):
        f = m.model_fields.get(str(path[-1]))
        if f is not None and f.description:
            return f.description
    return None
