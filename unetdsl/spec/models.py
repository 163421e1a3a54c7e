"""The unetdsl language: pydantic v2 models. Strict types, no unknown keys, bounds everywhere.

These models check *types*; rules that relate several fields (groups divide channels, the
decoder mirrors the encoder, ...) live in `unetdsl.resolve`, the single gate every spec passes
before the compiler sees it. A `null` (or absent) level setting means "inherit from defaults".
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from .settings import DEFAULTS, TIME_SETTINGS, describe, doc
from .vocabulary import (
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
    TimeInjection,
    Upsample,
)

FORMAT_VERSION = 1
MAX_CHANNELS = 8192
# Caps are the language's sanity bounds, not the machine's: what a machine can build is decided by the
# resource guard (resources.py) from the estimate. 16 levels and 2^20 positions per side admit 1D audio
# U-Nets of 13 levels on 65,536 samples and more.
MAX_LEVELS = 16
MAX_SAMPLE_SIZE = 2**20
MAX_BLOCKS = 16
MAX_CONDITIONS = 16  # named condition inputs in all, over every group
MAX_CONDITION_WIDTH = 65536
# names the model's own arguments take (and ONNX's input names): a condition may not take them
RESERVED_CONDITION_NAMES = ("x", "t", "y", "context", "cond")


def _refuse_bool(value: object) -> object:
    # pydantic's Literal[1] accepts `true` (True == 1) even in strict mode; JSON Schema does not.
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


NoBool = BeforeValidator(_refuse_bool)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False)


Channels = Annotated[int, Field(ge=1, le=MAX_CHANNELS)]
Blocks = Annotated[int, Field(ge=1, le=MAX_BLOCKS)]
# a U-Net decoder level has one block more than its encoder level (one per skip), so its bound is one more
DecoderBlocks = Annotated[int, Field(ge=1, le=MAX_BLOCKS + 1)]


class NormSpec(StrictModel):
    """Normalisation layer. `group` with `groups`; `layer` = one group; `instance` = a group per
    channel; `batch` normalises over the batch (allowed, but warned about: its statistics differ
    between training and sampling)."""

    type: NormType | None = Field(None, description=doc(
        "norm.type", "group | layer | instance | batch | rms (lucidrains' RMSNorm: x / max(|x|, eps) * g * sqrt(C), "
        "|x| the norm over the channels at each position; eps 1e-12 there)."))
    groups: Annotated[int, Field(ge=1, le=MAX_CHANNELS)] | Literal["auto"] | None = Field(
        None,
        description=doc("norm.groups", "GroupNorm groups: a number dividing every channel count it normalises, or "
                        "'auto' (the largest common divisor <= 32). Only for type: group."),
    )
    eps: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(None, description=doc("norm.eps", "Added to the variance."))
    min_group_size: Annotated[int, Field(ge=0, le=MAX_CHANNELS)] | None = Field(
        None, description=doc("norm.min_group_size", "At least this many channels a group: over C channels the "
                              "groups are min(groups, C // min_group_size) (EDM and ADM: groups 32, "
                              "min_group_size 4); 0: groups as given. Only for type: group."))


class AttentionSpec(StrictModel):
    """Attention over all positions after each ResBlock of the level. `type: self` is multi-head
    self-attention (diffusers' AttnDownBlock2D / Attention: norm, q/k/v/out projections, residual).
    `type: joint` is one attention over the positions' keys and values and the context's (diffusers'
    SimpleCrossAttn blocks, DeepFloyd IF): norm, q from the positions, k/v from the positions and
    (add_k_proj/add_v_proj) from the context, concatenated, out projection, residual; biases everywhere.
    `type: transformer` is latent diffusion's block (ldm's SpatialTransformer, diffusers'
    Transformer2DModel): norm, proj_in, `depth` x [LayerNorm -> self-attention, LayerNorm ->
    cross-attention to the context (when the spec has context_dim), LayerNorm -> GEGLU
    feed-forward (4 x channels)], proj_out, residual; q/k/v without bias.
    `type: linear` is lucidrains' LinearAttention (norm, q/k/v, softmax of q over each head's features
    and of k over the positions, out = q (k^T v), out projection, the level's norm, residual).
    Give `heads` or `head_dim`; both (self and linear only) give the attention a width of its own,
    heads x head_dim (lucidrains). Self-attention with neither has one head; a transformer block must
    state one (its weights do not say how many heads it has)."""

    type: AttentionType | None = Field(None, description=doc("attention.type", "self | transformer | joint | linear "
                                       "(lucidrains' LinearAttention: q softmaxed over each head's features, k over "
                                       "the positions, out = (k v^T)^T q, its output projection followed by the "
                                       "level's norm; cost linear in the positions)."))

    heads: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        None, description="Number of heads; must divide channels (unless head_dim is given too).")
    head_dim: Annotated[int, Field(ge=1, le=MAX_CHANNELS)] | None = Field(
        None, description="Channels per head; must divide channels (heads = channels / head_dim). Both heads and "
        "head_dim: attention of its own width heads x head_dim, projected from and back to the level's channels "
        "(lucidrains: 4 heads x 32 at any width). self and linear only."
    )
    memory: Annotated[int, Field(ge=0, le=1024)] | None = Field(
        None, description=doc("attention.memory", "Learned key/value slots every query also attends to (lucidrains' "
                              "mem_kv: 4). self and linear only."))
    qkv_bias: bool | None = Field(
        None, description=doc("attention.qkv_bias", "Biases on the q, k and v projections (diffusers: true; "
                              "lucidrains' to_qkv: false). self and linear only."))
    norm: bool | None = Field(
        None, description=doc("attention.norm", "Normalise (the level's norm) before q/k/v (diffusers' scale-shift "
                              "middle attention has none).")
    )
    residual_scale: Annotated[float, Field(gt=0.0, le=4.0)] | None = Field(
        None, description=doc("attention.residual_scale", "The block's output (input + attention) times this "
                              "(EDM's skip_scale, sqrt(1/2)). self only."))
    placement: Literal["each", "last", "all"] | None = Field(
        None, description=doc("attention.placement", "each: after every ResBlock of the level | last: after its last "
                              "ResBlock only (EDM's decoder levels, lucidrains) | all: the middle's, after every one "
                              "of its ResBlocks, the last included (Dance Diffusion; by default the middle's sits "
                              "between its ResBlocks)."))
    depth: Annotated[int, Field(ge=1, le=64)] | None = Field(
        None, description=doc("transformer.depth", "Transformer layers in each block (SDXL's "
                              "transformer_layers_per_block). transformer only."))
    linear_projection: bool | None = Field(
        None, description=doc("transformer.linear_projection", "proj_in/proj_out are linear layers on the tokens "
                              "(SD 2's use_linear_projection) instead of 1x1 convolutions. transformer only."))
    only_cross: bool | None = Field(
        None, description=doc("transformer.only_cross", "transformer: the first attention attends to the context "
                              "too; joint: the keys and values are the context's alone (diffusers' "
                              "only_cross_attention). Needs context_dim."))
    context_norm_groups: Annotated[int, Field(ge=0, le=MAX_CHANNELS)] | None = Field(
        None, description=doc("joint.context_norm_groups", "A GroupNorm of this many groups over the context's "
                              "features before its key/value projections (diffusers' cross_attention_norm: "
                              "group_norm, 32 groups); 0: none. joint only."))
    upcast: bool | None = Field(
        None, description=doc("transformer.upcast", "Attention in float32 when the model runs in half precision "
                              "(diffusers' upcast_attention; SD 2.x needs it in fp16). transformer only."))
    norm_eps: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        None, description=doc("transformer.norm_eps", "eps of the norm before proj_in (its type and groups are the "
                              "level's). transformer only."))
    layer_norm_eps: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        None, description=doc("transformer.layer_norm_eps", "eps of the transformer layers' LayerNorms. "
                              "transformer only."))


def _attention_switch(value: object) -> object:
    # `attention: true` is one head with the defaults (as `{}`); `attention: false` is none (as null)
    return {} if value is True else None if value is False else value


# a level's or the middle's attention: settings, `true` (defaults: one head) or `false`/null (none)
Attention = Annotated[AttentionSpec | None, BeforeValidator(_attention_switch)]


class LevelSettings(StrictModel):
    """Settings every level and the middle inherit from `defaults` and may override."""

    norm: NormSpec | None = Field(None, description="Normalisation (fields merge with defaults.norm).")
    # the plain settings: defaults and descriptions live in spec/settings.py (LEVEL_SETTINGS)
    activation: Activation | None = Field(None, description=describe("activation"))
    order: Order | None = Field(None, description=describe("order"))
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] | None = Field(None, description=describe("dropout"))
    conv_bias: bool | None = Field(None, description=describe("conv_bias"))
    residual_scale: Annotated[float, Field(gt=0.0, le=4.0)] | None = Field(None, description=describe("residual_scale"))
    time_activation: bool | None = Field(None, description=describe("time_activation"))
    time_at: Literal["second", "first"] | None = Field(None, description=describe("time_at"))
    kernel_size: Annotated[Literal[1, 3, 5, 7], NoBool] | None = Field(None, description=describe("kernel_size"))
    shortcut_bias: bool | None = Field(None, description=describe("shortcut_bias"))
    resample_padding: Literal["zeros", "reflect"] | None = Field(None, description=describe("resample_padding"))
    resample_projection: bool | None = Field(None, description=describe("resample_projection"))
    resample_filter: Annotated[list[Annotated[float, Field(ge=-1e3, le=1e3)]], Field(min_length=2, max_length=16)] | None = (
        Field(None, description=describe("resample_filter")))


class EncoderLevel(LevelSettings):
    channels: Channels = Field(description="Output channels of every ResBlock of this level.")
    blocks: Blocks | None = Field(None, description=doc("level.blocks", "ResBlocks at this resolution."))
    attention: Attention = Field(
        None, description="Self-attention after each block: settings, or true for one head; omit (or false) for none."
    )
    downsample: Downsample | None = Field(
        None, description="How this level halves the resolution (not on the last level). Default: encoder.downsample."
    )


class DecoderLevel(LevelSettings):
    channels: Channels = Field(description="Output channels of every ResBlock of this level.")
    blocks: DecoderBlocks | None = Field(
        None, description="ResBlocks at this resolution. For a U-Net: encoder blocks + 1 (one per skip). "
        f"Standalone decoder: default {DEFAULTS['level.blocks']}."
    )
    attention: Attention = Field(
        None, description="Self-attention after each block: settings, or true for one head; omit (or false) for none."
    )
    upsample: Upsample | None = Field(
        None, description="How this level doubles the resolution (not on the last level). Default: decoder.upsample."
    )


class EncoderSpec(StrictModel):
    downsample: Downsample = Field(
        DEFAULTS["encoder.downsample"],
        description=doc("encoder.downsample", "conv (strided 3x3) | conv4 (kernel 4, stride 2, padding 1: lucidrains' "
                        "1-D Downsample) | avgpool | maxpool | resblock | pixel_unshuffle "
                        "(space-to-depth, each 2^dims block of positions into channels c * 2^dims + offset, then a "
                        "1x1 conv: lucidrains' Downsample); any level may override."),
    )
    levels: list[EncoderLevel] = Field(
        min_length=1, max_length=MAX_LEVELS,
        description="Resolution levels, highest resolution first. Every level but the last halves the size.",
    )
    asymmetric_padding: bool | None = Field(
        None, description=doc("encoder.asymmetric_padding", "Strided-conv downsampling pads only the right/bottom/back "
                              "by one (the original DDPM code; diffusers downsample_padding: 0) instead of one on "
                              "every side.")
    )
    skips: Skips | None = Field(
        None, description=doc("encoder.skips", "What a U-Net's encoder keeps for its decoder: every (the stem's, "
                              "each ResBlock's (after its attention) and each downsample's output: diffusers, "
                              "guided-diffusion; a decoder level has one block more than its encoder level) | blocks "
                              "(each ResBlock's output alone: lucidrains; a decoder level has as many blocks as its "
                              "encoder level) | levels (each level's output before its downsample; each decoder "
                              "level's first block takes one: Dance Diffusion)."))
    input_pyramid: InputPyramid | None = Field(
        None, description=doc("encoder.input_pyramid", "NCSN++'s progressive input (EDM's encoder_type): the input "
                              "image, resampled with each level's resample_filter, joins the features after every "
                              "downsample. skip: h + conv1x1(the image at that size) | residual: h and the pyramid "
                              "become (h + conv3x3-down(pyramid)) / sqrt(2), the 3x3 conv fused with the FIR "
                              "downsampling (zero padding 1 + (taps - 2) / 2, conv, filter with stride 2); none: no "
                              "pyramid. Replaces the downsample's skip."))


class DecoderSpec(StrictModel):
    upsample: Upsample = Field(
        DEFAULTS["decoder.upsample"],
        description=doc("decoder.upsample", "nearest | bilinear (interpolate then 3x3 conv) | transposed | resblock | "
                        "filter (the level's resample_filter alone, no conv: Dance Diffusion's Upsample1d)."),
    )
    levels: list[DecoderLevel] | None = Field(
        None, max_length=MAX_LEVELS, min_length=1,
        description="Levels in the order they run: lowest resolution first. A U-Net mirrors the encoder when omitted.",
    )
    output_pyramid: OutputPyramid | None = Field(
        None, description=doc("decoder.output_pyramid", "NCSN++'s progressive output (EDM's decoder_type: skip): "
                              "every decoder level ends in a head of its own (the head's norm, activation and "
                              "kernel) whose output, summed with the pyramid from the level below and upsampled "
                              "with the level's resample_filter, is added to the next level's; the model's head "
                              "gives the last term. none: the head alone."))


class MiddleSpec(LevelSettings):
    resample: bool | None = Field(
        None, description=doc("middle.resample", "The middle halves the size first (with its resample_filter) and "
                              "doubles it again last: its blocks run one resolution lower (Dance Diffusion's "
                              "UNetMidBlock1D); the input must divide by one 2 more."))
    channels: Channels | None = Field(
        None, description="Its width. Default: the last encoder level's. A different width is reached by the "
        "middle's first ResBlock (channel_change: block) or by the encoder's last 3x3 conv (resample).")
    blocks: Annotated[int, Field(ge=0, le=MAX_BLOCKS)] | None = Field(
        None, description=doc("middle.blocks", "ResBlocks at the lowest resolution (attention between consecutive ones).")
    )
    attention: Attention = Field(None, description="Self-attention between the middle ResBlocks: settings, or true for one head.")


class TimeCommon(StrictModel):
    """What every time embedding states besides its kind's own settings: the width every ResBlock
    receives and the settings of spec/settings.py's TIME_SETTINGS."""

    dim: Annotated[int, Field(ge=1, le=4 * MAX_CHANNELS)] | None = Field(
        None, description="Time-embedding width every ResBlock receives. Default: 4 x first level channels."
    )
    injection: TimeInjection | None = Field(None, description=describe("injection", TIME_SETTINGS))
    activation: Activation | None = Field(None, description=describe("activation", TIME_SETTINGS))
    post_activation: Activation | Literal["none"] | None = Field(
        None, description=describe("post_activation", TIME_SETTINGS))
    into: Literal["blocks", "input"] | None = Field(
        None, description=doc("time.into", "blocks: the features through the MLP into every ResBlock | input: the "
                              "features as they are, repeated along the positions and concatenated after the input's "
                              "channels, and no ResBlock takes time (Dance Diffusion)."))


class SinusoidalTime(TimeCommon):
    """Transformer-style sin/cos features of the timestep (diffusers `Timesteps`)."""

    embedding: Literal["sinusoidal"]
    features: Annotated[int, Field(ge=1, le=MAX_CHANNELS)] | None = Field(
        None, description="Frequency features before the MLP. Default: first level channels."
    )
    flip_sin_to_cos: bool | None = Field(None, description=doc("sinusoidal.flip_sin_to_cos", "cos first, then sin."))
    freq_shift: Annotated[float, Field(ge=-1e3, le=1e3)] | None = Field(
        None, description=doc("sinusoidal.freq_shift", "Subtracted from half the features in the frequency exponent."))
    max_period: Annotated[float, Field(gt=1.0, le=1e9)] | None = Field(
        None, description=doc("sinusoidal.max_period", "The longest period of the frequencies."))


class FourierTime(TimeCommon):
    """Random Gaussian Fourier features (diffusers `GaussianFourierProjection`, score SDE)."""

    embedding: Literal["fourier"]
    features: Annotated[int, Field(ge=2, le=2 * MAX_CHANNELS)] | None = Field(
        None, description="sin+cos features before the MLP (even). Default: 2 x first level channels."
    )
    scale: Annotated[float, Field(gt=0.0, le=1e4)] | None = Field(
        None, description=doc("fourier.scale", "Std of the random frequencies."))
    log: bool | None = Field(None, description=doc("fourier.log", "Take log(t) first (as diffusers)."))
    flip_sin_to_cos: bool | None = Field(None, description=doc("fourier.flip_sin_to_cos", "cos first, then sin."))


class LearnedTime(TimeCommon):
    """A learned table indexed by the integer timestep (diffusers `time_embedding_type: learned`)."""

    embedding: Literal["learned"]
    timesteps: Annotated[int, Field(ge=1, le=1_000_000)] = Field(description="Rows of the table (training timesteps).")
    features: Annotated[int, Field(ge=1, le=MAX_CHANNELS)] | None = Field(None, description="Default: first channels.")


TimeSpec = Annotated[SinusoidalTime | FourierTime | LearnedTime, Field(discriminator="embedding")]


class StemSpec(StrictModel):
    """The stem: one convolution from the input to the first features (diffusers' conv_in)."""

    channels: Channels | None = Field(None, description="Its output channels: the first skip's and the first encoder "
                                      "level's input (EDM's model_channels below a wider level 0). Default: the first "
                                      "level's channels.")
    conv: bool | None = Field(
        None, description=doc("stem.conv", "false: no stem; the first level takes the input as it is (with the time "
                              "features where time.into is input: Dance Diffusion). Its width is then the input's."))
    kernel_size: Annotated[Literal[1, 3, 5, 7], NoBool] | None = Field(
        None, description=doc("stem.kernel_size", "Its kernel (padded to keep the size; diffusers' conv_in_kernel, "
                              "lucidrains' 7)."))


class HeadSpec(StrictModel):
    """The output head: [norm -> activation ->] conv to out_channels (uses defaults' norm/activation)."""

    norm: bool | None = Field(None, description=doc("head.norm", "Norm and activation before the output conv."))
    activation: Activation | None = Field(
        None, description="The head's activation (default: defaults.activation; diffusers' UNet2DModel always uses silu)."
    )
    kernel_size: Annotated[Literal[1, 3], NoBool] | None = Field(None, description=doc("head.kernel_size", "Output conv kernel."))
    conv: bool | None = Field(
        None, description=doc("head.conv", "false: no head; the last decoder ResBlock gives the output (with "
                              "channel_change mirror it ends at out_channels) without its second norm and "
                              "activation (Dance Diffusion's last ResConvBlock)."))
    stem_block: bool | None = Field(
        None, description=doc("head.stem_block", "A ResBlock (the defaults' settings) on the features concatenated "
                              "with the stem's output, before the head (lucidrains' final_res_block): (B, C + stem, "
                              "*S) -> (B, C, *S). A U-Net only."))
    divide_by_timestep: bool | None = Field(
        None, description=doc("head.divide_by_timestep", "Divide the output by t (score models where t is the noise "
                              "level sigma; diffusers does this for fourier time embeddings). Needs a time section.")
    )


class InitSpec(StrictModel):
    zero_out: bool | None = Field(
        None, description=doc("init.zero_out", "Zero-initialise each block's last conv, attention output and the "
                              "output conv (guided-diffusion's zero_module).")
    )


class LatentSpec(StrictModel):
    """The latent space of a KL autoencoder (diffusers' AutoencoderKL, latent diffusion's first
    stage): the encoder gives the posterior's moments (mean and log-variance, 2 x channels), the
    decoder takes a latent of `channels`."""

    channels: Channels = Field(description="Latent channels (diffusers' latent_channels; 4 for Stable Diffusion).")
    quant_conv: bool | None = Field(
        None, description="A 1x1 conv on the moments after the encoder (diffusers' use_quant_conv). Default true "
        "where there is an encoder (autoencoder, encoder).")
    post_quant_conv: bool | None = Field(
        None, description="A 1x1 conv on the latent before the decoder (diffusers' use_post_quant_conv). Default "
        "true where there is a decoder (autoencoder, decoder).")
    scaling_factor: Annotated[float, Field(gt=0.0, le=1e6)] | None = Field(
        None, description="What a diffusion model's latents are multiplied by (0.18215 for Stable Diffusion "
        "1.x/2.x's VAE, 0.13025 for SDXL's; 1 for unscaled). Required: there is no default that is right for "
        "the published autoencoders. Carried with the model (model.scaling_factor, the artifact's metadata), never "
        "applied inside it, as diffusers.")


class ConditionInput(StrictModel):
    """One named vector the model takes in `cond`: (B, width) per call ((B,) also where width is 1)."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
                      description="Its key in `cond` (and its ONNX input name): a Python identifier; not x, t, y, "
                      "context or cond.")
    width: Annotated[int, Field(ge=1, le=MAX_CONDITION_WIDTH)] = Field(description="Values per sample.")
    sinusoid: Annotated[int, Field(ge=2, le=MAX_CHANNELS)] | None = Field(
        None, description="Each value through a sinusoid of this many features first (the time section's own "
        "flip_sin_to_cos, freq_shift and max_period; diffusers' add_time_proj): width x sinusoid features. "
        "Omit to take the values as they are.")
    scale: Annotated[float, Field(gt=0.0, le=1e6)] | None = Field(
        None, description="The values times this first (EDM scales its one-hot labels by sqrt(label_dim)). Default 1.")


class PoolSpec(StrictModel):
    """The context's tokens attention-pooled into one vector (diffusers' TextTimeEmbedding, DeepFloyd
    IF's addition_embed_type text): LayerNorm, a query from the tokens' mean plus a learned position
    attending to it and the tokens, a linear layer to the width it joins, LayerNorm."""

    heads: Annotated[int, Field(ge=1, le=1024)] = Field(description="Heads of the pooling attention; must divide the "
                                                        "context's width (IF: 64).")


class ConditionSpec(StrictModel):
    """A group of named conditions joined into the time embedding: the inputs concatenated in order
    (each as is, or through a sinusoid), projected, and added (diffusers' add_embedding for SDXL's
    text_time and class_embedding for its class_embed_type values; EDM's map_label and map_augment);
    or, instead of inputs, the model's context attention-pooled (pool_context: DeepFloyd IF)."""

    inputs: list[ConditionInput] | None = Field(None, min_length=1, max_length=MAX_CONDITIONS,
                                                description="The group's inputs, concatenated in this order.")
    pool_context: PoolSpec | None = Field(
        None, description="Instead of inputs: the context (as given, before any projection) attention-pooled, then "
        "projected (its own linear layer and norms: project, bias and activation do not apply).")
    project: ConditionProject | None = Field(None, description=doc(
        "condition.project", "mlp: linear -> activation -> linear (diffusers' TimestepEmbedding) | linear (one "
        "layer) | none (added as it is: the joined width must be the width it is added to)."))
    bias: bool | None = Field(None, description=doc("condition.bias", "The linear projection's bias. project: linear "
                                                    "only (an mlp always has them)."))
    activation: Activation | None = Field(None, description=doc(
        "condition.activation", "Between the mlp's two layers. project: mlp only."))
    into: ConditionInto | None = Field(None, description=doc(
        "condition.into", "time: added to the time embedding after its MLP (diffusers) | features: added to the "
        "timestep's features before the MLP (EDM)."))


class PreconditioningSpec(StrictModel):
    """The denoiser the network is (Karras et al. 2022, "Elucidating the design space", table 1):
    model(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)), F the network the
    rest of the spec describes; `t` is the noise level sigma. edm: c_skip = sd^2 / (sigma^2 + sd^2), c_out =
    sigma sd / sqrt(sigma^2 + sd^2), c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4 (EDM's
    EDMPrecond, EDM2's Precond) | vp: c_skip 1, c_out -sigma, c_in 1 / sqrt(sigma^2 + 1), c_noise =
    (timesteps - 1) t(sigma) with t(sigma) the VP schedule's inverse (DDPM++ as trained by Song et al.) |
    ve: c_skip 1, c_out sigma, c_in 1, c_noise = ln(sigma / 2) (NCSN++). Coefficients in float32 (float64
    for a float64 input)."""

    type: Preconditioning = Field(description="edm | vp | ve.")
    sigma_data: Annotated[float, Field(gt=0.0, le=1e3)] | None = Field(
        None, description=doc("preconditioning.sigma_data", "The data's standard deviation. edm only."))
    beta_d: Annotated[float, Field(gt=0.0, le=1e3)] | None = Field(
        None, description=doc("preconditioning.beta_d", "The VP schedule's beta_d. vp only."))
    beta_min: Annotated[float, Field(ge=0.0, le=1e3)] | None = Field(
        None, description=doc("preconditioning.beta_min", "The VP schedule's beta_min. vp only."))
    timesteps: Annotated[int, Field(ge=2, le=1_000_000)] | None = Field(
        None, description=doc("preconditioning.timesteps", "The VP schedule's M: c_noise runs over 0 .. M - 1. vp "
                              "only."))


class ControlNetSpec(StrictModel):
    """What a ControlNet adds to the U-Net it controls (diffusers' ControlNetModel): a hint image
    embedded by 3x3 convs (SiLU after each, a stride-2 conv between consecutive widths, a zero conv to
    the stem's channels) and added to the stem's output; a zero 1x1 conv on every skip and on the middle's
    output. The hint is the input's size times 2 ** (len(embedding) - 1) (SD 1.5: 512 x 512 for 64 x 64
    latents)."""

    hint_channels: Channels | None = Field(None, description=doc(
        "controlnet.hint_channels", "Channels of the hint image (diffusers' conditioning_channels)."))
    embedding: list[Channels] | None = Field(None, min_length=1, max_length=MAX_LEVELS, description=doc(
        "controlnet.embedding", "Widths of the hint embedding's stages (diffusers' "
        "conditioning_embedding_out_channels); each after the first halves the hint's size."))


class Spec(StrictModel):
    """A unetdsl model specification (format version 1)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True,
        json_schema_extra={"$id": "https://unetdsl.dev/schemas/unetdsl.schema.json"},
    )

    unetdsl: Annotated[Literal[1], NoBool] = Field(description="Format version of this file. Always 1 for now.")
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Model name; also the default output file name. Letters, digits, '.', '_', '-'.",
    )
    description: str | None = Field(None, max_length=4000, description="Free text (where it comes from).")
    model: ModelKind = Field(
        "unet", description="unet | encoder | decoder | autoencoder (an encoder to a latent posterior and a decoder "
        "back, with the latent section: diffusers' AutoencoderKL) | controlnet (the U-Net it controls, written "
        "whole, with the controlnet section: its encoder and middle, which return residuals for that U-Net)")
    dims: Annotated[Literal[1, 2, 3], NoBool] = Field(2, description="Spatial dimensions: 1 (sequence), 2 (image), 3 (volume).")
    in_channels: Channels = Field(description="Channels of the input.")
    out_channels: Channels = Field(description="Channels of the output.")
    sample_size: Annotated[int, Field(ge=1, le=MAX_SAMPLE_SIZE)] | Annotated[
        list[Annotated[int, Field(ge=1, le=MAX_SAMPLE_SIZE)]], Field(min_length=1, max_length=3)
    ] = Field(description="Example input size: one number for every dimension, or one per dimension.")
    time: TimeSpec | None = Field(None, description="Timestep embedding; required by a U-Net.")
    classes: Annotated[int, Field(ge=1, le=1_000_000)] | None = Field(
        None, description="Number of class labels; their embedding is added to the time embedding."
    )
    context_dim: Annotated[int, Field(ge=1, le=MAX_CHANNELS)] | None = Field(
        None, description="Width of the context the model attends to: forward(x, t, context=...) with a context of "
        "shape (B, tokens, context_dim) (e.g. CLIP text states: 768 for SD 1.x, 1024 for SD 2.x). Every "
        "transformer attention block cross-attends to it."
    )
    context_input_dim: Annotated[int, Field(ge=1, le=4 * MAX_CHANNELS)] | None = Field(
        None, description="Width of the context the model takes when it is not context_dim: a linear layer maps it "
        "to context_dim first (diffusers' encoder_hid_proj; DeepFloyd IF: T5 states of 4096). Needs context_dim.")
    conditions: list[ConditionSpec] | None = Field(
        None, min_length=1, max_length=MAX_CONDITIONS,
        description="Named vector conditions joined into the time embedding: the model takes them as "
        "model(x, t, cond={name: tensor}) (SDXL's text_embeds and time_ids). Needs a time section.")
    defaults: LevelSettings | None = Field(None, description="Settings every level and the middle inherit.")
    encoder: EncoderSpec | None = Field(None, description="Downsampling path (unet, encoder).")
    middle: MiddleSpec | None = Field(None, description="Blocks at the lowest resolution.")
    decoder: DecoderSpec | None = Field(None, description="Upsampling path (unet: mirrored when omitted; decoder).")
    center_input: bool | None = Field(
        None, description=doc("center_input", "Map the input x to 2x - 1 first (inputs in [0, 1]; diffusers "
                              "center_input_sample).")
    )
    channel_change: ChannelChange | None = Field(
        None, description=doc("channel_change", "Where the width changes between levels: block (the first ResBlock "
                              "of the next part: diffusers, guided-diffusion, EDM) | mirror (the encoder as block, each "
                              "decoder level in its last ResBlock's second conv, to the next level's width: Dance "
                              "Diffusion, whose decoder mirrors its encoder) | resample (each resampler's conv "
                              "maps a level's width to the next level's; the last encoder level ends in a 3x3 conv "
                              "to the middle's width, the last decoder level in one to the stem's: lucidrains). "
                              "resample needs resamplers with a conv: conv, pixel_unshuffle or resblock down, any "
                              "upsample."))
    preconditioning: PreconditioningSpec | None = Field(
        None, description="The denoiser around the network: model(x, sigma) = c_skip x + c_out F(c_in x, c_noise) "
        "(EDM's preconditioning; a U-Net whose output has its input's channels). A ControlNet of it takes c_in x "
        "and c_noise the same way.")
    stem: StemSpec | None = Field(None, description="The stem convolution's width and kernel.")
    head: HeadSpec | None = Field(None, description="Output head options (both halves' heads for an autoencoder).")
    latent: LatentSpec | None = Field(
        None, description="The latent space: required by an autoencoder; on an encoder or decoder alone, the half "
        "of an autoencoder it is (its quant conv).")
    init: InitSpec | None = Field(None, description="Initialisation options.")
    controlnet: ControlNetSpec | None = Field(
        None, description="What a ControlNet adds to the U-Net the rest of the spec describes (model: controlnet "
        "only): controlnet(x, t, hint=image, ...) returns one residual per skip and the middle's, which "
        "unet(x, t, residuals=...) adds.")
