"""ResolvedSpec -> nn.Module. Reads only the resolved spec (no defaulting logic here) and builds
through registries keyed by the language's closed names; never an if/elif chain over names.

    compile_spec(resolved) -> UNet | Encoder | Decoder, with `.spec` set

The user-facing `build_model` (any spec source, seeds, devices, the resource guard) is in api.py,
downstream of this module and of the front end."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from .errors import InternalError
from .nn.attention import AttentionBlock, JointAttention, LinearAttentionBlock, NoAttention
from .nn.conditions import ConditionEmbeddings, ConditionGroup, ConditionInput, ContextPool, Mlp
from .nn.controlnet import ControlNet, HintEmbedding
from .nn.layers import activation, conv_nd, norm, zero_module
from .nn.precond import EdmPreconditioning, VePreconditioning, VpPreconditioning
from .nn.pyramid import InputResidual, InputSkip, OutputSkip
from .nn.resblock import ResBlock
from .nn.sampling import (
    ConvDownsample,
    FirResample,
    InterpolateUpsample,
    PixelUnshuffleDownsample,
    PoolDownsample,
    ResBlockResample,
    TransposedUpsample,
)
from .nn.time import FourierProjection, InputTime, LearnedProjection, SinusoidalProjection, TimeEmbedding
from .nn.transformer import SpatialTransformer
from .nn.unet import AutoencoderKL, Decoder, Encoder, Head, Level, MiddleBlock, UNet
from .spec.resolved import (
    ResolvedAttention,
    ResolvedCondition,
    ResolvedLevel,
    ResolvedNorm,
    ResolvedSettings,
    ResolvedSpec,
    ResolvedTime,
)
from .spec.vocabulary import NORM_KINDS, UNET_KINDS

# norms that subtract each channel's own mean: a conv bias right before them is dead weight
PER_CHANNEL_NORMS = frozenset(name for name, kind in NORM_KINDS.items() if kind.per_channel_mean)


MEMORY_FORMATS = ("channels_last", "contiguous")


def memory_format_for(memory_format: str, device: torch.device) -> str:
    """"auto" -> the layout that runs faster on `device`: channels-last on the CPU (oneDNN), the
    default layout on GPUs (measured on an H100, DDPM CIFAR-10 fp16/bf16, batch 8 and 64:
    channels-last eager was 1-9% slower there; benchmarks/results/2026-11-27-gpu-h100.log).
    A model keeps the layout it was built with when moved to another device."""
    if memory_format == "auto":
        return "channels_last" if device.type in ("cpu", "meta") else "contiguous"
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format {memory_format!r}; known: auto, {', '.join(MEMORY_FORMATS)}")
    return memory_format


class _Compiler:
    def __init__(self, spec: ResolvedSpec, memory_format: str = "channels_last"):
        self.spec = spec
        self.memory_format = memory_format
        self.dims = spec.dims
        # the width every ResBlock's time projection reads; none where the time features are input channels
        self.temb = spec.time.dim if spec.time is not None and spec.time.into == "blocks" else None
        self.scale_shift = spec.time is not None and spec.time.injection == "scale_shift"

    # --- pieces ---------------------------------------------------------------------------
    def norm(self, n: ResolvedNorm, channels: int) -> nn.Module:
        return norm(n.type, self.dims, channels, n.groups_for(channels), n.eps)

    def resblock(self, settings: ResolvedSettings, cin: int, cout: int, resample: nn.Module | None = None,
                 mid: int = 0, final: bool = False) -> ResBlock:
        """A ResBlock with `settings`; with `resample`, a ResBlock-up/down (its shortcut projected where
        the settings say: resample_projection); `mid`: conv1's width where the width changes in conv2;
        `final`: the model's last block without a head (no norm2 and act after conv2, post order)."""
        pre = settings.order == "pre"
        # pre: conv1 -> (+t) -> norm2, conv2 -> residual add; post: conv1 -> norm1, conv2 -> norm2
        bias = settings.conv_bias and settings.norm.type not in PER_CHANNEL_NORMS
        width = mid or cout  # conv1's output
        return ResBlock(
            dims=self.dims, in_channels=cin, out_channels=cout, temb_channels=self.temb,
            norm1=self.norm(settings.norm, cin if pre else width),
            norm2=nn.Identity() if final and not pre else self.norm(settings.norm, width if pre else cout),
            mid_channels=mid, shortcut_bias=settings.shortcut_bias, final=final and not pre,
            act=activation(settings.activation), dropout=settings.dropout, pre=pre,
            scale_shift=self.scale_shift, resample=resample, zero_out=self.spec.zero_out,
            conv1_bias=bias, conv2_bias=bias or pre, residual_scale=settings.residual_scale,
            time_activation=settings.time_activation,
            shortcut_conv=resample is not None and settings.resample_projection,
            time_first=settings.time_at == "first", kernel_size=settings.kernel_size,
        )

    def attention(self, settings: ResolvedSettings, channels: int) -> nn.Module:
        if settings.attention is None:
            return NoAttention()
        return self._attention()[settings.attention.type](settings, channels)

    # --- registry of attention kinds: type -> builder(level settings, channels) ---------------
    def _attention(self) -> dict[str, Callable[[ResolvedSettings, int], nn.Module]]:
        return {"self": self._self_attention, "transformer": self._transformer, "joint": self._joint,
                "linear": self._linear_attention}

    def _self_attention(self, settings: ResolvedSettings, channels: int) -> nn.Module:
        att = settings.attention
        assert att is not None
        pre_norm = self.norm(settings.norm, channels) if att.norm else nn.Identity()
        return AttentionBlock(channels=channels, heads=att.heads, norm=pre_norm, zero_out=self.spec.zero_out,
                              residual_scale=att.residual_scale, width=self.attention_width(att, channels),
                              memory=att.memory,
                              qkv_bias=att.qkv_bias)

    @staticmethod
    def attention_width(att: ResolvedAttention, channels: int) -> int:
        """heads x head_dim where the attention has a width of its own, else the channels it runs at."""
        return att.width if att.own_width else channels

    def _linear_attention(self, settings: ResolvedSettings, channels: int) -> nn.Module:
        att = settings.attention
        assert att is not None
        pre_norm = self.norm(settings.norm, channels) if att.norm else nn.Identity()
        return LinearAttentionBlock(channels=channels, heads=att.heads, norm=pre_norm,
                                    out_norm=self.norm(settings.norm, channels), zero_out=self.spec.zero_out,
                                    residual_scale=att.residual_scale, width=self.attention_width(att, channels),
                              memory=att.memory,
                                    qkv_bias=att.qkv_bias)

    def _joint(self, settings: ResolvedSettings, channels: int) -> nn.Module:
        att = settings.attention
        assert att is not None and att.joint is not None and self.spec.context_dim is not None
        pre_norm = self.norm(settings.norm, channels) if att.norm else nn.Identity()
        groups = att.joint.context_norm_groups
        # over the context's features, as a (B, D, T) sequence: GroupNorm's eps is diffusers' (1e-5)
        context_norm = nn.GroupNorm(groups, self.spec.context_dim, eps=1e-5) if groups else None
        return JointAttention(channels=channels, heads=att.heads, context_dim=self.spec.context_dim, norm=pre_norm,
                              context_norm=context_norm, only_cross=att.joint.only_cross, zero_out=self.spec.zero_out)

    def _transformer(self, settings: ResolvedSettings, channels: int) -> nn.Module:
        att, tf = settings.attention, settings.attention.transformer if settings.attention else None
        assert att is not None and tf is not None
        n = settings.norm
        pre_norm = norm(n.type, self.dims, channels, n.groups_for(channels), tf.norm_eps) if att.norm else nn.Identity()
        return SpatialTransformer(dims=self.dims, channels=channels, heads=att.heads, depth=tf.depth,
                                  context_dim=self.spec.context_dim, norm=pre_norm, linear=tf.linear_projection,
                                  only_cross=tf.only_cross, upcast=tf.upcast, layer_norm_eps=tf.layer_norm_eps,
                                  zero_out=self.spec.zero_out)

    def level_blocks(self, lv: ResolvedLevel, final: bool = False) -> tuple[list[nn.Module], list[nn.Module]]:
        """The level's ResBlocks and attention blocks; `final`: its last ResBlock is the model's output."""
        last_block = len(lv.blocks) - 1
        resnets: list[nn.Module] = [self.resblock(lv, b.in_channels + b.skip_channels, b.out_channels, mid=b.mid_channels,
                                                  final=final and j == last_block) for j, b in enumerate(lv.blocks)]
        last = len(lv.blocks) - 1  # placement last: the level's last ResBlock only (EDM's decoder levels)
        every = lv.attention is None or lv.attention.placement == "each"
        # each attention at its block's output width (the level's, but where channel_change mirror ends it)
        return resnets, [self.attention(lv, lv.blocks[i].out_channels) if every or i == last else NoAttention()
                         for i in range(len(lv.blocks))]

    # --- registries of resampling methods: name -> builder(level) ----------------------------
    def _down(self) -> dict[str, Callable[[ResolvedLevel], nn.Module]]:
        return {
            "conv": lambda lv: ConvDownsample(dims=self.dims, channels=self.resample_in(lv), out_channels=lv.out_channels,
                                              padding=0 if self.spec.asymmetric_padding else 1),
            "conv4": lambda lv: ConvDownsample(dims=self.dims, channels=self.resample_in(lv), out_channels=lv.out_channels,
                                               kernel_size=4),
            "pixel_unshuffle": lambda lv: PixelUnshuffleDownsample(dims=self.dims, channels=self.resample_in(lv),
                                                                   out_channels=lv.out_channels),
            "avgpool": lambda lv: self.filtered(lv, up=False) or PoolDownsample(dims=self.dims, kind="avgpool"),
            "maxpool": lambda lv: PoolDownsample(dims=self.dims, kind="maxpool"),
            "resblock": lambda lv: ResBlockResample(self.resblock(
                lv, self.resample_in(lv), lv.out_channels,
                self.filtered(lv, up=False) or PoolDownsample(dims=self.dims, kind="avgpool").pool)),
        }

    def fir(self, place: ResolvedSettings, *, up: bool) -> nn.Module:
        """The place's FIR resampler whatever its filter (the upsample `filter`, the middle's own resampling)."""
        return FirResample(dims=self.dims, taps=place.resample_filter, up=up, reflect=place.resample_padding == "reflect")

    def filtered(self, lv: ResolvedSettings, *, up: bool) -> nn.Module | None:
        """The level's FIR resampler, or None where its filter is the box [1, 1] with zero padding (the
        pooling and nearest modules then, as before the option: the same numbers, no new buffers)."""
        if lv.resample_filter == [1.0, 1.0] and lv.resample_padding == "zeros":
            return None
        return self.fir(lv, up=up)

    def _up(self) -> dict[str, Callable[[ResolvedLevel], nn.Module]]:
        return {
            "nearest": lambda lv: InterpolateUpsample(dims=self.dims, channels=self.resample_in(lv), mode="nearest",
                                                      out_channels=lv.out_channels),
            "bilinear": lambda lv: InterpolateUpsample(
                dims=self.dims, channels=self.resample_in(lv), mode={1: "linear", 2: "bilinear", 3: "trilinear"}[self.dims],
                out_channels=lv.out_channels),
            "filter": lambda lv: self.fir(lv, up=True),
            "transposed": lambda lv: TransposedUpsample(dims=self.dims, channels=self.resample_in(lv),
                                                        out_channels=lv.out_channels),
            "resblock": lambda lv: ResBlockResample(self.resblock(
                lv, self.resample_in(lv), lv.out_channels,
                self.filtered(lv, up=True) or nn.Upsample(scale_factor=2.0, mode="nearest"))),
        }

    def _time_projection(self) -> dict[str, Callable[[ResolvedTime], nn.Module]]:
        return {
            "sinusoidal": lambda t: SinusoidalProjection(features=t.features, flip_sin_to_cos=t.flip_sin_to_cos,
                                                         freq_shift=t.freq_shift, max_period=t.max_period),
            "fourier": lambda t: FourierProjection(features=t.features, scale=t.scale, log=t.log,
                                                   flip_sin_to_cos=t.flip_sin_to_cos),
            "learned": lambda t: LearnedProjection(timesteps=t.timesteps, features=t.features),
        }

    def _projections(self) -> dict[str, Callable[[ResolvedCondition], nn.Module]]:
        """A condition group's projection, by `project`: joined width -> the width it is added to."""
        return {
            "mlp": lambda c: Mlp(c.joined_width, c.width, activation(c.activation)),
            "linear": lambda c: nn.Linear(c.joined_width, c.width, bias=c.bias),
            "none": lambda c: nn.Identity(),
        }

    def conditions(self) -> ConditionEmbeddings | None:
        s = self.spec
        if not s.conditions:
            return None
        groups = [ConditionGroup(
            [ConditionInput(name=i.name, width=i.width, sinusoid=SinusoidalProjection(
                features=i.sinusoid, flip_sin_to_cos=i.flip_sin_to_cos, freq_shift=i.freq_shift,
                max_period=i.max_period) if i.sinusoid else None, scale=i.scale) for i in c.inputs],
            ContextPool(c.pool_width, c.pool_heads, c.width) if c.pool_heads else self._projections()[c.project](c),
            into_features=c.into == "features", pooled=bool(c.pool_heads)) for c in s.conditions]
        return ConditionEmbeddings(groups, [i.name for i in s.condition_inputs])

    # --- whole model ----------------------------------------------------------------------
    def build(self) -> nn.Module:
        s = self.spec
        is_unet = s.model in UNET_KINDS  # a ControlNet's encoder keeps the skips it gives residuals for
        # built in forward order (encoder, middle, decoder, head, conv_in): a seed's weights depend on it
        down, up = self._down(), self._up()
        # every 2D/3D part may run channels-last; each decides per call by its input's size (nn/unet.py)
        cl = self.memory_format == "channels_last" and self.dims in (2, 3)
        pyramid = self.input_pyramid()
        encoder = [Level(*self.level_blocks(lv), downsample=down[lv.downsample](lv) if lv.downsample else None,
                         push_skips=is_unet, channels_last=cl, pyramid=pyramid[i], push_resampled=s.skips == "every",
                         skip_levels=s.skips == "levels",
                         project=self.project(lv)) for i, lv in enumerate(s.encoder)]
        m = s.middle
        middle = MiddleBlock(
            [self.resblock(m, (m.in_channels or m.channels) if i == 0 else m.channels, m.channels)
             for i in range(m.blocks)],
            [self.attention(m, m.channels) for _ in range(m.blocks - (0 if m.attention.placement == "all" else 1))]
            if m.attention is not None else [],
            channels_last=cl, down=self.fir(m, up=False) if m.resample else None,
            up=self.fir(m, up=True) if m.resample else None,
        )
        if s.controlnet is not None:
            return self.controlnet(encoder, middle, cl)
        final = not s.head.conv  # no head: the last decoder ResBlock gives the output
        decoder = [Level(*self.level_blocks(lv, final=final and k == len(s.decoder) - 1),
                         upsample=up[lv.upsample](lv) if lv.upsample else None,
                         consume_skips=is_unet, channels_last=cl, skip_levels=s.skips == "levels",
                         pyramid=OutputSkip(head=self.head(self.resample_in(lv)), dims=self.dims, taps=lv.resample_filter)
                         if s.output_pyramid == "skip" and lv.upsample else None, project=self.project(lv))
                   for k, lv in enumerate(s.decoder)]
        h = s.head
        head = self.head(h.in_channels) if h.conv else Head(None, nn.Identity(), nn.Identity())
        if h.stem_block is not None:  # (B, C + stem, *S) -> (B, C, *S), built after the head's conv
            head.block = self.resblock(h.stem_block, h.in_channels + s.stem_channels, h.in_channels)
        common = self.common(encoder, middle, cl) | dict(
            decoder=decoder, head=head, divide_by_timestep=h.divide_by_timestep)
        if s.latent is not None and s.latent.quant_conv:  # the moments: (B, 2L, *S) -> (B, 2L, *S)
            common["quant_conv"] = conv_nd(self.dims, 2 * s.latent.channels, 2 * s.latent.channels, 1)
        if s.latent is not None and s.latent.post_quant_conv:  # the latent: (B, L, *S) -> (B, L, *S)
            common["post_quant_conv"] = conv_nd(self.dims, s.latent.channels, s.latent.channels, 1)
        models: dict[str, type[nn.Module]] = {"unet": UNet, "encoder": Encoder, "decoder": Decoder}
        return models[s.model](**common)

    def resample_in(self, lv: ResolvedLevel) -> int:
        """The width a level's resampler takes: its own, or with channel_change mirror the width its last
        ResBlock already ended at."""
        return lv.out_channels if self.spec.channel_change == "mirror" else lv.channels

    def project(self, lv: ResolvedLevel) -> nn.Module | None:
        """channel_change resample: a level that does not resample ends in a 3x3 conv to the next part's
        width (the last encoder level to the middle's, the last decoder level to the stem's)."""
        if self.spec.channel_change != "resample" or not lv.end_channels or lv.downsample or lv.upsample:
            return None
        return conv_nd(self.dims, lv.channels, lv.end_channels, 3, padding=1)

    def head(self, channels: int) -> Head:
        """[norm -> act ->] conv from `channels` to the output channels, with the head's settings (the
        model's head, and an output pyramid's at every other decoder level)."""
        s, h = self.spec, self.spec.head
        conv_out = conv_nd(self.dims, channels, s.out_channels, h.kernel_size, padding=h.kernel_size // 2)
        if s.zero_out:
            zero_module(conv_out)
        return Head(self.norm(h.norm, channels) if h.norm is not None else None, activation(h.activation), conv_out)

    def input_pyramid(self) -> list[nn.Module | None]:
        """Each encoder level's input pyramid module (nn/pyramid.py), None where it has none: a level that
        downsamples joins the pyramid, which starts as the input image (in_channels wide)."""
        s = self.spec
        kinds: dict[str, Callable[[ResolvedLevel, int], tuple[nn.Module, int]]] = {
            # (level, the pyramid's width there) -> (module, its width after)
            # (joining after the downsample: the width it gives, lv.out_channels)
            "skip": lambda lv, aux: (InputSkip(dims=self.dims, image_channels=aux, channels=lv.out_channels,
                                               taps=lv.resample_filter), aux),
            "residual": lambda lv, aux: (InputResidual(dims=self.dims, aux_channels=aux, channels=lv.out_channels,
                                                       taps=lv.resample_filter), lv.out_channels),
        }
        out: list[nn.Module | None] = []
        aux = s.in_channels
        for lv in s.encoder:
            module = None
            if s.input_pyramid != "none" and lv.downsample is not None:
                module, aux = kinds[s.input_pyramid](lv, aux)
            out.append(module)
        return out

    def common(self, encoder: list[Level], middle: MiddleBlock, cl: bool) -> dict[str, Any]:
        """What every model's constructor takes besides its decoder and head."""
        s = self.spec
        time_embedding: nn.Module | None = None
        features_in = s.time.features if s.time is not None and s.time.into == "input" else 0
        if s.time is not None and s.time.into == "input":
            time_embedding = InputTime(proj=self._time_projection()[s.time.embedding](s.time))
        elif s.time is not None:
            time_embedding = TimeEmbedding(proj=self._time_projection()[s.time.embedding](s.time),
                                           features=s.time.features, dim=s.time.dim, classes=s.classes,
                                           act=activation(s.time.activation), conditions=self.conditions(),
                                           post_act=None if s.time.post_activation == "none"
                                           else activation(s.time.post_activation))
        return dict(
            dims=self.dims, in_channels=s.in_channels, size_multiple=s.downsampling_factor,
            conv_in=conv_nd(self.dims, s.in_channels + features_in, s.stem_channels, s.stem_kernel,
                            padding=s.stem_kernel // 2) if s.stem_conv else nn.Identity(),
            time_into_input=bool(features_in), size_min=s.smallest_multiple * s.downsampling_factor,
            time_embedding=time_embedding, encoder=encoder, middle=middle, center_input=s.center_input,
            channels_last=cl, context_dim=s.context_dim or 0,
            context_proj=nn.Linear(s.context_input_dim, s.context_dim) if s.context_input_dim and s.context_dim else None,
            preconditioning=self.preconditioning(), push_stem=s.skips == "every",
        )

    def preconditioning(self) -> nn.Module | None:
        p = self.spec.preconditioning
        if p is None:
            return None
        kinds: dict[str, Callable[[], nn.Module]] = {
            "edm": lambda: EdmPreconditioning(sigma_data=p.sigma_data),
            "vp": lambda: VpPreconditioning(beta_d=p.beta_d, beta_min=p.beta_min, timesteps=p.timesteps),
            "ve": lambda: VePreconditioning(),
        }
        return kinds[p.type]()

    def controlnet(self, encoder: list[Level], middle: MiddleBlock, cl: bool) -> nn.Module:
        """The U-Net's trunk (stem, time embedding, encoder, middle; built in the U-Net's order), the hint
        embedding and the zero convs; no decoder, no head."""
        s = self.spec
        c = s.controlnet
        assert c is not None
        common = self.common(encoder, middle, cl)
        hint = HintEmbedding(dims=self.dims, hint_channels=c.hint_channels, widths=c.embedding,
                             out_channels=s.stem_channels)
        return ControlNet(**common, decoder=[], head=None, hint_embedding=hint, residual_channels=s.residual_channels,
                          hint_channels=c.hint_channels, hint_factor=c.hint_factor)

    def build_autoencoder(self) -> nn.Module:
        """The two halves, each compiled from its own standalone spec (`ResolvedSpec.part`), so
        that either exports alone with the spec it computes."""
        s = self.spec
        assert s.latent is not None
        halves = {}
        for half in ("encoder", "decoder"):
            part = s.part(half)
            halves[half] = _Compiler(part, self.memory_format).build()
            halves[half].spec = part  # type: ignore[assignment]
        return AutoencoderKL(encoder=halves["encoder"], decoder=halves["decoder"],  # type: ignore[arg-type]
                             latent_channels=s.latent.channels, scaling_factor=s.latent.scaling_factor)


def compile_spec(spec: ResolvedSpec, *, memory_format: str = "channels_last") -> nn.Module:
    """Modules for a resolved spec, on the current default device and dtype."""
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format {memory_format!r}; known: {', '.join(MEMORY_FORMATS)}")
    on_meta = torch.get_default_device().type == "meta"
    try:
        compiler = _Compiler(spec, memory_format)
        with _init_skipped() if on_meta else contextlib.nullcontext():
            model = compiler.build_autoencoder() if spec.model == "autoencoder" else compiler.build()
    except (KeyError, TypeError, ValueError) as exc:  # the resolver admitted something we cannot build
        raise InternalError(f"compiling a resolved spec failed: {exc}") from exc
    if memory_format == "channels_last" and spec.dims in (2, 3):
        pointwise_weights_channels_last(model)
    model.spec = spec  # type: ignore[assignment]
    return model


# torch.nn.init's in-place initialisers, which the modules' constructors call
_INITS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
          "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_")


@contextlib.contextmanager
def _init_skipped() -> Iterator[None]:
    """No initialiser runs while building on the meta device: there are no values to draw, and
    some initialisers are not free there (`normal_` on meta goes through torch._refs, whose first
    use imports torch._dynamo: 1.2 s of a `unetdsl.load`). Not thread-safe (it patches
    torch.nn.init, as transformers' `no_init_weights` does); undone on exit."""
    saved = {name: getattr(nn.init, name) for name in _INITS}
    try:
        for name in _INITS:
            setattr(nn.init, name, _skip)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def _skip(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


def pointwise_weights_channels_last(model: nn.Module) -> None:
    """Give 1x1(x1) conv weights the strides their gradients get in a channels-last body.

    For a 1x1 kernel both layouts are the same bytes, but a channels-last input makes autograd
    return the weight's gradient with channels-last *strides* ((C, 1, C, C) instead of (C, 1, 1, 1)).
    With these strides the weight itself counts as channels-last, so oneDNN runs the conv
    channels-last in either layout of a part (nn/unet.py chooses per call) and the gradient's
    strides never change. DDP's reducer compares strides with its bucket views (made from the parameter's strides) and
    otherwise warns "Grad strides do not match bucket view strides" and copies every such gradient.
    Values, shapes and state-dict contents are unchanged."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)) and all(k == 1 for k in m.kernel_size):
            w = m.weight.data  # (Cout, Cin, 1, 1[, 1]), contiguous
            # (.contiguous(memory_format=...) is a no-op here: size-1 dims make both layouts "contiguous");
            # a view, no copy: with size-1 spatial dims both stride sets address the same bytes
            strides = (w.shape[1], 1, *([w.shape[1]] * (w.dim() - 2)))
            m.weight.data = w.contiguous().as_strided(w.shape, strides)
