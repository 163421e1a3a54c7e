"""diffusers UNet2DModel <-> unetdsl: configs become validated specs, weights map over exactly.

    spec_from_diffusers(config)  -> Spec        (a dict, a config.json path, or `unet.config`)
    from_diffusers(unet)         -> unetdsl model with the UNet2DModel's weights (strict)
    to_diffusers(model)          -> UNet2DModel with the unetdsl model's weights (strict)
    convert_pretrained(dir, ...) -> spec.yaml + weights.safetensors from a save_pretrained folder

Every key of the config is either represented or refused with a SpecError naming it (diffusers
itself warns and ignores unknown keys). Weight names differ only in their prefixes (unetdsl's
modules follow diffusers' names inside the blocks), so the mapping is a short list of renames.
diffusers is imported only where a live UNet2DModel is made (`to_diffusers`).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InternalError, Location, Problem, SpecError, describe
from ..frontend import load_spec, resolve_spec
from ..loader import load_file
from ..positions import Positions
from ..resolve import resolve
from ..schema import schema_line
from ..spec.models import Spec
from ..spec.resolved import ResolvedLevel, ResolvedMiddle, ResolvedSpec
from . import diffusers_autoencoder as autoencoder
from . import diffusers_condition as condition
from . import diffusers_controlnet as controlnet
from .config_types import proven
from .diffusers_names import ACTIVATIONS, FOURIER_SCALE, INJECTIONS, TIME_EMBEDDINGS, WRITTEN_ACTIVATIONS

SOURCE = "diffusers config"

# the model classes a config may name (its `_class_name`)
CLASSES = ("UNet2DModel", "UNet2DConditionModel", "AutoencoderKL", "ControlNetModel")

# config keys that describe the file, not the model
# classes people convert that unetdsl does not yet, with what they are
NOT_YET = {
    "UNet1DModel": "diffusers' 1D U-Net (Dance Diffusion) has its own block vocabulary, not yet converted",
    "UNet3DConditionModel": "video U-Nets with temporal layers are not yet in unetdsl's language",
}
METADATA_KEYS = {"_class_name", "_diffusers_version", "_name_or_path", "_use_default_values"}

# every UNet2DModel.__init__ argument, with its default (diffusers 0.2x-0.4x)
DEFAULTS: dict[str, Any] = {
    "sample_size": None, "in_channels": 3, "out_channels": 3, "center_input_sample": False,
    "time_embedding_type": "positional", "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": True,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (224, 448, 672, 896), "layers_per_block": 2, "mid_block_scale_factor": 1,
    "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": 0.0, "act_fn": "silu",
    "attention_head_dim": 8, "norm_num_groups": 32, "attn_norm_num_groups": None, "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None, "num_class_embeds": None,
    "num_train_timesteps": None,
}

# block type -> (has attention, how it resamples: None = by downsample_type/upsample_type)
DOWN_BLOCKS: dict[str, tuple[bool, str | None]] = {
    "DownBlock2D": (False, "conv"), "AttnDownBlock2D": (True, None), "ResnetDownsampleBlock2D": (False, "resblock"),
}
UP_BLOCKS: dict[str, tuple[bool, str | None]] = {
    "UpBlock2D": (False, "nearest"), "AttnUpBlock2D": (True, None), "ResnetUpsampleBlock2D": (False, "resblock"),
}
DOWNSAMPLE_TYPES = {"conv": "conv", "resnet": "resblock"}
UPSAMPLE_TYPES = {"conv": "nearest", "resnet": "resblock"}


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_number(v: Any) -> bool:
    return type(v) in (int, float)


def _list_of(check: Callable[[Any], bool], most: int = 8) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (list, tuple)) and 1 <= len(v) <= most and all(check(x) for x in v)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


# the JSON type every known key must have, checked before any rule reads it: (check, what is allowed)
KEY_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "sample_size": (_optional(lambda v: _is_int(v) or _list_of(_is_int, 3)(v)), "null, an int, or a list of ints"),
    "in_channels": (_is_int, "an int"), "out_channels": (_is_int, "an int"),
    "center_input_sample": (_is_bool, "true or false"), "time_embedding_type": (_is_str, "a string"),
    "time_embedding_dim": (_optional(_is_int), "null or an int"), "freq_shift": (_is_number, "a number"),
    "flip_sin_to_cos": (_is_bool, "true or false"), "down_block_types": (_list_of(_is_str), "a list of 1 to 8 names"),
    "mid_block_type": (_optional(_is_str), "null or a name"), "up_block_types": (_list_of(_is_str), "a list of 1 to 8 names"),
    "block_out_channels": (_list_of(_is_int), "a list of 1 to 8 ints"),
    "layers_per_block": (lambda v: _is_int(v) or _list_of(_is_int)(v), "an int"),
    "mid_block_scale_factor": (_is_number, "a number"), "downsample_padding": (_is_int, "an int"),
    "downsample_type": (_is_str, "a string"), "upsample_type": (_is_str, "a string"), "dropout": (_is_number, "a number"),
    "act_fn": (_is_str, "a string"), "attention_head_dim": (_optional(_is_int), "null or an int"),
    "norm_num_groups": (_is_int, "an int"), "attn_norm_num_groups": (_optional(_is_int), "null or an int"),
    "norm_eps": (_is_number, "a number"), "resnet_time_scale_shift": (_is_str, "a string"),
    "add_attention": (_is_bool, "true or false"), "class_embed_type": (_optional(_is_str), "null or a name"),
    "num_class_embeds": (_optional(_is_int), "null or an int"), "num_train_timesteps": (_optional(_is_int), "null or an int"),
}


def _read_config(config: Mapping[str, Any] | str | os.PathLike[str]) -> tuple[dict[str, Any], str, Positions | None]:
    """The config as data, with the positions of its keys when it came from a file. A config.json
    is read by unetdsl's YAML loader (JSON is YAML 1.2): the same limits on size, depth, numbers
    and bytes, duplicate keys refused, every problem at its line and column."""
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise SpecError.single((), f"no diffusers config at {path}", location=Location(str(path), 1, 1))
        try:
            loaded = load_file(str(path))
        except SpecError as exc:  # not yet known to be a config: where, never the file's text
            raise SpecError([replace(p, location=replace(p.location, text=None)) if p.location else p
                             for p in exc.problems]) from None
        data, source, positions = loaded.data, str(path), loaded.positions
        # a config.json that is a symlink out of its folder (the Hugging Face cache's blobs/) must show it
        # is a diffusers model config before any of it is quoted: a link to another JSON file is refused
        real, folder = os.path.realpath(path), os.path.realpath(path.parent)
        if os.path.commonpath([real, folder]) != folder and not (
                isinstance(data, dict) and data.get("_class_name") in CLASSES):
            raise SpecError.single((), "a link to a file that is not a diffusers model config (it names no "
                                   f"_class_name of {', '.join(CLASSES)})", location=Location(str(path), 1, 1),
                                   hint="point convert at the folder save_pretrained wrote")
    elif isinstance(config, Mapping):
        data, source, positions = dict(config), SOURCE, None
    else:
        raise SpecError.single((), "a diffusers config is a mapping, a config.json path or a folder",
                               found=describe(config))
    if not isinstance(data, dict):
        raise SpecError([Problem((), "a diffusers config is a JSON object of settings", found=describe(data),
                                 location=positions.location(()) if positions else Location(source, 1, 1))])
    return data, source, positions


def spec_from_diffusers(config: Mapping[str, Any] | str | os.PathLike[str], *, name: str | None = None,
                        time_ids: int = condition.TIME_IDS) -> Spec:
    """A UNet2DModel, UNet2DConditionModel or AutoencoderKL config -> a validated Spec. Refuses,
    naming the key, anything unetdsl would not compute identically; every problem is located in the
    config (config.json:line:col). `time_ids`: how many SDXL micro-conditioning values a
    `text_time` model takes (6 for SDXL base, 5 for the refiner; the config does not say)."""
    raw, source, positions = _read_config(config)
    problems: list[Problem] = []

    def where(path: tuple[str | int, ...]) -> Location | None:
        return positions.location(path) if positions is not None else Location(source, 1, 1)

    def refuse(key: str, value: Any, why: str, allowed: str | None = None) -> None:
        path: tuple[str | int, ...] = tuple(int(p) if p.isdigit() else p for p in key.split("."))
        problems.append(Problem(path, f"{why}", found=describe(value), allowed=allowed, location=where(path)))

    cls = raw.get("_class_name", "UNet2DModel")
    if cls == "AutoencoderKL":
        for key in raw:
            if key not in autoencoder.DEFAULTS and key not in METADATA_KEYS:
                refuse(key, raw[key], f"unknown AutoencoderKL config key {key!r}: refusing rather than ignoring it")
        ae = autoencoder.autoencoder_data(raw, lambda k, v, why, allowed: refuse(k, v, why, allowed), ACTIVATIONS,
                                          name or _name(raw))
        if problems or ae is None:
            raise SpecError(problems)
        return _checked(ae, len(ae["encoder"]["levels"]), where, autoencoder.config_path)
    if cls in ("UNet2DConditionModel", "ControlNetModel"):
        def pick_in(c: dict[str, Any], key: str, table: Mapping[str, Any]) -> Any:
            if c[key] not in table:
                refuse(key, c[key], f"{key} {c[key]!r} has no unetdsl equivalent", ", ".join(map(str, table)))
                return next(iter(table.values()))
            return table[c[key]]

        known = controlnet.DEFAULTS if cls == "ControlNetModel" else condition.DEFAULTS
        for key in raw:
            if key not in known and key not in METADATA_KEYS:
                refuse(key, raw[key], f"unknown {cls} config key {key!r}: refusing rather than ignoring it")

        def unet_data(c: dict[str, Any]) -> dict[str, Any] | None:
            def told(k: str, v: Any, why: str, allowed: str | None) -> None:
                # a ControlNet's up blocks and output channels are the controlled U-Net's, derived from its down
                # blocks and input channels: a problem there is said of those
                top = k.split(".")[0]
                if cls == "UNet2DConditionModel" or top in raw or top not in ("up_block_types", "out_channels"):
                    refuse(k, v, why, allowed)
            return condition.condition_data(c, told, pick_in, {"injections": INJECTIONS, "activations": ACTIVATIONS},
                                            name or _name(raw), time_ids)

        cond = (controlnet.controlnet_data(raw, refuse, unet_data, name or _name(raw)) if cls == "ControlNetModel"
                else unet_data(raw))
        if problems or cond is None:
            raise SpecError(problems)
        return _checked(cond, len(cond["encoder"]["levels"]), where, condition.config_path)

    if not isinstance(cls, str) or cls != "UNet2DModel":  # the class first: its keys mean nothing to another's rules
        named = repr(cls) if isinstance(cls, str) else describe(cls)
        refuse("_class_name", cls, f"{named} is not a class unetdsl converts "
               f"({NOT_YET.get(cls, 'its keys would be read as another class') if isinstance(cls, str) else 'not a name'})",
               ", ".join(CLASSES))
        raise SpecError(problems)
    for key, (check, allowed) in KEY_TYPES.items():
        if key in raw and not check(raw[key]):
            refuse(key, raw[key], "wrong type", allowed)
    if problems:
        raise SpecError(problems)
    for key in raw:
        if key not in DEFAULTS and key not in METADATA_KEYS:
            refuse(key, raw[key], f"unknown UNet2DModel config key {key!r}: refusing rather than ignoring it")
    c = {**DEFAULTS, **{k: v for k, v in raw.items() if k in DEFAULTS}}

    def pick(key: str, table: Mapping[str, Any]) -> Any:
        value = c[key]
        if value not in table:
            refuse(key, value, f"{key} {value!r} has no unetdsl equivalent", ", ".join(map(str, table)))
            return next(iter(table.values()))
        return table[value]

    channels = list(c["block_out_channels"])
    downs, ups = list(c["down_block_types"]), list(c["up_block_types"])
    if len(downs) != len(channels) or len(ups) != len(channels):
        refuse("down_block_types", downs, "down_block_types, up_block_types and block_out_channels differ in length")
        raise SpecError(problems)
    if not _is_int(c["layers_per_block"]):  # refused, then read as the default so the other problems still show
        refuse("layers_per_block", c["layers_per_block"], "one layers_per_block for all levels is supported "
               "(diffusers' UNet2DModel takes an int)", "an int")
        c["layers_per_block"] = DEFAULTS["layers_per_block"]
    if c["mid_block_scale_factor"] != 1:
        refuse("mid_block_scale_factor", c["mid_block_scale_factor"], "mid_block_scale_factor other than 1 is not supported", "1")
    if c["downsample_padding"] not in (0, 1):
        refuse("downsample_padding", c["downsample_padding"], "only 1 (symmetric) or 0 (right/bottom) padding", "0, 1")
    if c["attn_norm_num_groups"] not in (None, c["norm_num_groups"]):
        refuse("attn_norm_num_groups", c["attn_norm_num_groups"],
               "a separate group count for the middle attention is not supported", f"null or {c['norm_num_groups']}")
    if c["class_embed_type"] is not None:
        refuse("class_embed_type", c["class_embed_type"], "only the plain class-label table is supported",
               "null (with num_class_embeds)")
    if c["mid_block_type"] not in ("UNetMidBlock2D", None):
        refuse("mid_block_type", c["mid_block_type"], "unsupported middle block", "UNetMidBlock2D, null")

    embedding = pick("time_embedding_type", TIME_EMBEDDINGS)
    injection = pick("resnet_time_scale_shift", INJECTIONS)
    activation = pick("act_fn", ACTIVATIONS)
    head_dim = c["attention_head_dim"]

    def attention(ch: int) -> dict[str, Any]:
        return {"head_dim": head_dim if head_dim is not None else ch}

    levels = []
    for i, (block, ch) in enumerate(zip(downs, channels, strict=True)):
        if block not in DOWN_BLOCKS:
            refuse(f"down_block_types.{i}", block, "unsupported down block", ", ".join(DOWN_BLOCKS))
            continue
        has_attn, method = DOWN_BLOCKS[block]
        level: dict[str, Any] = {"channels": ch, "blocks": c["layers_per_block"]}
        if has_attn:
            level["attention"] = attention(ch)
        if i < len(channels) - 1:
            level["downsample"] = method or pick("downsample_type", DOWNSAMPLE_TYPES)
        levels.append(level)
    dec_levels = []
    for k, (block, ch) in enumerate(zip(ups, reversed(channels), strict=True)):
        if block not in UP_BLOCKS:
            refuse(f"up_block_types.{k}", block, "unsupported up block", ", ".join(UP_BLOCKS))
            continue
        has_attn, method = UP_BLOCKS[block]
        level = {"channels": ch, "blocks": c["layers_per_block"] + 1}
        if has_attn:
            level["attention"] = attention(ch)
        if k < len(channels) - 1:
            level["upsample"] = method or pick("upsample_type", UPSAMPLE_TYPES)
        dec_levels.append(level)

    first = channels[0]
    time: dict[str, Any] = {"embedding": embedding, "injection": injection}
    if c["time_embedding_dim"] is not None:
        time["dim"] = c["time_embedding_dim"]
    if embedding == "sinusoidal":
        time |= {"features": first, "flip_sin_to_cos": c["flip_sin_to_cos"], "freq_shift": c["freq_shift"]}
    elif embedding == "fourier":
        time |= {"features": 2 * first, "scale": FOURIER_SCALE, "log": True, "flip_sin_to_cos": False}
    else:
        if c["num_train_timesteps"] is None:
            refuse("num_train_timesteps", None, "a learned time embedding needs num_train_timesteps", "an int")
        time |= {"features": first, "timesteps": c["num_train_timesteps"] or 1}

    factor = 2 ** (len(channels) - 1)
    size = c["sample_size"]
    data: dict[str, Any] = {
        "unetdsl": 1,
        "name": name or _name(raw),
        "description": f"converted from a diffusers UNet2DModel config ({raw.get('_diffusers_version', '?')})",
        "model": "unet",
        "dims": 2,
        "in_channels": c["in_channels"],
        "out_channels": c["out_channels"],
        "sample_size": list(size) if isinstance(size, (list, tuple)) else (size if size is not None else 4 * factor),
        "time": time,
        "defaults": {"norm": {"type": "group", "groups": c["norm_num_groups"], "eps": float(c["norm_eps"])},
                     "activation": activation, "order": "pre", "dropout": float(c["dropout"])},
        "encoder": {"levels": levels},
        "middle": {"blocks": 2 if c["mid_block_type"] else 0},
        "decoder": {"levels": dec_levels},
        "head": {"norm": True, "kernel_size": 3, "activation": "silu"},  # UNet2DModel's conv_act is always SiLU
    }
    data["encoder"]["asymmetric_padding"] = c["downsample_padding"] == 0  # stated: either is someone's default
    if c["mid_block_type"] and c["add_attention"]:
        # UNetMidBlock2D gives its attention no norm under scale_shift unless attn_norm_num_groups is set
        norm = injection == "add" or c["attn_norm_num_groups"] is not None
        data["middle"]["attention"] = {"head_dim": head_dim if head_dim is not None else channels[-1], "norm": norm}
    if c["num_class_embeds"] is not None:
        data["classes"] = c["num_class_embeds"]
    if c["center_input_sample"]:
        data["center_input"] = True
    if embedding == "fourier":
        data["head"]["divide_by_timestep"] = True  # UNet2DModel divides a fourier model's output by sigma
    if problems:
        raise SpecError(problems)
    return _checked(data, len(channels), where)


def _checked(data: dict[str, Any], levels: int, where: Callable[[tuple[str | int, ...]], Location | None],
             extra_paths: Callable[[tuple[str | int, ...], int], tuple[str | int, ...] | None] | None = None) -> Spec:
    """The converted data as a Spec, every rule checked (the cross-field ones too), each problem
    reported at the config key it came from."""
    try:
        spec = load_spec(data).spec
        resolve(spec)  # the cross-field rules too, so that they are reported here, in the config's terms
    except SpecError as exc:
        raise SpecError([_in_config_terms(p, levels, where, extra_paths) for p in exc.problems]) from None
    return spec


def _config_path(path: tuple[str | int, ...], levels: int) -> tuple[str | int, ...] | None:
    """The config key a setting of the converted spec came from (None where no one key did)."""
    head = path[:1]
    simple = {("in_channels",): "in_channels", ("out_channels",): "out_channels", ("sample_size",): "sample_size",
              ("classes",): "num_class_embeds", ("center_input",): "center_input_sample"}
    if head in simple:
        return (simple[head],)
    if path[:1] == ("time",):
        return {"dim": ("time_embedding_dim",), "freq_shift": ("freq_shift",), "flip_sin_to_cos": ("flip_sin_to_cos",),
                "timesteps": ("num_train_timesteps",)}.get(str(path[1]) if len(path) > 1 else "", ("time_embedding_type",))
    if path[:2] == ("defaults", "norm"):
        return ("norm_eps",) if path[2:3] == ("eps",) else ("norm_num_groups",)
    if path[:2] == ("defaults", "dropout"):
        return ("dropout",)
    if path[:2] == ("defaults", "activation"):
        return ("act_fn",)
    if len(path) >= 4 and path[0] in ("encoder", "decoder") and path[1] == "levels" and isinstance(path[2], int):
        i = path[2] if path[0] == "encoder" else levels - 1 - path[2]
        return {"channels": ("block_out_channels", i), "blocks": ("layers_per_block",),
                "attention": ("attention_head_dim",)}.get(str(path[3]))
    if path[:2] == ("middle", "attention"):
        return ("attention_head_dim",)
    return None


def _in_config_terms(p: Problem, levels: int, where: Callable[[tuple[str | int, ...]], Location | None],
                     extra_paths: Callable[[tuple[str | int, ...], int], tuple[str | int, ...] | None] | None = None,
                     ) -> Problem:
    key = (extra_paths(p.path, levels) if extra_paths else None) or _config_path(p.path, levels)
    if key is None:
        return replace(p, message=f"in the converted spec, {p.dotted_path}: {p.message}")
    return replace(p, path=key, message=f"{p.message} (as converted to the spec's {p.dotted_path})", location=where(key))


def _name(raw: Mapping[str, Any]) -> str:
    base = Path(str(raw.get("_name_or_path") or "diffusers-unet2d")).name
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", base).strip("-.") or "diffusers-unet2d"
    return cleaned[:64]


# --- weights --------------------------------------------------------------------------------------
_RENAMES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r) for p, r in [
        (r"^down_blocks\.(\d+)\.downsamplers\.0\.conv\.", r"encoder.\1.downsample.conv."),
        (r"^down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.\1.downsample.block."),
        (r"^down_blocks\.", "encoder."),
        (r"^up_blocks\.(\d+)\.upsamplers\.0\.conv\.", r"decoder.\1.upsample.conv."),
        (r"^up_blocks\.(\d+)\.upsamplers\.0\.", r"decoder.\1.upsample.block."),
        (r"^up_blocks\.", "decoder."),
        (r"^mid_block\.", "middle."),
        (r"\.to_out\.0\.", ".to_out."),
        (r"^class_embedding\.", "time_embedding.class_embedding."),
        (r"^conv_norm_out\.", "head.norm."),
        (r"^conv_out\.", "head.conv."),
    ]
]


def unetdsl_key(key: str, spec: ResolvedSpec) -> str:
    """A diffusers UNet2DModel / UNet2DConditionModel / AutoencoderKL state-dict key -> the unetdsl
    key of the same tensor. An autoencoder's halves are named as a U-Net's parts, under
    `encoder.`/`decoder.`; its quant convs belong to the half they sit next to."""
    if spec.model == "autoencoder":
        if key.startswith(("quant_conv.", "post_quant_conv.")):
            return ("encoder." if key.startswith("quant_conv.") else "decoder.") + key
        half, _, rest = key.partition(".")
        for pattern, repl in _RENAMES:
            rest = pattern.sub(repl, rest)
        return f"{half}.{rest}"
    for prefix, group in condition.condition_prefixes(spec).items():  # class_embedding / add_embedding
        if key.startswith(prefix):
            return f"time_embedding.conditions.groups.{group}.project.{key[len(prefix):]}"
    if key == "time_proj.weight":  # GaussianFourierProjection.weight, or the learned nn.Embedding
        assert spec.time is not None
        return "time_embedding.time_proj.table.weight" if spec.time.embedding == "learned" else "time_embedding.time_proj.weight"
    for pattern, repl in _RENAMES:
        key = pattern.sub(repl, key)
    return key


def map_names(names: Iterable[str], spec: ResolvedSpec, source: str = "the diffusers weights") -> dict[str, str]:
    """unetdsl name -> the diffusers name it comes from. Two diffusers names that map to one
    unetdsl name (a legacy and a current name of one tensor, both stored) are refused, naming
    both: one of them would silently win."""
    from ..weights import WeightsError

    out: dict[str, str] = {}
    for name in names:
        ours = unetdsl_key(name, spec)
        if ours in out:
            raise WeightsError(f"{source}: {out[ours]!r} and {name!r} are both {ours!r} (one tensor stored under two "
                               "names, a legacy and a current one?): keep one of them")
        out[ours] = name
    return out


def map_state_dict(state: Mapping[str, torch.Tensor], spec: ResolvedSpec,
                   source: str = "the diffusers weights") -> dict[str, torch.Tensor]:
    return {ours: state[theirs] for ours, theirs in map_names(state, spec, source).items()}


def from_diffusers(unet: nn.Module, *, name: str | None = None, time_ids: int = condition.TIME_IDS) -> nn.Module:
    """A live UNet2DModel / UNet2DConditionModel -> the equivalent unetdsl model, every tensor used
    and every parameter filled, in the same train/eval mode as `unet` (`time_ids`: see
    spec_from_diffusers)."""
    from ..api import build_model
    from ..weights import check_weights

    # a live model's config lacks the `_class_name` its config.json has: the class says it
    spec = spec_from_diffusers({"_class_name": type(unet).__name__, **dict(unet.config)}, name=name,  # type: ignore[arg-type]
                               time_ids=time_ids)
    model = build_model(spec)
    mapped = map_state_dict(unet.state_dict(), model.spec, "the UNet2DModel's weights")  # type: ignore[arg-type]
    check_weights(model, mapped, "the UNet2DModel's weights")
    model.to(dtype=next(unet.parameters()).dtype)
    model.load_state_dict(mapped, strict=True)
    return model.train(unet.training)


# --- unetdsl -> diffusers -----------------------------------------------------------------------
def diffusers_config(spec: ResolvedSpec) -> dict[str, Any]:
    """The UNet2DModel config computing what `spec` computes, proven by converting it back (the
    same spec id, or SpecError naming what would change); SpecError naming what it cannot express
    (the refusals below explain the common cases; the proof catches every other)."""
    config = _unet2d_config(spec)
    proven({"_class_name": "UNet2DModel", **config}, spec, spec_from_diffusers)
    return config


def config_for(spec: ResolvedSpec) -> dict[str, Any]:
    """The diffusers class and its config computing what `spec` computes (`_class_name` included),
    each proven by converting it back."""
    if spec.model == "autoencoder":  # the Stable Diffusion VAE's class
        return proven(autoencoder.autoencoder_config(spec), spec, spec_from_diffusers)
    time_ids = next((i.width for i in spec.condition_inputs if i.name == "time_ids"), condition.TIME_IDS)
    if spec.model == "controlnet":
        return _proven_controlnet(spec, functools.partial(spec_from_diffusers, time_ids=time_ids))
    if _conditioned(spec):  # the Stable Diffusion class: transformer attention, a text context, conditions
        return proven(condition.condition_config(spec), spec, functools.partial(spec_from_diffusers, time_ids=time_ids))
    return {"_class_name": "UNet2DModel", **diffusers_config(spec)}


def _proven_controlnet(spec: ResolvedSpec, read: Callable[..., Spec]) -> dict[str, Any]:
    """A ControlNetModel config, proven on the ControlNet's own parts (controlnet.comparable)."""
    config = controlnet.controlnet_config(spec)
    try:
        back: ResolvedSpec | None = resolve(read(config, name=spec.name))
    except SpecError:
        back = None  # proven() says why
    return proven(config, controlnet.comparable(spec, back) if back is not None else spec, read)


def _unet2d_config(spec: ResolvedSpec) -> dict[str, Any]:
    problems: list[Problem] = []

    def refuse(path: tuple[str | int, ...], why: str) -> None:
        problems.append(Problem(path, why + " (outside diffusers UNet2DModel's vocabulary)"))

    if spec.model != "unet" or spec.dims != 2:
        refuse(("model",), f"a {spec.dims}D {spec.model}: UNet2DModel is a 2D U-Net")
        raise SpecError(problems)
    levels = [*spec.encoder, *spec.decoder]
    places: list[ResolvedLevel | ResolvedMiddle] = [*levels, spec.middle]
    norms = {(p.norm.type, p.norm.groups, p.norm.eps) for p in places}
    if spec.head.norm is not None:
        norms.add((spec.head.norm.type, spec.head.norm.groups, spec.head.norm.eps))
    if len(norms) != 1 or next(iter(norms))[0] != "group":
        refuse(("defaults", "norm"), f"one group norm everywhere is needed, found {sorted(norms, key=str)}")
    acts = {p.activation for p in places}
    if len(acts) != 1 or next(iter(acts)) not in WRITTEN_ACTIVATIONS:
        refuse(("defaults", "activation"),
               f"one of {', '.join(WRITTEN_ACTIVATIONS)} in every block is needed, found {sorted(acts)}")
    if spec.head.activation != "silu":
        refuse(("head", "activation"), f"head activation {spec.head.activation!r} (UNet2DModel's conv_act is SiLU)")
    if {p.order for p in places} != {"pre"}:
        refuse(("defaults", "order"), "post-activation blocks")
    if not all(p.conv_bias for p in places):
        refuse(("defaults", "conv_bias"), "bias-free ResBlock convolutions (diffusers' convolutions have biases)")
    dropouts = {p.dropout for p in places}
    if len(dropouts) != 1:
        refuse(("defaults", "dropout"), f"one dropout everywhere is needed, found {sorted(dropouts)}")
    blocks = {len(lv.blocks) for lv in spec.encoder}
    if len(blocks) != 1:
        refuse(("encoder", "levels"), f"one block count for every level is needed, found {sorted(blocks)}")
    if spec.middle.blocks not in (0, 2):
        refuse(("middle", "blocks"), f"{spec.middle.blocks} middle blocks (UNetMidBlock2D has 2)")
    head_dims = {lv.attention.head_dim for lv in levels if lv.attention is not None}
    if spec.middle.attention is not None:
        head_dims.add(spec.middle.attention.head_dim)
    single_head = all(a.heads == 1 for a in [*(lv.attention for lv in levels), spec.middle.attention] if a is not None)
    if len(head_dims) > 1 and not single_head:
        refuse(("encoder", "levels"), f"one attention head_dim everywhere is needed, found {sorted(head_dims)}")
    if any(lv.attention is not None and not lv.attention.norm for lv in levels):
        refuse(("encoder", "levels"), "level attention without a norm")
    t = spec.time
    if t is None:
        raise SpecError([*problems, Problem(("time",), "UNet2DModel always has a time embedding")])
    down_blocks, down_type = _block_types(spec.encoder, "downsample", ("AttnDownBlock2D", "ResnetDownsampleBlock2D",
                                                                     "DownBlock2D"), "conv", refuse)
    up_blocks, up_type = _block_types(spec.decoder, "upsample", ("AttnUpBlock2D", "ResnetUpsampleBlock2D", "UpBlock2D"),
                                      "nearest", refuse)
    channels = [lv.channels for lv in spec.encoder]
    if [lv.channels for lv in spec.decoder] != channels[::-1]:
        refuse(("decoder", "levels"), "decoder channels that do not mirror the encoder")
    fourier = t.embedding == "fourier"
    if fourier and (t.features != 2 * channels[0] or t.scale != FOURIER_SCALE or not t.log or t.flip_sin_to_cos
                    or not spec.head.divide_by_timestep):
        refuse(("time",), "a fourier embedding other than UNet2DModel's (2 x first channels, scale 16, log, "
               "sin first, output divided by sigma)")
    if not fourier and spec.head.divide_by_timestep:
        refuse(("head", "divide_by_timestep"), "dividing by t without a fourier embedding")
    if t.embedding != "fourier" and t.features != channels[0]:
        refuse(("time", "features"), f"time features {t.features} != first channels {channels[0]}")
    if t.activation != "silu":
        refuse(("time", "activation"), f"time MLP activation {t.activation!r} (UNet2DModel's is SiLU)")
    if t.embedding == "sinusoidal" and t.max_period != 10000.0:
        refuse(("time", "max_period"), f"max_period {t.max_period}")
    if spec.head.norm is None or spec.head.kernel_size != 3:
        refuse(("head",), "an output head other than norm -> act -> 3x3 conv")
    if problems:
        raise SpecError(problems)
    mid_attn = spec.middle.attention
    norm = spec.encoder[0].norm
    return {
        "sample_size": spec.sample_size[0] if len(set(spec.sample_size)) == 1 else list(spec.sample_size),
        "in_channels": spec.in_channels,
        "out_channels": spec.out_channels,
        "center_input_sample": spec.center_input,
        "time_embedding_type": {v: k for k, v in TIME_EMBEDDINGS.items()}[t.embedding],
        "time_embedding_dim": t.dim,
        "freq_shift": t.freq_shift,
        "flip_sin_to_cos": t.flip_sin_to_cos,
        "down_block_types": tuple(down_blocks),
        "mid_block_type": "UNetMidBlock2D" if spec.middle.blocks else None,
        "up_block_types": tuple(up_blocks),
        "block_out_channels": tuple(channels),
        "layers_per_block": len(spec.encoder[0].blocks),
        "downsample_padding": 0 if spec.asymmetric_padding else 1,
        "downsample_type": down_type,
        "upsample_type": up_type,
        "dropout": spec.middle.dropout,
        "act_fn": spec.middle.activation,
        "attention_head_dim": None if single_head else next(iter(head_dims), 8),
        "norm_num_groups": norm.groups,
        "attn_norm_num_groups": norm.groups if mid_attn is not None and mid_attn.norm and t.injection != "add" else None,
        "norm_eps": norm.eps,
        "resnet_time_scale_shift": {v: k for k, v in INJECTIONS.items()}[t.injection],
        "add_attention": mid_attn is not None,
        "num_class_embeds": spec.classes,
        "num_train_timesteps": t.timesteps if t.embedding == "learned" else None,
    }


def _block_types(levels: list[ResolvedLevel], key: str, names: tuple[str, str, str], plain: str,
                 refuse: Any) -> tuple[list[str], str]:
    """diffusers block types for encoder (key "downsample") or decoder ("upsample") levels, and the
    one `downsample_type`/`upsample_type` every attention level must share."""
    attn_block, resnet_block, plain_block = names
    section = "encoder" if key == "downsample" else "decoder"
    types, attn_methods = [], set()
    for i, lv in enumerate(levels):
        method = getattr(lv, key)
        if method not in (None, plain, "resblock"):
            refuse((section, "levels", i, key), f"{key} {method!r}")
        if lv.attention is not None:
            types.append(attn_block)
            if method is not None:
                attn_methods.add(method)
        else:
            types.append(resnet_block if method == "resblock" else plain_block)
    if len(attn_methods) > 1:
        refuse((section, "levels"), f"attention levels that {key} differently")
    return types, "resnet" if "resblock" in attn_methods else "conv"


def _conditioned(spec: ResolvedSpec) -> bool:
    places = [*spec.encoder, spec.middle, *spec.decoder]
    return spec.context_dim is not None or bool(spec.conditions) or any(
        p.attention is not None and p.attention.type == "transformer" for p in places)


def to_diffusers(model: nn.Module) -> nn.Module:
    """The unetdsl model as a diffusers UNet2DModel with the same weights (strict), in the same
    train/eval mode as `model`."""
    import diffusers

    spec: ResolvedSpec = model.spec  # type: ignore[assignment]
    config = config_for(spec)
    cls = config.pop("_class_name")
    if (cls == "UNet2DModel" and spec.middle.attention is not None and not spec.middle.attention.norm
            and config["resnet_time_scale_shift"] == "default"):
        raise SpecError([Problem(("middle", "attention", "norm"), "a norm-less middle attention with additive "
                                 "time injection (outside diffusers UNet2DModel's vocabulary)")])
    # the three classes, by the name the proven config carries (diffusers ships no usable stubs)
    unet: nn.Module = getattr(diffusers, cls)(**config)
    names = {unetdsl_key(k, spec): k for k in unet.state_dict()}
    ours = model.state_dict()
    if set(names) != set(ours):
        raise SpecError([Problem((), f"internal mapping mismatch: {sorted(set(names) ^ set(ours))[:5]}")])
    dtype = next(model.parameters()).dtype
    if dtype != next(unet.parameters()).dtype:
        unet.to(dtype=dtype)
    unet.load_state_dict({names[k]: v for k, v in ours.items()}, strict=True)
    return unet.train(model.training)


# --- a save_pretrained folder -> spec.yaml + weights.safetensors ------------------------------------
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


def convert_pretrained(folder: str | os.PathLike[str], spec_out: str | os.PathLike[str],
                       weights_out: str | os.PathLike[str] | None = None, *, name: str | None = None,
                       time_ids: int = condition.TIME_IDS) -> ResolvedSpec:
    """Read `config.json` (+ the safetensors weights) of a local diffusers UNet2DModel folder; write a
    validated spec YAML and, if asked, the mapped weights as a unetdsl checkpoint. No network."""
    import yaml

    from ..api import build_model
    from ..fsutil import check_output, write_text_atomic
    from ..weights import WeightsError, check_entries, check_weights, read_header, read_tensors, save

    root = Path(folder)
    reads = {"diffusers config": root / "config.json", "diffusers weights": root / WEIGHTS_FILE}
    check_output(spec_out, inputs=reads)  # both outputs, before anything is read or written
    if weights_out is not None:
        check_output(weights_out, inputs={**reads, "spec output": spec_out})
    spec = spec_from_diffusers(root / "config.json", name=name, time_ids=time_ids)
    model = None
    if weights_out is not None:
        path = root / WEIGHTS_FILE
        if not path.is_file():
            pickled = sorted(p.name for p in root.glob("*.bin"))
            hint = (f"; found {', '.join(pickled)}: pickles are not read, re-save with safe_serialization=True"
                    if pickled else "")
            raise WeightsError(f"{path}: no such weights file{hint}")
        model = build_model(spec, device="meta")
        entries, _ = read_header(path)  # names and shapes first: no data read for a file that cannot fit
        names = map_names(entries, model.spec, str(path))  # type: ignore[arg-type]
        check_entries(model, {ours: entries[theirs] for ours, theirs in names.items()}, str(path))
        tensors, _ = read_tensors(path)
        mapped = map_state_dict(tensors, model.spec, str(path))  # type: ignore[arg-type]
        check_weights(model, mapped, str(path))
        model.load_state_dict(mapped, strict=True, assign=True)
    data = spec.model_dump(exclude_none=True, mode="json")
    text = (schema_line(os.path.dirname(os.path.abspath(spec_out))) + "\n"
            f"# converted by `unetdsl convert diffusers {root}`\n"
            + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100))
    try:
        resolved, _ = resolve_spec(text)  # the file we write must read back to this spec
    except SpecError as exc:  # spec_from_diffusers resolved it already: a failure here is ours
        raise InternalError(f"the converted spec does not read back: {exc}") from exc
    write_text_atomic(spec_out, text)
    if model is not None and weights_out is not None:
        save(model, weights_out)
    return resolved
