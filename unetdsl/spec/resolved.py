"""The resolved spec: every level states every setting, channel flow included. It is the spine
of unetdsl: the compiler reads only this; artifacts store its own dump (`stored_json`, lossless:
nothing in it is inherited); its canonical JSON hashes to the spec id. The language form is a view
of it (`view()`: every setting written at every place), which resolves back to the same spec."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .settings import DEFAULTS, LEVEL_SETTINGS, TIME_SETTINGS
from .vocabulary import (
    NORM_KINDS,
    Activation,
    AttentionType,
    ChannelChange,
    ConditionInto,
    ConditionProject,
    Downsample,
    InputPyramid,
    ModelKind,
    NormType,
    Order,
    OutputPyramid,
    Preconditioning,
    Skips,
    TimeEmbedding,
    TimeInjection,
    Upsample,
)

# The stored form is marked (the key is not a language key, so no spec of the first stored form,
# the language view, carries it), and the id says which definition made it: ids of the first
# definition ("sha256:" + 16 hex digits of that language form's canonical JSON) are still read from
# files written before (unetdsl.stored).
FORM_KEY = "resolved"
FORM = 2
ID_PREFIX = "v2:sha256:"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ResolvedNorm(_Frozen):
    type: NormType
    groups: int | None  # a number for type group, None otherwise
    eps: float
    min_group_size: int = 0  # > 0: over C channels, min(groups, C // min_group_size) groups

    def groups_for(self, channels: int) -> int:
        """GroupNorm groups over `channels` (layer = 1 group, instance = 1 per channel)."""
        kind = NORM_KINDS[self.type].groups
        if kind == "given":
            assert self.groups is not None
            return min(self.groups, channels // self.min_group_size) if self.min_group_size else self.groups
        return 1 if kind == "one" else channels

    def view(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "eps": self.eps}
        if self.type == "group":
            data["groups"] = self.groups
            if self.min_group_size:
                data["min_group_size"] = self.min_group_size
        return data


class ResolvedTransformer(_Frozen):
    """What a `type: transformer` attention states besides heads and norm."""

    depth: int
    linear_projection: bool
    only_cross: bool
    upcast: bool
    norm_eps: float
    layer_norm_eps: float


class ResolvedJoint(_Frozen):
    """What a `type: joint` attention states besides heads and norm."""

    only_cross: bool  # keys and values from the context alone
    context_norm_groups: int  # a GroupNorm over the context's features first; 0: none


class ResolvedAttention(_Frozen):
    heads: int
    head_dim: int
    norm: bool
    type: AttentionType = "self"
    transformer: ResolvedTransformer | None = None  # type transformer only
    joint: ResolvedJoint | None = None  # type joint only
    residual_scale: float = 1.0  # (type self) the output, input + attention, times this
    placement: Literal["each", "last", "all"] = "each"  # after every ResBlock of a level, or its last only; all: middle
    memory: int = 0  # (self, linear) learned key/value slots
    qkv_bias: bool = True  # (self, linear) biases on q, k, v
    own_width: bool = False  # heads x head_dim both given: a width of its own, not the level's channels

    @property
    def width(self) -> int:
        """The attention's inner width, heads x head_dim (the level's channels unless own_width)."""
        return self.heads * self.head_dim

    def view(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "heads": self.heads, "norm": self.norm}
        if self.residual_scale != 1.0:
            data["residual_scale"] = self.residual_scale
        if self.placement != "each":
            data["placement"] = self.placement
        if self.own_width:
            data["head_dim"] = self.head_dim
        if self.memory:
            data["memory"] = self.memory
        if not self.qkv_bias:
            data["qkv_bias"] = False
        for own in (self.transformer, self.joint):
            if own is not None:
                data |= own.model_dump()
        return data


class ResolvedBlock(_Frozen):
    """One ResBlock's channel flow: (B, in + skip, ...) -> (B, out, ...)."""

    in_channels: int
    skip_channels: int  # channels concatenated from the encoder (U-Net decoder), else 0
    out_channels: int
    mid_channels: int = 0  # conv1's output where not out_channels (the width changes in conv2: channel_change mirror)


class ResolvedSettings(_Frozen):
    """What every level and the middle state explicitly."""

    norm: ResolvedNorm
    activation: Activation
    order: Order
    dropout: float
    attention: ResolvedAttention | None
    conv_bias: bool
    resample_projection: bool = False  # a resampling ResBlock's shortcut is a 1x1 conv even at equal channels
    resample_filter: list[float] = [1.0, 1.0]  # avgpool / resblock resampling's 1-D filter ([1, 1]: the box)
    residual_scale: float = 1.0  # each ResBlock's output times this
    time_activation: bool = True  # the activation on the time embedding inside each ResBlock
    time_at: Literal["second", "first"] = "second"  # which norm of each ResBlock the embedding joins
    kernel_size: int = 3  # each ResBlock's two convolutions
    shortcut_bias: bool = True  # the 1x1 shortcut conv's bias
    resample_padding: Literal["zeros", "reflect"] = "zeros"  # how the resample filter pads

    def settings_view(self) -> dict[str, Any]:
        """Every setting of this place, written out: nothing left to inherit."""
        data: dict[str, Any] = {"norm": self.norm.view(), **{name: getattr(self, name) for name in LEVEL_SETTINGS}}
        if self.attention is not None:
            data["attention"] = self.attention.view()
        return data


class ResolvedLevel(ResolvedSettings):
    channels: int
    blocks: list[ResolvedBlock]
    # How the level ends: encoder levels downsample, decoder levels upsample, the last neither.
    downsample: Downsample | None = None
    upsample: Upsample | None = None
    # channel_change resample: the width the level ends at (its resampler's, or its last 3x3 conv's); 0: its own
    end_channels: int = 0

    @property
    def out_channels(self) -> int:
        """What the level gives the next part."""
        return self.end_channels or self.channels


class ResolvedTime(_Frozen):
    embedding: TimeEmbedding
    features: int  # width of the raw embedding fed to the MLP
    dim: int  # width every ResBlock receives
    injection: TimeInjection
    flip_sin_to_cos: bool
    freq_shift: float  # sinusoidal only (0 otherwise)
    max_period: float  # sinusoidal only
    scale: float  # fourier only
    log: bool  # fourier only
    timesteps: int  # learned only (0 otherwise)
    activation: Activation  # between the MLP's linear layers
    post_activation: Activation | Literal["none"] = "none"  # on the embedding once the conditions joined it
    into: Literal["blocks", "input"] = "blocks"  # input: the features concatenated to the input, no MLP

    def view(self) -> dict[str, Any]:
        data: dict[str, Any] = {"embedding": self.embedding, "features": self.features, "dim": self.dim}
        if self.embedding == "sinusoidal":
            data |= {"flip_sin_to_cos": self.flip_sin_to_cos, "freq_shift": self.freq_shift,
                     "max_period": self.max_period}
        elif self.embedding == "fourier":
            data |= {"scale": self.scale, "log": self.log, "flip_sin_to_cos": self.flip_sin_to_cos}
        else:
            data["timesteps"] = self.timesteps
        if self.into == "input":  # no MLP: its width and settings do not apply
            return {k: v for k, v in data.items() if k != "dim"} | {"into": self.into}
        return data | {name: getattr(self, name) for name in TIME_SETTINGS}


class ResolvedConditionInput(_Frozen):
    name: str
    width: int
    sinusoid: int  # features per value through a sinusoid; 0: the values as they are
    flip_sin_to_cos: bool  # the sinusoid's settings (the time section's when sinusoidal); unused at 0
    freq_shift: float
    max_period: float
    scale: float = 1.0  # the values times this first

    @property
    def embedded_width(self) -> int:
        return self.width * (self.sinusoid or 1)

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "width": self.width, **({"sinusoid": self.sinusoid} if self.sinusoid else {}),
                **({"scale": self.scale} if self.scale != 1.0 else {})}


class ResolvedCondition(_Frozen):
    inputs: list[ResolvedConditionInput]  # empty for a pooled context
    pool_heads: int = 0  # > 0: the group is the context attention-pooled with this many heads (no inputs)
    pool_width: int = 0  # ...the context's width as given
    project: ConditionProject
    bias: bool  # linear only (an mlp has biases; none has no weights)
    activation: Activation  # mlp only
    into: ConditionInto
    width: int  # what it is added to: the time embedding's dim (into time) or its features (into features)

    @property
    def joined_width(self) -> int:
        """The inputs concatenated: (B, sum of embedded widths); a pooled context's width."""
        return self.pool_width if self.pool_heads else sum(i.embedded_width for i in self.inputs)

    def view(self) -> dict[str, Any]:
        if self.pool_heads:
            return {"pool_context": {"heads": self.pool_heads}, "into": self.into}
        data: dict[str, Any] = {"inputs": [i.view() for i in self.inputs], "project": self.project, "into": self.into}
        if self.project == "linear":
            data["bias"] = self.bias
        if self.project == "mlp":
            data["activation"] = self.activation
        return data


class ResolvedLatent(_Frozen):
    channels: int
    quant_conv: bool
    post_quant_conv: bool
    scaling_factor: float


class ResolvedControlNet(_Frozen):
    hint_channels: int
    embedding: list[int]  # the hint embedding's stage widths; each after the first halves the hint's size

    @property
    def hint_factor(self) -> int:
        """How much larger the hint is than the input x: 2 per stride-2 conv of the embedding."""
        return 2 ** (len(self.embedding) - 1)


class ResolvedPreconditioning(_Frozen):
    type: Preconditioning
    sigma_data: float  # edm only (its default elsewhere)
    beta_d: float  # vp only
    beta_min: float  # vp only
    timesteps: int  # vp only

    def view(self) -> dict[str, Any]:
        own = {"edm": ("sigma_data",), "vp": ("beta_d", "beta_min", "timesteps"), "ve": ()}[self.type]
        return {"type": self.type, **{k: getattr(self, k) for k in own}}


class ResolvedMiddle(ResolvedSettings):
    channels: int
    blocks: int
    in_channels: int = 0  # what its first ResBlock takes where not `channels` (0: channels)
    resample: bool = False  # its blocks run one resolution lower: halved first, doubled last


class ResolvedHead(_Frozen):
    in_channels: int
    conv: bool = True  # false: no head (the last decoder block gives the output)
    stem_block: ResolvedSettings | None = None  # a ResBlock on cat(features, stem output) first (lucidrains)
    norm: ResolvedNorm | None  # None: conv only
    activation: Activation
    kernel_size: int
    divide_by_timestep: bool


class ResolvedSpec(_Frozen):
    unetdsl: int
    name: str
    description: str | None
    model: ModelKind
    dims: int
    in_channels: int
    out_channels: int
    sample_size: list[int]
    time: ResolvedTime | None
    classes: int | None
    context_dim: int | None = None  # width of the context the transformer blocks attend to
    context_input_dim: int | None = None  # the context's width as given, projected to context_dim first
    latent: ResolvedLatent | None = None  # autoencoders and their halves
    conditions: list[ResolvedCondition] = []  # named vector conditions, in the order they are added
    controlnet: ResolvedControlNet | None = None  # model controlnet: what it adds to the U-Net it controls
    stem_channels: int  # conv_in: in_channels -> stem_channels
    stem_kernel: int = 3  # conv_in's kernel (padding kernel // 2)
    stem_conv: bool = True  # false: no conv_in (the first level takes the input, time features included)
    encoder: list[ResolvedLevel]
    middle: ResolvedMiddle
    decoder: list[ResolvedLevel]
    head: ResolvedHead
    zero_out: bool
    center_input: bool
    asymmetric_padding: bool  # strided-conv downsampling pads right/bottom only
    input_pyramid: InputPyramid = "none"  # NCSN++'s progressive input: joins the features after each downsample
    output_pyramid: OutputPyramid = "none"  # ...and output: a head at every decoder level, summed upwards
    preconditioning: ResolvedPreconditioning | None = None  # the denoiser around the network: t is sigma
    channel_change: ChannelChange = "block"  # where widths change between levels
    skips: Skips = "every"  # what a U-Net's encoder keeps for its decoder

    # --- derived facts the compiler and the summary share ---
    @property
    def downsampling_factor(self) -> int:
        """How much the input must be divisible by: 2 per encoder downsample (and the middle's own)."""
        return self._encoder_factor * (2 if self.middle.resample else 1)

    @property
    def smallest_multiple(self) -> int:
        """The fewest positions per side the deepest part may have (the input is downsampling_factor times
        it): 1, or more where reflect padding (pad < size) needs them at some resampling."""
        for k in range(1, 65):
            if self._reflect_fits(k * self.downsampling_factor):
                return k
        return 65

    def _reflect_fits(self, size: int) -> bool:
        def fits(place: ResolvedSettings, n: int, up: bool) -> bool:
            if place.resample_padding != "reflect":
                return True
            p = (len(place.resample_filter) - 2) // 2
            return n > ((p + 1) // 2 if up else p)
        n = size
        for lv in self.encoder:
            if lv.downsample is not None:
                if not fits(lv, n, up=False):
                    return False
                n //= 2
        if self.middle.resample and not (fits(self.middle, n, up=False) and fits(self.middle, n // 2, up=True)):
            return False
        for lv in self.decoder:
            if lv.upsample is not None:
                if not fits(lv, n, up=True):
                    return False
                n *= 2
        return True

    @property
    def _encoder_factor(self) -> int:
        return 2 ** sum(1 for lv in self.encoder if lv.downsample is not None)

    @property
    def condition_inputs(self) -> list[ResolvedConditionInput]:
        """Every named condition the model takes in `cond`, in declaration order."""
        return [i for c in self.conditions for i in c.inputs]

    @property
    def output_size(self) -> list[int]:
        up = 2 ** sum(1 for lv in self.decoder if lv.upsample is not None)
        return [s * up // self._encoder_factor for s in self.sample_size]  # (the middle's resampling cancels)

    @property
    def residual_channels(self) -> list[int]:
        """A U-Net's (or its ControlNet's) residuals: the channels of every skip, in the order they
        are made (the stem, each encoder block, each downsample), then the middle's output."""
        every = self.skips == "every"
        skips = [self.stem_channels] if every else []
        for lv in self.encoder:
            blocks = lv.blocks[-1:] if self.skips == "levels" else lv.blocks  # levels: each level's last output
            skips += [b.out_channels for b in blocks] + ([lv.out_channels] if lv.downsample and every else [])
        return [*skips, self.middle.channels]

    @property
    def residual_scales(self) -> list[int]:
        """How much smaller than the input each residual is per side (residual_channels' order)."""
        every = self.skips == "every"
        scales, at = [1] if every else [], 1
        for lv in self.encoder:
            scales += [at] * (1 if self.skips == "levels" else len(lv.blocks))
            if lv.downsample is not None:
                at *= 2
                if every:
                    scales.append(at)
        return [*scales, at]

    @property
    def hint_size(self) -> list[int]:
        """A ControlNet's hint image's spatial size at the sample size."""
        assert self.controlnet is not None
        return [s * self.controlnet.hint_factor for s in self.sample_size]

    def controlled(self) -> ResolvedSpec:
        """The U-Net a ControlNet spec describes (its own spec, as a U-Net's resolves)."""
        if self.controlnet is None:
            raise ValueError(f"controlled() of a {self.model}: only a ControlNet controls a U-Net")
        return self.model_copy(update={"model": "unet", "controlnet": None})

    def part(self, half: str) -> ResolvedSpec:
        """One half of an autoencoder as a standalone model of its own (what deployments ship: the
        decoder alone), with the same weights' names under `encoder.`/`decoder.` of the whole:
        "encoder": x -> the posterior's moments (B, 2 x latent, *S/f), quant conv included;
        "decoder": z -> x (B, out, *S), post-quant conv included."""
        if self.model != "autoencoder" or self.latent is None or half not in ("encoder", "decoder"):
            raise ValueError(f"part({half!r}) of a {self.model}: only an autoencoder has an encoder and a decoder part")
        lat = self.latent
        if half == "encoder":
            return self.model_copy(update={
                "model": "encoder", "name": f"{self.name[:56]}-encoder", "out_channels": 2 * lat.channels, "decoder": [],
                "head": self.head.model_copy(update={"in_channels": self.middle.channels}),
                "latent": lat.model_copy(update={"post_quant_conv": False}), "output_pyramid": "none",
            })
        return self.model_copy(update={
            "model": "decoder", "name": f"{self.name[:56]}-decoder", "in_channels": lat.channels, "encoder": [],
            "stem_channels": self.middle.channels,
            "sample_size": [s // self.downsampling_factor for s in self.sample_size],
            "latent": lat.model_copy(update={"quant_conv": False}), "asymmetric_padding": False,
            "input_pyramid": "none",
        })

    # --- the stored form, the view and the id ---------------------------------------------------
    def stored_json(self) -> str:
        """What artifacts store: this spec's own dump, marked with the form it is in; `from_stored`
        reads it back. Nothing in it is inherited, so it loses nothing: a value is left out only
        where it equals its field's default here, which reading fills in again. That is how the
        form grows: a setting added later gets a field default equal to the behaviour before it,
        so the files and ids of every spec that does not use it stay as they were."""
        return json.dumps({FORM_KEY: FORM, **self.model_dump(mode="json", exclude_defaults=True)}, sort_keys=True,
                          allow_nan=False)

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> ResolvedSpec:
        """The resolved spec a `stored_json` mapping holds; pydantic's ValidationError if it holds
        none. (Whether it also passes every rule of the language is `unetdsl.stored`'s check.)"""
        fields = {k: v for k, v in data.items() if k != FORM_KEY}
        return cls.model_validate_json(json.dumps(fields, allow_nan=False))

    def view(self) -> dict[str, Any]:
        """This spec in the language, every setting written at every place (no `defaults` to
        inherit from, no mirrored decoder): what `unetdsl resolve` prints and converters compare.
        Resolving it gives this spec back (`unetdsl.stored` checks that of every stored spec)."""
        data: dict[str, Any] = {"unetdsl": self.unetdsl, "name": self.name}
        if self.description is not None:
            data["description"] = self.description
        data |= {"model": self.model, "dims": self.dims, "in_channels": self.in_channels,
                 "out_channels": self.out_channels, "sample_size": list(self.sample_size)}
        if self.time is not None:
            data["time"] = self.time.view()
        if self.classes is not None:
            data["classes"] = self.classes
        if self.context_dim is not None:
            data["context_dim"] = self.context_dim
        if self.context_input_dim is not None:
            data["context_input_dim"] = self.context_input_dim
        if self.conditions:
            data["conditions"] = [c.view() for c in self.conditions]
        if self.latent is not None:
            data["latent"] = self.latent.model_dump()
        first = (self.encoder or self.decoder)[0].channels if (self.encoder or self.decoder) else self.stem_channels
        stem: dict[str, Any] = {k: v for k, v, default in (("channels", self.stem_channels, first),
                                                            ("kernel_size", self.stem_kernel, 3)) if v != default}
        if not self.stem_conv:  # (its width is the input's: nothing else to write)
            stem = {"conv": False}
        if stem:
            data["stem"] = stem
        if self.controlnet is not None:
            data["controlnet"] = self.controlnet.model_dump()
        if self.preconditioning is not None:
            data["preconditioning"] = self.preconditioning.view()
        if self.channel_change != "block":
            data["channel_change"] = self.channel_change
        if self.head.norm is not None:  # once every level is explicit, defaults only feed the head's norm
            data["defaults"] = {"norm": self.head.norm.view()}
        if self.head.stem_block is not None:  # ...and the head's stem block (the same norm: both are defaults')
            data["defaults"] = self.head.stem_block.settings_view()
        if self.encoder:
            data["encoder"] = _side_view(self.encoder, "downsample") | {"asymmetric_padding": self.asymmetric_padding}
            if self.input_pyramid != "none":
                data["encoder"]["input_pyramid"] = self.input_pyramid
            if self.skips != "every":
                data["encoder"]["skips"] = self.skips
        data["middle"] = {"blocks": self.middle.blocks, **self.middle.settings_view()}
        if self.encoder and self.middle.channels != self.encoder[-1].channels:
            data["middle"]["channels"] = self.middle.channels
        if self.middle.resample:
            data["middle"]["resample"] = True
        if self.decoder:
            data["decoder"] = _side_view(self.decoder, "upsample")
            if self.output_pyramid != "none":
                data["decoder"]["output_pyramid"] = self.output_pyramid
        data["head"] = {"norm": self.head.norm is not None, "kernel_size": self.head.kernel_size,
                        "activation": self.head.activation, "divide_by_timestep": self.head.divide_by_timestep}
        if not self.head.conv:  # (nothing else of a head applies)
            data["head"] = {}
        if not self.head.conv:
            data["head"]["conv"] = False
        if self.head.stem_block is not None:
            data["head"]["stem_block"] = True  # (its settings are the defaults': every level's are written)
        data["init"] = {"zero_out": self.zero_out}
        data["center_input"] = self.center_input
        return data

    def canonical_json(self) -> str:
        """Sorted keys, no spaces: the byte string the spec id hashes, the stored form without
        `name` and `description` (they do not change the function the model computes)."""
        data = self.model_dump(mode="json", exclude={"name", "description"}, exclude_defaults=True)
        return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)

    @property
    def spec_id(self) -> str:
        return ID_PREFIX + hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]


def _side_view(levels: list[ResolvedLevel], resample: str) -> dict[str, Any]:
    """An encoder's or decoder's mapping: every level explicit (channels, blocks, its settings and
    how it ends), and the side's `downsample`/`upsample`, which no level reads once each is written."""
    side = "encoder" if resample == "downsample" else "decoder"
    entries = []
    for lv in levels:
        entry: dict[str, Any] = {"channels": lv.channels, "blocks": len(lv.blocks), **lv.settings_view()}
        if getattr(lv, resample) is not None:
            entry[resample] = getattr(lv, resample)
        entries.append(entry)
    return {resample: getattr(levels[0], resample) or DEFAULTS[f"{side}.{resample}"], "levels": entries}
