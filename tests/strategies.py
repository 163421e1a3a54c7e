"""The structured spec generator: small, consistent specs across every option of the language, for
the compiler's fuzz test and the stored-form round-trip property (tests/test_stored.py).

Every plain level setting of spec/settings.py is drawn at `defaults`, and again, independently, as
an override at each level and the middle, so per-place overrides of inherited settings (the class
that once lost `conv_bias: true` under `defaults: {conv_bias: false}` on save) are always in play.
The values come from each setting's declared type, so a setting added to the table is drawn with
no edit here; a type this file does not know fails loudly instead of being skipped."""

from __future__ import annotations

import typing
from typing import Any, get_args, get_origin

from hypothesis import strategies as st

from unetdsl.spec.models import LevelSettings
from unetdsl.spec.settings import LEVEL_SETTINGS
from unetdsl.spec.vocabulary import Activation, Downsample, NormType, TimeEmbedding, TimeInjection, Upsample, names

CHANNELS = [4, 8, 12]  # multiples of 4: groups 2 and 4 divide every count a norm sees, skips included


def setting_values(name: str) -> list[Any]:
    """Every value worth drawing for the plain level setting `name`, from its declared type."""
    annotation = LevelSettings.model_fields[name].annotation
    inner = [a for a in get_args(annotation) if a is not type(None)]  # X | None -> X
    (kind,) = inner
    if get_origin(kind) is typing.Annotated:
        kind = get_args(kind)[0]
    if get_origin(kind) is typing.Literal:
        return list(get_args(kind))
    if kind is bool:
        return [False, True]
    if kind is float:
        return sorted({float(LEVEL_SETTINGS[name].default), 0.25})
    if get_origin(kind) is list:  # resample_filter: the box and NCSN++'s FIR (specs() keeps them where they apply)
        return [[1.0, 1.0], [1.0, 3.0, 3.0, 1.0]]
    raise AssertionError(f"tests/strategies.py cannot draw level setting {name!r} of type {kind}: teach it")


def _optional(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> Any:
    """A value, or None (the place inherits)."""
    return draw(st.one_of(st.none(), values))


def _overrides(draw: st.DrawFn) -> dict[str, Any]:
    """Each plain level setting overridden here or not, independently."""
    out = {}
    for name in LEVEL_SETTINGS:
        value = _optional(draw, st.sampled_from(setting_values(name)))
        if value is not None:
            out[name] = value
    # time_at first needs post order: a place saying first says post, a place saying pre says second
    if out.get("time_at") == "first":
        out["order"] = "post"
    if out.get("order") == "pre":
        out["time_at"] = "second"
    return out


def _norm(draw: st.DrawFn, types_allowed: list[str], *, groups: bool = False) -> dict[str, Any]:
    """A norm section; `groups`: always state the groups of a group norm (the built-in 32 divides
    none of the channel counts drawn: `defaults` must)."""
    norm: dict[str, Any] = {}
    kind = _optional(draw, st.sampled_from(types_allowed))
    if kind is not None:
        norm["type"] = kind
    if kind == "group" or (kind is None and (groups or draw(st.booleans()))):
        norm["groups"] = draw(st.sampled_from([2, 4, "auto"]))
    if draw(st.booleans()):
        norm["eps"] = draw(st.sampled_from([1e-5, 1e-6]))
    return norm


def _attention(draw: st.DrawFn, transformer: bool, level: bool = True) -> Any:
    choices: list[Any] = [{"heads": 2}, {"head_dim": 2}, {}, True, {"heads": 1, "norm": False},
                          {"heads": 1, "residual_scale": 0.5},  # EDM's scaled residual
                          # lucidrains': a width of its own, memory slots, no q/k/v biases; linear attention
                          {"heads": 2, "head_dim": 3, "memory": 2, "qkv_bias": False},
                          {"type": "linear", "heads": 2, "head_dim": 2, "memory": 1},
                          {"type": "linear", "heads": 1, "qkv_bias": False}]
    if level:  # (the middle's attention sits between its ResBlocks: no placement)
        choices.append({"head_dim": 4, "placement": "last"})
    if transformer:
        choices += [{"type": "transformer", "heads": 2},
                    {"type": "transformer", "head_dim": 4, "depth": 2, "linear_projection": True, "upcast": True,
                     "norm_eps": 1e-5, "layer_norm_eps": 1e-6},
                    {"type": "joint", "head_dim": 2},  # (they need a context: specs() gives them one)
                    {"type": "joint", "heads": 1, "only_cross": True, "context_norm_groups": 2, "norm": False}]
    drawn = draw(st.sampled_from(choices))
    return dict(drawn) if isinstance(drawn, dict) else drawn  # a copy: specs() may add to it


@st.composite
def _conditions(draw: st.DrawFn) -> list[dict[str, Any]]:
    """One or two condition groups: every project and into, inputs as they are and through sinusoids
    (at least 4 features: the drawn freq_shift is at most 1, and a sinusoid needs half its features
    above it; a `none` projection needs the exact width, so it is not drawn)."""
    groups = []
    for g in range(draw(st.integers(1, 2))):
        inputs = [{"name": f"c{g}_{i}", "width": draw(st.integers(1, 3)),
                   **({"sinusoid": draw(st.sampled_from([4, 5, 6]))} if draw(st.booleans()) else {}),
                   **({"scale": draw(st.sampled_from([0.5, 3.0]))} if draw(st.booleans()) else {})}
                  for i in range(draw(st.integers(1, 2)))]
        group: dict[str, Any] = {"inputs": inputs}
        project = _optional(draw, st.sampled_from(["mlp", "linear"]))
        if project is not None:
            group["project"] = project
        if project == "linear" and draw(st.booleans()):
            group["bias"] = draw(st.booleans())
        if project in (None, "mlp") and draw(st.booleans()):
            group["activation"] = draw(st.sampled_from(names(Activation)))
        into = _optional(draw, st.sampled_from(["time", "features"]))
        if into is not None:
            group["into"] = into
        groups.append(group)
    return groups


@st.composite
def specs(draw: st.DrawFn, kinds: tuple[str, ...] = ("unet", "unet", "encoder", "decoder", "autoencoder"),
          max_levels: int = 3) -> dict[str, Any]:
    kind = draw(st.sampled_from(kinds))
    dims = draw(st.sampled_from([1, 2, 3]))
    n = draw(st.integers(1, max_levels))
    has_time = kind == "unet" or (kind != "autoencoder" and draw(st.booleans()))
    injection = draw(st.sampled_from(names(TimeInjection)))
    # instance norm subtracts each channel's mean: with injection add it would erase the time embedding (refused)
    norm_types = list(names(NormType)) if not has_time or injection == "scale_shift" else ["group", "layer", "batch"]
    transformer = kind != "autoencoder" and draw(st.booleans())

    levels = []
    for _ in range(n):
        lv: dict[str, Any] = {"channels": draw(st.sampled_from(CHANNELS)), "blocks": draw(st.integers(1, 2)),
                              **_overrides(draw)}
        if draw(st.booleans()):
            lv["norm"] = _norm(draw, norm_types)
        if draw(st.booleans()):
            lv["attention"] = _attention(draw, transformer)
        levels.append(lv)
    defaults: dict[str, Any] = {"norm": _norm(draw, norm_types, groups=True), **_overrides(draw)}
    middle: dict[str, Any] = {"blocks": draw(st.integers(0, 2)), **_overrides(draw)}
    if draw(st.booleans()):
        middle["norm"] = _norm(draw, norm_types)
    if middle["blocks"] == 2 and draw(st.booleans()):
        middle["attention"] = _attention(draw, transformer, level=False)
    places = [*levels, middle]
    if (defaults["norm"].get("groups") in (2, 4) and defaults["norm"].get("type", "group") == "group"
            and all(p.get("norm", {}).get("groups") != "auto" for p in places) and draw(st.booleans())):
        defaults["norm"]["min_group_size"] = 2  # EDM's groups by size: every count drawn is even
    head: dict[str, Any] = {"norm": draw(st.booleans()), "kernel_size": draw(st.sampled_from([1, 3]))}
    if draw(st.booleans()):
        head["activation"] = draw(st.sampled_from(names(Activation)))
    spec: dict[str, Any] = {
        "unetdsl": 1, "name": "fuzz", "model": kind, "dims": dims,
        "in_channels": draw(st.integers(1, 3)), "out_channels": draw(st.integers(1, 3)),
        "defaults": defaults, "middle": middle, "head": head,
        "init": {"zero_out": draw(st.booleans())}, "center_input": draw(st.booleans()),
    }
    factor = 2 ** (n - 1)
    spec["sample_size"] = factor * draw(st.sampled_from([1, 2])) if kind != "decoder" else 2
    if has_time:
        embedding = draw(st.sampled_from(names(TimeEmbedding)))
        time: dict[str, Any] = {"embedding": embedding, "injection": injection, "dim": 8}
        time["features"] = draw(st.sampled_from([4, 6, 7])) if embedding != "fourier" else 6
        if embedding == "learned":
            time["timesteps"] = 1000
        if embedding == "sinusoidal" and draw(st.booleans()):
            time |= {"flip_sin_to_cos": draw(st.booleans()), "freq_shift": draw(st.sampled_from([0, 1, 0.5])),
                     "max_period": draw(st.sampled_from([10000.0, 1000]))}
        if embedding == "fourier" and draw(st.booleans()):
            time |= {"scale": draw(st.sampled_from([1.0, 16])), "log": draw(st.booleans()),
                     "flip_sin_to_cos": draw(st.booleans())}
        if draw(st.booleans()):
            time["activation"] = draw(st.sampled_from(names(Activation)))
        if draw(st.booleans()):
            time["post_activation"] = draw(st.sampled_from(["none", "silu", "gelu"]))
        spec["time"] = time
        if draw(st.booleans()):
            spec["classes"] = 3
        if draw(st.booleans()):
            spec["conditions"] = draw(_conditions())
        spec["head"]["divide_by_timestep"] = embedding == "fourier" and draw(st.booleans())
        if (kind == "unet" and embedding != "learned" and not spec["head"]["divide_by_timestep"]
                and draw(st.booleans())):  # a denoiser of x
            spec["out_channels"] = spec["in_channels"]
            spec["preconditioning"] = draw(st.sampled_from([{"type": "edm"}, {"type": "edm", "sigma_data": 1.0},
                                                            {"type": "vp"}, {"type": "ve"}]))
            if embedding == "fourier":
                time["log"] = False  # c_noise is already a log (a fourier log of it is refused)
    resample = "upsample" if kind == "decoder" else "downsample"
    for lv in levels[:-1]:
        lv[resample] = draw(st.sampled_from(names(Upsample) if kind == "decoder" else names(Downsample)))
    if kind == "decoder":
        spec["decoder"] = {"levels": levels}
    else:
        spec["encoder"] = {"levels": levels, "asymmetric_padding": draw(st.booleans())}
        if kind == "unet":
            spec["decoder"] = {"upsample": draw(st.sampled_from(names(Upsample)))}
    _filters_where_they_apply(spec, levels, defaults, middle)
    if kind in ("unet", "encoder") and draw(st.booleans()):  # lucidrains' layout: widths changed in the resamplers
        resamplers = [lv.get("downsample", "conv") for lv in levels[:-1]] + [spec.get("decoder", {}).get("upsample")]
        if all(r not in ("avgpool", "maxpool", "filter") for r in resamplers):
            spec["channel_change"] = "resample"
    if kind == "unet" and draw(st.booleans()):
        spec["encoder"]["skips"] = "blocks"
    if kind == "unet" and draw(st.booleans()):
        spec["head"]["stem_block"] = True
    if kind in ("unet", "encoder") and middle["blocks"] and draw(st.booleans()):
        middle["channels"] = draw(st.sampled_from(CHANNELS))
    if kind in ("unet", "encoder") and has_time and draw(st.booleans()):  # Dance Diffusion's layout
        spec["time"] = {"embedding": "fourier", "features": 4, "log": False, "into": "input"}
        spec.pop("classes", None)
        spec.pop("conditions", None)
        spec["head"].pop("divide_by_timestep", None)
        if draw(st.booleans()):  # the first level normalises the input and features: 4 + 4 channels
            spec["stem"] = {"conv": False}
            spec["in_channels"] = spec["out_channels"] = 4
    if kind == "unet" and spec.get("channel_change") is None and draw(st.booleans()):
        spec["channel_change"] = "mirror"  # (a last attention at the next level's width keeps its heads: 1 or 2)
        for lv in levels:
            att = lv.get("attention")
            if isinstance(att, dict) and "head_dim" in att and "heads" not in att:
                lv["attention"] = {**{k: v for k, v in att.items() if k != "head_dim"}, "heads": 2}
        if draw(st.booleans()):
            spec["head"] = {"conv": False}  # the mirrored last level ends at out_channels (normalised: 4)
            spec["in_channels"] = spec["out_channels"] = 4
            spec.pop("preconditioning", None)
    if kind == "unet" and spec["encoder"].get("skips") is None and draw(st.booleans()):
        spec["encoder"]["skips"] = "levels"
    if kind in ("unet", "encoder") and draw(st.booleans()):
        middle["resample"] = True
    if n >= 2:  # NCSN++'s pyramids join at the resamplings: a side that has one
        if kind != "decoder" and draw(st.booleans()):
            spec["encoder"]["input_pyramid"] = draw(st.sampled_from(["none", "skip", "residual"]))
        if kind in ("unet", "autoencoder", "decoder") and draw(st.booleans()):
            spec.setdefault("decoder", {})["output_pyramid"] = draw(st.sampled_from(["none", "skip"]))
    if kind != "decoder" and draw(st.booleans()):  # a stem of its own width and kernel (a decoder's is its middle's)
        spec["stem"] = {"channels": draw(st.sampled_from(CHANNELS)), "kernel_size": draw(st.sampled_from([1, 3, 5, 7]))}
    if kind in ("autoencoder", "encoder", "decoder") and (kind == "autoencoder" or draw(st.booleans())):
        latent = draw(st.sampled_from([1, 2]))
        spec["latent"] = {"channels": latent, "scaling_factor": draw(st.sampled_from([1.0, 0.18215]))}
        if kind == "encoder":
            spec["out_channels"] = 2 * latent
        if kind == "decoder":
            spec["in_channels"] = latent
    if "reflect" in str(spec) or middle.get("resample"):  # positions to reflect, and the middle's own halving
        spec["sample_size"] = 2 ** (n - 1) * 8 if kind != "decoder" else 8
    attending = [a for a in [*(lv.get("attention") for lv in levels), middle.get("attention")]
                 if isinstance(a, dict) and a.get("type") in ("transformer", "joint")]
    attends = [a for a in attending if a.get("type") == "transformer"]
    joint = len(attends) < len(attending)  # a joint block needs the context
    if attending and (joint or draw(st.booleans())):
        spec["context_dim"] = draw(st.sampled_from([4, 6]))
        if draw(st.booleans()):
            spec["context_input_dim"] = draw(st.sampled_from([3, 5]))
        if attends and draw(st.booleans()):
            attends[0]["only_cross"] = True
    return spec


def _filters_where_they_apply(spec: dict[str, Any], levels: list[dict[str, Any]], defaults: dict[str, Any],
                               middle: dict[str, Any]) -> None:
    """A resample filter shapes avgpool and resblock resampling only: where any level resamples
    otherwise, the drawn filters go (so every drawn spec is valid)."""
    methods = [lv[k] for lv in levels for k in ("downsample", "upsample") if k in lv]
    if spec.get("model") in ("unet", "autoencoder"):  # a mirrored decoder: the side's method (default nearest)
        methods.append(spec.get("decoder", {}).get("upsample", "nearest"))
    if all(m in ("avgpool", "resblock") for m in methods):
        return
    for place in (*levels, defaults, middle):
        place.pop("resample_filter", None)


__all__ = ["setting_values", "specs"]
