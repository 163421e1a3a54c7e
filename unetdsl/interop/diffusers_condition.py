"""diffusers UNet2DConditionModel (Stable Diffusion 1.x/2.x U-Nets) -> spec data.

CrossAttnDownBlock2D / CrossAttnUpBlock2D / UNetMidBlock2DCrossAttn become levels and a middle
with `attention: {type: transformer}`; DownBlock2D / UpBlock2D plain levels. The config keys mean
what diffusers makes of them, not what their names say: `attention_head_dim` is the number of
heads (diffusers issue 2011; `num_attention_heads` is refused by diffusers itself), and the up
blocks take the per-level lists reversed. Every other key either has its default (where it
changes nothing) or is refused by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import Problem, SpecError
from ..spec.resolved import ResolvedAttention, ResolvedLevel, ResolvedSettings, ResolvedSpec, ResolvedTransformer
from .config_types import Refuse, wrong_levels, wrong_types
from .diffusers_names import INJECTIONS, WRITTEN_ACTIVATIONS

# every UNet2DConditionModel.__init__ argument, with its default (diffusers 0.2x-0.4x)
DEFAULTS: dict[str, Any] = {
    "sample_size": None, "in_channels": 4, "out_channels": 4, "center_input_sample": False,
    "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "only_cross_attention": False, "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2,
    "downsample_padding": 1, "mid_block_scale_factor": 1, "dropout": 0.0, "act_fn": "silu", "norm_num_groups": 32,
    "norm_eps": 1e-5, "cross_attention_dim": 1280, "transformer_layers_per_block": 1,
    "reverse_transformer_layers_per_block": None, "encoder_hid_dim": None, "encoder_hid_dim_type": None,
    "attention_head_dim": 8, "num_attention_heads": None, "dual_cross_attention": False,
    "use_linear_projection": False, "class_embed_type": None, "addition_embed_type": None,
    "addition_time_embed_dim": None, "num_class_embeds": None, "upcast_attention": False,
    "resnet_time_scale_shift": "default", "resnet_skip_time_act": False, "resnet_out_scale_factor": 1.0,
    "time_embedding_type": "positional", "time_embedding_dim": None, "time_embedding_act_fn": None,
    "timestep_post_act": None, "time_cond_proj_dim": None, "conv_in_kernel": 3, "conv_out_kernel": 3,
    "projection_class_embeddings_input_dim": None, "attention_type": "default", "class_embeddings_concat": False,
    "mid_block_only_cross_attention": None, "cross_attention_norm": None, "addition_embed_type_num_heads": 64,
}

# keys unetdsl reads; every other key must keep its default (a different value is refused by name)
READ = {
    "sample_size", "in_channels", "out_channels", "center_input_sample", "flip_sin_to_cos", "freq_shift",
    "down_block_types", "mid_block_type", "up_block_types", "only_cross_attention", "block_out_channels",
    "layers_per_block", "downsample_padding", "mid_block_scale_factor", "dropout", "act_fn", "norm_num_groups",
    "norm_eps", "cross_attention_dim", "transformer_layers_per_block", "attention_head_dim", "use_linear_projection",
    "num_class_embeds", "upcast_attention", "resnet_time_scale_shift", "time_embedding_type", "time_embedding_dim",
    "conv_out_kernel", "conv_in_kernel", "resnet_out_scale_factor", "resnet_skip_time_act", "class_embed_type",
    "addition_embed_type", "addition_time_embed_dim",
    "projection_class_embeddings_input_dim", "encoder_hid_dim", "encoder_hid_dim_type", "cross_attention_norm",
    "mid_block_only_cross_attention", "time_embedding_act_fn",
    "addition_embed_type_num_heads",  # the heads of addition_embed_type text's attention pooling
}
# SDXL's micro-conditioning: time_ids per sample (original size, crop, target size: 6; the refiner's
# 5 put an aesthetic score in place of the target size). The config states only the joined width
# text_embeds + time_ids x addition_time_embed_dim, so the count is a choice of the caller's.
TIME_IDS = 6
CLASS_EMBED_TYPES = ("timestep", "identity", "projection", "simple_projection")
# a default that is also one of the values a key may take without changing anything
ALSO_FINE: dict[str, tuple[Any, ...]] = {}

# block type -> (its attention: None | transformer | joint, how it resamples). The joint (SimpleCrossAttn)
# blocks resample with a ResNet block, as ResnetDownsampleBlock2D / ResnetUpsampleBlock2D do
DOWN_BLOCKS: dict[str, tuple[str | None, str]] = {
    "CrossAttnDownBlock2D": ("transformer", "conv"), "DownBlock2D": (None, "conv"),
    "SimpleCrossAttnDownBlock2D": ("joint", "resblock"), "ResnetDownsampleBlock2D": (None, "resblock")}
UP_BLOCKS: dict[str, tuple[str | None, str]] = {
    "CrossAttnUpBlock2D": ("transformer", "nearest"), "UpBlock2D": (None, "nearest"),
    "SimpleCrossAttnUpBlock2D": ("joint", "resblock"), "ResnetUpsampleBlock2D": (None, "resblock")}
MID_BLOCKS: dict[str | None, str | None] = {"UNetMidBlock2DCrossAttn": "transformer",
                                            "UNetMidBlock2DSimpleCrossAttn": "joint", None: None}
CROSS_ATTENTION_NORMS = {None: 0, "group_norm": 32}  # -> context_norm_groups (diffusers' default group count)

# the kind of every key unetdsl reads (a test holds TYPES to READ), checked before any rule reads it
TYPES = {"sample_size": "size", "block_out_channels": "ints", "down_block_types": "strs", "up_block_types": "strs",
         "mid_block_type": "str?", "act_fn": "str", "resnet_time_scale_shift": "str", "time_embedding_type": "str",
         "num_class_embeds": "int?", "time_embedding_dim": "int?", "class_embed_type": "str?",
         "addition_embed_type": "str?", "addition_time_embed_dim": "int?", "projection_class_embeddings_input_dim": "int?",
         "encoder_hid_dim": "int?", "encoder_hid_dim_type": "str?", "cross_attention_norm": "str?",
         "mid_block_only_cross_attention": "bool?", "time_embedding_act_fn": "str?",
         **dict.fromkeys(("cross_attention_dim", "in_channels", "out_channels", "norm_num_groups", "downsample_padding",
                          "conv_out_kernel", "conv_in_kernel", "addition_embed_type_num_heads"), "int"),
         "resnet_out_scale_factor": "number", "resnet_skip_time_act": "bool",
         **dict.fromkeys(("freq_shift", "mid_block_scale_factor", "dropout", "norm_eps"), "number"),
         **dict.fromkeys(("use_linear_projection", "upcast_attention", "center_input_sample", "flip_sin_to_cos"),
                         "bool"),
         **dict.fromkeys(("attention_head_dim", "transformer_layers_per_block", "only_cross_attention",
                          "layers_per_block"), "per level")}


def _ok_int(v: Any) -> bool:
    return type(v) is int


def condition_data(raw: dict[str, Any], refuse: Refuse, pick: Callable[[dict[str, Any], str, dict[str, Any]], Any],
                   tables: dict[str, dict[str, Any]], name: str, time_ids: int = TIME_IDS) -> dict[str, Any] | None:
    """Spec data for a UNet2DConditionModel config (None when a problem makes it unbuildable;
    every problem is reported through `refuse`)."""
    for key, value in raw.items():
        if key in DEFAULTS and key not in READ and value != DEFAULTS[key] and value not in ALSO_FINE.get(key, ()):
            why = ("diffusers refuses num_attention_heads itself; attention_head_dim gives the heads"
                   if key == "num_attention_heads" else f"{key} {value!r} has no unetdsl equivalent")
            refuse(key, value, why, repr(DEFAULTS[key]))
    c = {**DEFAULTS, **{k: v for k, v in raw.items() if k in DEFAULTS}}
    channels = c["block_out_channels"]
    downs, ups = c["down_block_types"], c["up_block_types"]
    if wrong_types(c, TYPES, refuse) or wrong_levels(c, refuse):
        return None
    n = len(channels)

    def per_level(key: str, check: Callable[[Any], bool], allowed: str) -> list[Any]:
        value = c[key]
        values = list(value) if isinstance(value, (list, tuple)) else [value] * n
        if len(values) != n or not all(check(v) for v in values):
            refuse(key, value, "wrong type", f"{allowed}, or a list of {n} of them")
            return [DEFAULTS[key]] * n
        return values

    heads = per_level("attention_head_dim", _ok_int, "an int (the number of heads)")
    depth = per_level("transformer_layers_per_block", _ok_int, "an int")
    only_cross = per_level("only_cross_attention", lambda v: isinstance(v, bool), "true or false")
    blocks = per_level("layers_per_block", _ok_int, "an int")
    if c["downsample_padding"] not in (0, 1):
        refuse("downsample_padding", c["downsample_padding"], "only 1 (symmetric) or 0 (right/bottom) padding", "0, 1")
    if c["mid_block_type"] not in MID_BLOCKS:
        refuse("mid_block_type", c["mid_block_type"], "unsupported middle block", ", ".join(map(str, MID_BLOCKS)))
        c["mid_block_type"] = None
    if c["cross_attention_norm"] not in CROSS_ATTENTION_NORMS:
        refuse("cross_attention_norm", c["cross_attention_norm"], "only a group norm of the context (or none) "
               "before the joint attention's key/value projections", "group_norm, null")
    hid, hid_type = c["encoder_hid_dim"], c["encoder_hid_dim_type"]
    if hid is not None and hid_type is None:
        hid_type = "text_proj"  # as diffusers itself reads it (with a deprecation notice)
    if hid_type not in (None, "text_proj") or (hid_type is not None and hid is None):
        refuse("encoder_hid_dim_type", hid_type, "only a linear projection of the text states (text_proj, with "
               "encoder_hid_dim)", "text_proj, null")
    joint = any(DOWN_BLOCKS.get(b, (None,))[0] == "joint" for b in (*downs, *ups)) or \
        MID_BLOCKS.get(c["mid_block_type"]) == "joint"
    if joint and c["norm_eps"] != 1e-5:  # diffusers' SimpleCrossAttn GroupNorm keeps its own eps
        refuse("norm_eps", c["norm_eps"], "the joint (SimpleCrossAttn) attention's norm has eps 1e-5 whatever "
               "norm_eps says; unetdsl's attention uses its level's norm", "1e-5")
    if c["time_embedding_type"] != "positional":
        refuse("time_embedding_type", c["time_embedding_type"],
               "only the positional (sinusoidal) time embedding is converted for this class", "positional")
    if c["conv_out_kernel"] not in (1, 3):
        refuse("conv_out_kernel", c["conv_out_kernel"], "the output conv is 1x1 or 3x3", "1, 3")
    if c["conv_in_kernel"] not in (1, 3, 5, 7):
        refuse("conv_in_kernel", c["conv_in_kernel"], "the stem's kernel is 1, 3, 5 or 7", "1, 3, 5, 7")
        c["conv_in_kernel"] = 3
    for key in ("resnet_out_scale_factor", "mid_block_scale_factor"):
        if not 0.25 <= c[key] < float("inf"):  # residual_scale = 1 / it, at most 4
            refuse(key, c[key], "the ResBlocks' output is divided by it: at least 0.25", "a number >= 0.25")
            c[key] = 1
    # the ResNet-resampling and SimpleCrossAttn blocks take resnet_out_scale_factor and resnet_skip_time_act;
    # the others keep their ResBlocks' defaults (diffusers' get_down_block / get_up_block)
    resnet_flags = {"residual_scale": 1.0 / c["resnet_out_scale_factor"], "time_activation": not c["resnet_skip_time_act"]}
    def attention(kind: str, i: int, cross_only: bool, up: int | None = None) -> dict[str, Any]:
        if kind == "joint":
            # SimpleCrossAttn: attention_head_dim is the head dim there, and an up block k takes entry k of
            # the list, not reversed as every other per-level list (diffusers' UNet2DConditionModel.__init__)
            return {"type": "joint", "head_dim": heads[i if up is None else up], "only_cross": cross_only,
                    "context_norm_groups": CROSS_ATTENTION_NORMS.get(c["cross_attention_norm"], 0)}
        return {"type": "transformer", "heads": heads[i], "depth": depth[i],
                "linear_projection": c["use_linear_projection"], "only_cross": cross_only,
                "upcast": c["upcast_attention"]}

    attending = False
    levels: list[dict[str, Any]] = []
    for i, (block, ch) in enumerate(zip(downs, channels, strict=True)):
        if block not in DOWN_BLOCKS:
            refuse(f"down_block_types.{i}", block, "unsupported down block", ", ".join(DOWN_BLOCKS))
            continue
        kind, resample = DOWN_BLOCKS[block]
        level: dict[str, Any] = {"channels": ch, "blocks": blocks[i], **(resnet_flags if resample == "resblock" else {})}
        if kind:
            level["attention"] = attention(kind, i, only_cross[i])
            attending = True
        if i < n - 1:
            level["downsample"] = resample
        levels.append(level)
    dec_levels: list[dict[str, Any]] = []
    for k, (block, ch) in enumerate(zip(ups, reversed(channels), strict=True)):
        if block not in UP_BLOCKS:
            refuse(f"up_block_types.{k}", block, "unsupported up block", ", ".join(UP_BLOCKS))
            continue
        i = n - 1 - k  # diffusers reverses every per-level list for the up blocks
        kind, resample = UP_BLOCKS[block]
        level = {"channels": ch, "blocks": blocks[i] + 1, **(resnet_flags if resample == "resblock" else {})}
        if kind:
            level["attention"] = attention(kind, i, only_cross[i], up=k)
            attending = True
        if k < n - 1:
            level["upsample"] = resample
        dec_levels.append(level)
    middle: dict[str, Any] = {"blocks": 2 if c["mid_block_type"] else 0,
                              "residual_scale": 1.0 / c["mid_block_scale_factor"]}
    mid_kind = MID_BLOCKS.get(c["mid_block_type"])
    if mid_kind == "joint":  # (UNetMidBlock2DCrossAttn's ResBlocks always activate the embedding)
        middle["time_activation"] = resnet_flags["time_activation"]
    if mid_kind:
        # UNetMidBlock2DCrossAttn is never only-cross; the simple one as mid_block_only_cross_attention says, or
        # as only_cross_attention when that is one bool
        mid_only = c["mid_block_only_cross_attention"]
        if mid_only is None:
            mid_only = c["only_cross_attention"] if isinstance(c["only_cross_attention"], bool) else False
        middle["attention"] = attention(mid_kind, n - 1, mid_kind == "joint" and mid_only)
        attending = True

    time: dict[str, Any] = {"embedding": "sinusoidal", "features": channels[0],
                            "flip_sin_to_cos": c["flip_sin_to_cos"], "freq_shift": c["freq_shift"],
                            "injection": pick(c, "resnet_time_scale_shift", tables["injections"])}
    activation = pick(c, "act_fn", tables["activations"])
    if activation != "silu":  # UNet2DConditionModel's TimestepEmbedding takes act_fn too
        time["activation"] = activation
    if c["time_embedding_dim"] is not None:
        time["dim"] = c["time_embedding_dim"]
    if c["time_embedding_act_fn"] is not None:  # on the whole embedding once the conditions joined it
        time["post_activation"] = pick(c, "time_embedding_act_fn", tables["activations"])
    size = c["sample_size"]
    data: dict[str, Any] = {
        "unetdsl": 1,
        "name": name,
        "description": f"converted from a diffusers UNet2DConditionModel config ({raw.get('_diffusers_version', '?')})",
        "model": "unet",
        "dims": 2,
        "in_channels": c["in_channels"],
        "out_channels": c["out_channels"],
        "sample_size": list(size) if isinstance(size, (list, tuple)) else (size if size is not None else 2 ** (n + 1)),
        "time": time,
        "defaults": {"norm": {"type": "group", "groups": c["norm_num_groups"], "eps": float(c["norm_eps"])},
                     "activation": activation, "order": "pre", "dropout": float(c["dropout"])},
        "encoder": {"levels": levels},
        "middle": middle,
        "decoder": {"levels": dec_levels},
        # UNet2DConditionModel's conv_act is act_fn (UNet2DModel's is always SiLU)
        "head": {"norm": True, "kernel_size": c["conv_out_kernel"], "activation": activation},
    }
    if c["conv_in_kernel"] != 3:
        data["stem"] = {"kernel_size": c["conv_in_kernel"]}
    if attending:
        data["context_dim"] = c["cross_attention_dim"]
        if hid_type == "text_proj" and type(hid) is int:
            data["context_input_dim"] = hid
    data["encoder"]["asymmetric_padding"] = c["downsample_padding"] == 0  # stated: either is someone's default
    if c["num_class_embeds"] is not None and c["class_embed_type"] is None:  # (diffusers ignores it beside a type)
        data["classes"] = c["num_class_embeds"]
    groups = _condition_groups(c, refuse, time, activation, time_ids)
    if groups:
        data["conditions"] = groups
    if c["center_input_sample"]:
        data["center_input"] = True
    return data


def _condition_groups(c: dict[str, Any], refuse: Refuse, time: dict[str, Any], activation: str,
                      time_ids: int) -> list[dict[str, Any]]:
    """diffusers' class_embedding (class_embed_type) and add_embedding (addition_embed_type
    text_time) as condition groups, in the order its forward adds them. Their inputs take the
    names of diffusers' arguments: class_labels, and added_cond_kwargs' text_embeds and time_ids."""
    groups: list[dict[str, Any]] = []
    projection = c["projection_class_embeddings_input_dim"]
    kind = c["class_embed_type"]
    if kind is not None:
        needs_projection = kind in ("projection", "simple_projection")
        if kind not in CLASS_EMBED_TYPES:
            refuse("class_embed_type", kind, f"class_embed_type {kind!r} has no unetdsl equivalent",
                   ", ".join(CLASS_EMBED_TYPES))
        elif needs_projection and projection is None:
            refuse("projection_class_embeddings_input_dim", projection,
                   f"class_embed_type {kind!r} needs the width of the class vectors", "an int")
        elif kind == "timestep":  # the class labels through the time section's sinusoid, then an MLP (act_fn)
            groups.append({"inputs": [{"name": "class_labels", "width": 1, "sinusoid": time["features"]}],
                           "project": "mlp", "activation": activation})
        elif kind == "identity":  # added as they are: (B, time embedding dim)
            groups.append({"inputs": [{"name": "class_labels", "width": c["time_embedding_dim"] or 4 * time["features"]}],
                           "project": "none"})
        else:  # projection: TimestepEmbedding (SiLU); simple_projection: one linear layer
            groups.append({"inputs": [{"name": "class_labels", "width": projection}],
                           "project": "mlp" if kind == "projection" else "linear"})
    add = c["addition_embed_type"]
    if add == "text":  # DeepFloyd IF: the text states (before encoder_hid_proj) attention-pooled, added
        if type(c["addition_embed_type_num_heads"]) is not int:
            refuse("addition_embed_type_num_heads", c["addition_embed_type_num_heads"], "wrong type", "an int")
        else:
            groups.append({"pool_context": {"heads": c["addition_embed_type_num_heads"]}})
    elif add is not None:
        if add != "text_time":
            refuse("addition_embed_type", add, f"addition_embed_type {add!r} (Kandinsky's image embeddings) has no "
                   "unetdsl equivalent yet", "text_time, text, null")
        elif not (type(c["addition_time_embed_dim"]) is int and type(projection) is int):
            refuse("addition_time_embed_dim", c["addition_time_embed_dim"], "addition_embed_type 'text_time' needs "
                   "addition_time_embed_dim and projection_class_embeddings_input_dim", "an int each")
        elif projection - time_ids * c["addition_time_embed_dim"] < 1:
            refuse("projection_class_embeddings_input_dim", projection,
                   f"too narrow for {time_ids} time_ids of {c['addition_time_embed_dim']} features and a text embedding",
                   f"more than {time_ids * c['addition_time_embed_dim']}")
        else:  # SDXL: concat(text_embeds, sinusoid(each time id)) -> TimestepEmbedding (SiLU) -> added
            groups.append({"inputs": [
                {"name": "text_embeds", "width": projection - time_ids * c["addition_time_embed_dim"]},
                {"name": "time_ids", "width": time_ids, "sinusoid": c["addition_time_embed_dim"]}], "project": "mlp"})
    return groups


def config_path(path: tuple[str | int, ...], levels: int) -> tuple[str | int, ...] | None:
    """The config key a setting of a converted UNet2DConditionModel spec came from."""
    if path[:1] == ("context_dim",):
        return ("cross_attention_dim",)
    if path[:1] == ("conditions",):
        return ("projection_class_embeddings_input_dim",)
    if len(path) >= 5 and path[0] in ("encoder", "decoder", "middle") and "attention" in path:
        field = str(path[path.index("attention") + 1]) if path.index("attention") + 1 < len(path) else ""
        return {"heads": ("attention_head_dim",), "depth": ("transformer_layers_per_block",),
                "only_cross": ("only_cross_attention",), "linear_projection": ("use_linear_projection",),
                "upcast": ("upcast_attention",)}.get(field, ("attention_head_dim",))
    if path[:2] == ("middle", "attention"):
        return ("attention_head_dim",)
    return None


def condition_prefixes(spec: ResolvedSpec) -> dict[str, int]:
    """diffusers' module prefix of each condition group the converter writes, by its inputs' names
    (class_labels: class_embedding; text_embeds and time_ids: add_embedding) -> the group's index."""
    out: dict[str, int] = {}
    for g, group in enumerate(spec.conditions):
        names = {i.name for i in group.inputs}
        if group.pool_heads:
            out["add_embedding."] = g
        elif names == {"class_labels"}:
            out["class_embedding."] = g
        elif names == {"text_embeds", "time_ids"}:
            out["add_embedding."] = g
    return out


# --- unetdsl -> diffusers -------------------------------------------------------------------------
def _one_or_list(values: list[Any]) -> Any:
    return values[0] if len(set(map(repr, values))) == 1 else list(values)


def _conditions_config(spec: ResolvedSpec) -> dict[str, Any]:
    """The class_embed_type / addition_embed_type keys of the spec's condition groups, unproven
    (what they cannot say, the proof of the whole config refuses)."""
    out: dict[str, Any] = {}
    for group in spec.conditions:
        by_name = {i.name: i for i in group.inputs}
        if group.pool_heads:
            out |= {"addition_embed_type": "text", "addition_embed_type_num_heads": group.pool_heads}
        elif set(by_name) == {"class_labels"}:
            labels = by_name["class_labels"]
            out["class_embed_type"] = ("timestep" if labels.sinusoid else "identity" if group.project == "none"
                                       else "projection" if group.project == "mlp" else "simple_projection")
            if not labels.sinusoid and group.project != "none":
                out["projection_class_embeddings_input_dim"] = labels.width
        elif set(by_name) == {"text_embeds", "time_ids"}:
            ids = by_name["time_ids"]
            out |= {"addition_embed_type": "text_time", "addition_time_embed_dim": ids.sinusoid,
                    "projection_class_embeddings_input_dim": by_name["text_embeds"].width + ids.width * ids.sinusoid}
        else:
            raise SpecError([Problem(("conditions",), "UNet2DConditionModel takes class_labels (class_embed_type) "
                                     "and text_embeds with time_ids (addition_embed_type text_time) only (outside "
                                     "its vocabulary)")])
    return out


def _block(table: dict[str, tuple[str | None, str]], lv: ResolvedLevel, resample: str | None) -> str:
    """The diffusers block type of a level with `att` that resamples by `resample` (a last level: either
    method; a plain one with a resblock resampler is a Resnet*sample block). Unwritable: a name the proof
    refuses."""
    kind = lv.attention.type if lv.attention is not None else None
    # a last plain level is DownBlock2D / UpBlock2D unless its ResBlocks take the Resnet blocks' flags
    resnet = lv.residual_scale != 1.0 or not lv.time_activation
    for name, (k, method) in table.items():
        if k == kind and (resample is None or method == resample) and (resample is not None or kind != "joint"
                                                                        or method == "resblock"):
            if resample is None and kind is None and (method == "resblock") != resnet:
                continue
            return name
    return f"{kind}-{resample}"


def _resnet_flags(spec: ResolvedSpec) -> dict[str, Any]:
    """resnet_out_scale_factor and resnet_skip_time_act, from the first level that resamples with a
    ResBlock (the blocks that take them); the proof refuses a spec whose other levels differ."""
    source = next((lv for lv in (*spec.encoder, *spec.decoder) if "resblock" in (lv.downsample, lv.upsample)
                   or (lv.attention is not None and lv.attention.type == "joint")), None)
    if source is None:
        return {}
    return {"resnet_out_scale_factor": 1.0 / source.residual_scale, "resnet_skip_time_act": not source.time_activation}


def condition_config(spec: ResolvedSpec) -> dict[str, Any]:
    """The UNet2DConditionModel config of `spec`, written from its levels, unproven:
    `diffusers.config_for` converts it back and refuses (SpecError) the settings that would change."""
    if spec.model != "unet" or spec.dims != 2 or spec.time is None or spec.time.embedding != "sinusoidal":
        raise SpecError([Problem(("model",), "UNet2DConditionModel is a 2D U-Net with a sinusoidal time embedding "
                                 "(outside its vocabulary)")])
    n = len(spec.encoder)

    def transformer_of(lv: ResolvedSettings) -> ResolvedTransformer | None:
        return lv.attention.transformer if lv.attention is not None else None

    attending = [a for a in (*spec.encoder, spec.middle, *spec.decoder) if a.attention is not None]
    first = transformer_of(attending[0]) if attending else None
    def head_key(att: ResolvedAttention) -> int:  # attention_head_dim: the heads, the head dim for SimpleCrossAttn
        return att.head_dim if att.type == "joint" else att.heads

    def only_cross_of(att: ResolvedAttention | None) -> bool:
        own = (att.transformer or att.joint) if att is not None else None
        return own.only_cross if own is not None else False

    # per encoder level i: heads, depth, only-cross (levels without attention borrow their mirror's)
    per_level: list[tuple[int, int, bool]] = []
    for i, lv in enumerate(spec.encoder):
        mirror = spec.decoder[n - 1 - i] if len(spec.decoder) == n else lv
        source = lv if lv.attention is not None else mirror if mirror.attention is not None else None
        tf = transformer_of(source) if source is not None else None
        heads = head_key(source.attention) if source is not None and source.attention is not None else 1
        per_level.append((heads, tf.depth if tf else 1, only_cross_of(source.attention if source else None)))
    for k, lv in enumerate(spec.decoder):  # an up SimpleCrossAttn block k reads entry k (unreversed)
        if lv.attention is not None and lv.attention.type == "joint" and k < n and spec.encoder[k].attention is None:
            per_level[k] = (lv.attention.head_dim, per_level[k][1], per_level[k][2])
    mid = spec.middle.attention
    if mid is not None and per_level and spec.encoder[-1].attention is None:
        per_level[-1] = (head_key(mid), mid.transformer.depth if mid.transformer else 1, per_level[-1][2])
    places = [*spec.encoder, spec.middle, *spec.decoder]
    joint = next((p.attention.joint for p in places if p.attention is not None and p.attention.joint), None)
    norm = spec.encoder[0].norm
    config: dict[str, Any] = {
        "_class_name": "UNet2DConditionModel",
        "sample_size": spec.sample_size[0] if len(set(spec.sample_size)) == 1 else list(spec.sample_size),
        "in_channels": spec.in_channels,
        "out_channels": spec.out_channels,
        "center_input_sample": spec.center_input,
        "flip_sin_to_cos": spec.time.flip_sin_to_cos,
        "freq_shift": spec.time.freq_shift,
        "down_block_types": [_block(DOWN_BLOCKS, lv, lv.downsample) for lv in spec.encoder],
        "mid_block_type": {None: "UNetMidBlock2DCrossAttn", "transformer": "UNetMidBlock2DCrossAttn",
                           "joint": "UNetMidBlock2DSimpleCrossAttn"}[mid.type if mid else None]
        if spec.middle.blocks else None,
        "up_block_types": [_block(UP_BLOCKS, lv, lv.upsample) for lv in spec.decoder],
        "mid_block_only_cross_attention": only_cross_of(mid) if mid is not None and mid.type == "joint" else None,
        "cross_attention_norm": "group_norm" if joint is not None and joint.context_norm_groups else None,
        "encoder_hid_dim": spec.context_input_dim,
        "encoder_hid_dim_type": "text_proj" if spec.context_input_dim else None,
        "only_cross_attention": _one_or_list([p[2] for p in per_level]),
        "block_out_channels": [lv.channels for lv in spec.encoder],
        "layers_per_block": _one_or_list([len(lv.blocks) for lv in spec.encoder]),
        "downsample_padding": 0 if spec.asymmetric_padding else 1,
        "dropout": spec.middle.dropout,
        "act_fn": WRITTEN_ACTIVATIONS.get(spec.middle.activation, spec.middle.activation),
        "norm_num_groups": norm.groups,
        "norm_eps": norm.eps,
        "cross_attention_dim": spec.context_dim or 1280,
        "transformer_layers_per_block": _one_or_list([p[1] for p in per_level]),
        "attention_head_dim": _one_or_list([p[0] for p in per_level]),
        "use_linear_projection": first.linear_projection if first else False,
        "num_class_embeds": spec.classes,
        "upcast_attention": first.upcast if first else False,
        "resnet_time_scale_shift": {v: k for k, v in INJECTIONS.items()}[spec.time.injection],
        "time_embedding_dim": spec.time.dim,
        "time_embedding_act_fn": None if spec.time.post_activation == "none"
        else WRITTEN_ACTIVATIONS.get(spec.time.post_activation, spec.time.post_activation),
        "conv_out_kernel": spec.head.kernel_size,
        "conv_in_kernel": spec.stem_kernel,
        "mid_block_scale_factor": 1.0 / spec.middle.residual_scale,
        **_resnet_flags(spec),
        **_conditions_config(spec),
    }
    return config  # proven by the caller (diffusers.config_for): converted back, the same spec

