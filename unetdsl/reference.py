"""The language reference, `docs/language.md`, generated from the language itself: every key of
every section with its type, bounds and description (read from the JSON Schema, which pydantic
generates from the models: one source), the time-embedding formulas, and a catalogue of errors
made by running the real validator on small wrong specs. `make docs` writes it; a test fails when
the committed copy is stale, as for the schema. No torch here."""

from __future__ import annotations

import os
from typing import Any

from .errors import SpecError
from .schema import generate_schema

# sections in reading order: (title, schema location, what it is)
SECTIONS: list[tuple[str, str, str]] = [
    ("The file", "", "The top level of a spec file."),
    ("defaults, and every level's settings", "LevelSettings",
     "Settings every encoder level, decoder level and the middle inherit unless they set their own."),
    ("norm", "NormSpec", "A normalisation layer (under `defaults`, a level, or the middle)."),
    ("attention", "AttentionSpec",
     "Self-attention, latent diffusion's transformer block (`type: transformer`), DeepFloyd IF's joint attention "
     "(`type: joint`) or lucidrains' linear attention (`type: linear`), on a level or the middle. "
     "`attention: true` is `{}` (one head of self-attention, the defaults); `attention: false` or null is none."),
    ("encoder", "EncoderSpec", "The downsampling path (`model: unet` and `model: encoder`)."),
    ("encoder.levels[i]", "EncoderLevel", "One resolution of the encoder: its settings, and the level settings above."),
    ("middle", "MiddleSpec", "The blocks at the lowest resolution."),
    ("decoder", "DecoderSpec", "The upsampling path (`model: unet`, mirrored when omitted, and `model: decoder`)."),
    ("decoder.levels[i]", "DecoderLevel", "One resolution of the decoder, lowest resolution first."),
    ("time (embedding: sinusoidal)", "SinusoidalTime", "Sinusoidal timestep features (DDPM, ADM, LDM, SD)."),
    ("time (embedding: fourier)", "FourierTime", "Random Fourier features of the noise level (score SDE, NCSN++)."),
    ("time (embedding: learned)", "LearnedTime", "A learned table, one row per integer timestep."),
    ("conditions[i]", "ConditionSpec",
     "A group of named vector conditions joined into the time embedding: the model takes them as "
     "`model(x, t, cond={name: tensor})`, each (B, width). SDXL's added conditions are one group: "
     "`[{name: text_embeds, width: 1280}, {name: time_ids, width: 6, sinusoid: 256}]`, project mlp, into time."),
    ("conditions[i].inputs[j]", "ConditionInput", "One named input of a condition group."),
    ("conditions[i].pool_context", "PoolSpec", "Instead of inputs: the context attention-pooled into one vector "
     "(DeepFloyd IF's pooled text: `conditions: [{pool_context: {heads: 64}}]`)."),
    ("stem", "StemSpec", "The stem convolution: its own width (EDM's SongUNet: model_channels below a wider level 0) "
     "and kernel (lucidrains' 7x7; diffusers' conv_in_kernel)."),
    ("preconditioning", "PreconditioningSpec",
     "The denoiser around the network (Karras et al. 2022, table 1): `model(x, sigma)` returns "
     "c_skip x + c_out F(c_in x, c_noise), F the network the rest of the spec describes, with the same weights "
     "and names (EDM's EDMPrecond: `{type: edm, sigma_data: 0.5}`, also EDM2's Precond; VPPrecond: `vp`; "
     "VEPrecond: `ve`). `center_input` (diffusers' x -> 2x - 1) and `head.divide_by_timestep` (diffusers' score "
     "models) stay beside it: they are diffusers' config keys, converted one to one, and neither is of the form "
     "c_skip x + c_out F(c_in x) (a shift; no sigma-dependent input scaling)."),
    ("head", "HeadSpec", "The output head."),
    ("init", "InitSpec", "How the weights start."),
    ("latent", "LatentSpec", "An autoencoder's latent space (`model: autoencoder`; on `model: encoder` or "
     "`decoder`, the half of an autoencoder it is)."),
    ("controlnet", "ControlNetSpec",
     "What a ControlNet adds to the U-Net the rest of the spec describes (`model: controlnet`; write it as "
     "`extends: the-unet.yaml` plus this section): `controlnet(x, t, hint=image, context=c, cond=...)` returns one "
     "residual per skip of that U-Net, then the middle's, which `unet(x, t, context=c, residuals=...)` adds. "
     "Several ControlNets: sum their residuals one by one."),
]

FORMULAS = """\
## Time embeddings: the formulas

Every embedding ends in the same MLP, `linear(features -> dim) -> act -> linear(dim -> dim)` (act:
`time.activation`, SiLU unless told),
whose output every ResBlock projects and adds to its features (`injection: add`) or uses as a
scale and shift after its second norm (`injection: scale_shift`, guided-diffusion's
`use_scale_shift_norm`). A class embedding (`classes`), if any, is added to the MLP's output.
Condition groups (`conditions`) join in the order written: each group's inputs concatenated (an
input with `sinusoid: F` gives width x F values: each value through the sinusoid below, with the
time section's settings), projected (`mlp`, `linear` or `none`), and added to the features before
the MLP (`into: features`, EDM's label vectors) or to the MLP's output (`into: time`, diffusers'
`add_embedding` and `class_embedding`).

**sinusoidal** (`features` = F, half = F // 2, computed in float32 whatever the model's dtype):

    f_i = exp(-ln(max_period) * i / (half - freq_shift))      i = 0 .. half-1
    emb = [sin(t * f_i), cos(t * f_i)]                        flip_sin_to_cos: [cos, sin]
    (odd F: one zero column appended)

| codebase | flip_sin_to_cos | freq_shift | max_period |
| --- | --- | --- | --- |
| DDPM (Ho et al., TF; diffusers `google/ddpm-*`) | false | 1 | 10000 |
| guided-diffusion (ADM), latent-diffusion UNets | true | 0 | 10000 |
| diffusers UNet2DConditionModel (Stable Diffusion) | true (`flip_sin_to_cos`) | 0 (`freq_shift`) | 10000 |
| diffusers `Timesteps(num_channels, flip_sin_to_cos, downscale_freq_shift)` | as given | `downscale_freq_shift` | 10000 |

**fourier** (score SDE's Gaussian Fourier projection; `features` = F, n = F // 2):

    w ~ N(0, scale^2), n fixed random frequencies (a non-trainable parameter)
    x = ln(t) if log else t                                   (t is the noise level sigma > 0)
    emb = [sin(2 pi x w), cos(2 pi x w)]                      flip_sin_to_cos: [cos, sin]

diffusers `GaussianFourierProjection(embedding_size=n, scale, log=True, flip_sin_to_cos)`;
NCSN++ uses scale 16 and `head: {divide_by_timestep: true}` (the output divided by sigma).

**learned**: `emb = table[t]`, an `nn.Embedding(timesteps, features)` indexed by the integer timestep.
"""

# The error catalogue: each kind of problem, a small spec that has it, and how to fix it. The
# messages are produced by the validator when the reference is generated, so they are real.
_BASE = """\
unetdsl: 1
name: example
in_channels: 3
out_channels: 3
sample_size: 32
time: {embedding: sinusoidal, dim: 128}
defaults: {norm: {groups: 8}}
encoder:
  asymmetric_padding: false
  levels:
    - {channels: 32, blocks: 2}
    - {channels: 64, blocks: 2, attention: {heads: 4}}
"""
CATALOGUE: list[tuple[str, str, str, str]] = [
    ("Unknown key", "levels:\n    - {channels: 32, blocks: 2}", "levels:\n    - {channels: 32, block: 2}",
     "Fix the name: the message lists the keys allowed there and the closest one."),
    ("Another tool's name", "sample_size: 32", "sample_size: 32\nlayers_per_block: 2",
     "The hint says where the setting lives in unetdsl (diffusers, guided-diffusion and latent-diffusion names)."),
    ("Wrong type", "dim: 128}", "dim: '128'}", "Write the number without quotes."),
    ("Out of range", "{channels: 32, blocks: 2}", "{channels: 32, blocks: 0}", "Use a value within the bounds shown."),
    ("Not an allowed value", "embedding: sinusoidal", "embedding: positional",
     "Use one of the names listed; the hint names unetdsl's word for another tool's."),
    ("Missing key", "out_channels: 3\n", "", "Add the key; the hint says what it is."),
    ("YAML 1.1 boolean", "asymmetric_padding: false", "asymmetric_padding: no",
     "Specs are YAML 1.2: only true and false are booleans."),
    ("Duplicate key", "in_channels: 3", "in_channels: 3\nin_channels: 4", "Keep one: YAML would silently keep the last."),
    ("Groups that do not divide the channels", "norm: {groups: 8}", "norm: {groups: 12}",
     "Choose groups dividing every channel count the norm sees, or write groups: auto."),
    ("Heads that do not divide the channels", "attention: {heads: 4}", "attention: {heads: 5}",
     "Choose heads (or head_dim) dividing the level's channels."),
    ("A decoder level that does not consume its skips", "name: example",
     "name: example\ndecoder:\n  levels:\n    - {channels: 64, blocks: 2}\n    - {channels: 32, blocks: 3}",
     "A U-Net decoder level has its encoder level's blocks + 1 (one per skip): omit blocks, or match it."),
    ("A size the model cannot halve", "sample_size: 32", "sample_size: 33",
     "sample_size must be a multiple of 2 per downsampling level."),
    ("A missing base spec", "name: example", "name: example\nextends: base.yaml",
     "extends names a spec file, relative to this one."),
]


def _type(prop: dict[str, Any]) -> str:
    """A short human type for a JSON Schema property."""
    if "$ref" in prop:
        return "mapping: " + _section_link(prop["$ref"].rsplit("/", 1)[-1])
    if "oneOf" in prop:  # the time section's discriminated union
        return " or ".join(_type(p) for p in prop["oneOf"])
    if "anyOf" in prop:
        parts = [_type(p) for p in prop["anyOf"] if p.get("type") != "null"]
        return " or ".join(dict.fromkeys(parts)) + (" or null" if any(p.get("type") == "null" for p in prop["anyOf"]) else "")
    if "const" in prop:
        return repr(prop["const"]).replace("'", "`")
    if "enum" in prop:
        return " | ".join(f"`{v}`" for v in prop["enum"])
    kind = prop.get("type", "any")
    bounds = []
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in prop:
            bounds.append(f"{sign} {prop[key]:,}" if isinstance(prop[key], int) else f"{sign} {prop[key]}")
    if kind == "array":
        size = ""
        if "minItems" in prop or "maxItems" in prop:
            size = f", {prop.get('minItems', 0)}..{prop.get('maxItems', 'n')} items"
        return f"list of ({_type(prop.get('items', {}))}){size}"
    if kind == "string" and "pattern" in prop:
        return "string matching `" + prop["pattern"] + "`"
    text = {"integer": "whole number", "number": "number", "boolean": "true/false", "string": "string"}.get(kind, kind)
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _section_link(name: str) -> str:
    for title, location, _ in SECTIONS:
        if location == name:
            anchor = title.lower().replace(" ", "-").replace(".", "").replace("[", "").replace("]", "").replace(
                ",", "").replace("(", "").replace(")", "").replace(":", "").replace("'", "")
            return f"[{title}](#{anchor})"
    return name


def _table(properties: dict[str, Any], required: list[str]) -> list[str]:
    rows = ["| key | type | meaning |", "| --- | --- | --- |"]
    for key, prop in properties.items():
        description = " ".join(str(prop.get("description", "")).split()).replace("|", "\\|")
        name = f"`{key}`" + (" (required)" if key in required else "")
        rows.append(f"| {name} | {_type(prop).replace('|', chr(92) + '|')} | {description} |")
    return rows


def _example(title: str, good: str, bad: str, fix: str) -> list[str]:
    from .frontend import resolve_spec

    assert good in _BASE, title
    text = _BASE.replace(good, bad, 1)
    try:
        resolve_spec(text)
        raise AssertionError(f"catalogue example {title!r} validates")
    except SpecError as exc:
        shown = "\n".join(p.render() for p in exc.problems[:1])
    shown = shown.replace(os.path.join(os.getcwd(), ""), "./")  # paths as the reader's would look
    return [f"### {title}", "", f"{fix}", "", "```", shown.replace("<string>", "spec.yaml"), "```", ""]


def reference_text() -> str:
    schema = generate_schema()
    defs = schema["$defs"]
    lines = [
        "# The unetdsl language, format 1",
        "",
        "<!-- generated by `make docs` (unetdsl/reference.py) from the language's models; do not edit -->",
        "",
        "A spec is a YAML 1.2 file (or the same mapping as a dict). Unknown keys are errors, every value",
        "is checked, and every problem is reported with `file:line:col`. Omitted settings take the",
        "defaults stated below; `unetdsl resolve SPEC` prints the spec with all of them written out.",
        "The JSON Schema of this language is `schemas/unetdsl.schema.json`.",
        "",
    ]
    for title, location, what in SECTIONS:
        node = schema if not location else defs[location]
        lines += [f"## {title}", "", what, ""]
        extra = " ".join(str(node.get("description", "")).split())
        if location and extra:
            lines += [extra, ""]
        lines += _table(node.get("properties", {}), node.get("required", schema.get("else", {}).get("required", []))
                        if not location else node.get("required", []))
        lines.append("")
    lines += [FORMULAS, "## Errors: a catalogue", "",
              "Each kind of problem, made on a small spec (`_BASE` in `unetdsl/reference.py`), as the validator",
              "reports it, and how to fix it.", ""]
    for entry in CATALOGUE:
        lines += _example(*entry)
    return "\n".join(lines).rstrip() + "\n"
