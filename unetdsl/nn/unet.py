"""The three models: UNet (encoder, middle, decoder with skip concatenation), and the halves
on their own (latent-diffusion's autoencoder Encoder/Decoder). One forward signature:
`forward(x, t=None, y=None)`. All decisions are made at build time; forward only computes and
checks its inputs (clear errors, from scripted code too).

Submodule names follow diffusers' UNet2DModel where it has the part (`resnets`, `attentions`,
`conv_in`, `time_embedding.linear_1`, ...) so its weights map over by renaming prefixes only.
"""


from typing import Final, Optional

import torch
from torch import nn

from .attention import NoAttention
from .checkpointing import Checkpointable, checkpoint
from .layers import in_place

# a part allowed to run channels-last does so when its input has at least this many positions
# (batch x spatial): oneDNN's channels-last convolutions are faster, but each call reorders the
# (default-layout) weight, which costs more than it saves where the weights are large for the work
# (measured: SD 1.5's U-Net at batch 1, 32x32 latents; DDPM CIFAR-10 at batch 8; benchmarks/)
CHANNELS_LAST_MIN_POSITIONS = 1024


def in_layout(h: torch.Tensor, channels_last: bool, min_positions: int) -> torch.Tensor:
    """`h` in the layout a part runs in: channels-last (NHWC / NDHWC) where the part may and its
    input is large enough, else the default. A no-op when it is already in it; at the boundary
    between parts a copy of a tensor no larger than the part's input otherwise."""
    if not channels_last or h.dim() not in (4, 5):
        return h.contiguous()
    cl = torch.channels_last if h.dim() == 4 else torch.channels_last_3d
    if not torch.jit.is_scripting():  # noqa: SIM102 (TorchScript skips this block only when nested)
        if torch.compiler.is_exporting():
            # torch.export would turn a size test into a guard on the input's size, and the program
            # would refuse every other size: an exported part is channels-last at every size
            return h.contiguous(memory_format=cl)
    if h.numel() < min_positions * h.shape[1]:
        return h.contiguous()
    return h.contiguous(memory_format=cl)


class Level(Checkpointable):
    """One resolution of either side: blocks x ([concat skip] -> ResBlock -> attention), then a
    downsample (encoder levels) or an upsample (decoder levels), or neither (the last level).

    Pure: forward takes the skip tensors this level consumes and returns, besides the features,
    the skip tensors it produces, instead of reading or appending to a shared list. In a U-Net an
    encoder level produces every block output and its downsample output (`push_skips`); a decoder
    level consumes one per block (`num_skips`), concatenated before the block. Wrappers that copy
    or re-run arguments (FSDP2's pre-forward hook, activation checkpointing, torch.compile,
    forward hooks) therefore see the same computation."""

    push_skips: Final[bool]
    push_resampled: Final[bool]  # ...the downsample's output too (encoder.skips: every)
    last_only: Final[bool]  # ...only the last block's output (encoder.skips: levels)
    num_skips: Final[int]
    channels_last: Final[bool]
    min_positions: Final[int]  # (TorchScript reads no module-level ints: a constant per module)

    def __init__(self, resnets: list[nn.Module], attentions: list[nn.Module], *,
                 downsample: Optional[nn.Module] = None, upsample: Optional[nn.Module] = None,
                 push_skips: bool = False, consume_skips: bool = False, channels_last: bool = False,
                 pyramid: Optional[nn.Module] = None, push_resampled: bool = True, skip_levels: bool = False,
                 project: Optional[nn.Module] = None):
        super().__init__()
        self.channels_last = channels_last  # may run channels-last (on inputs large enough)
        self.min_positions = CHANNELS_LAST_MIN_POSITIONS
        self.push_skips = push_skips
        self.push_resampled = push_resampled
        # encoder.skips levels: one skip a level (its last block's output; the first decoder block takes it)
        self.num_skips = (1 if skip_levels else len(resnets)) if consume_skips else 0
        self.last_only = skip_levels
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(attentions)  # NoAttention where the level has none
        # two names, as diffusers' down and up blocks have them (weights map by prefix); one is None
        self.downsample = downsample
        self.upsample = upsample
        # NCSN++'s pyramid (nn/pyramid.py), registered last: the state dicts of levels without one are
        # unchanged. An encoder level's joins the features after its downsample, a decoder level's
        # reads them before its upsample; (h, aux) -> (h, aux) either way
        self.pyramid = pyramid
        # channel_change resample: the last level's 3x3 conv to the next part's width (lucidrains), or None
        self.project = project

    def forward(self, h: torch.Tensor, temb: Optional[torch.Tensor], skips: list[torch.Tensor],
                context: Optional[torch.Tensor], aux: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, list[torch.Tensor], Optional[torch.Tensor]]:
        """-> (features, the skips this level made, the pyramid `aux` after this level: nn/pyramid.py)."""
        if self.checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return self._checkpointed(h, temb, skips, context, aux)
        return self._forward(h, temb, skips, context, aux)

    @torch.jit.unused
    def _checkpointed(self, h: torch.Tensor, temb: Optional[torch.Tensor], skips: list[torch.Tensor],
                      context: Optional[torch.Tensor], aux: Optional[torch.Tensor]
                      ) -> tuple[torch.Tensor, list[torch.Tensor], Optional[torch.Tensor]]:
        return checkpoint(self._forward, h, temb, skips, context, aux)

    def _forward(self, h: torch.Tensor, temb: Optional[torch.Tensor], skips: list[torch.Tensor],
                 context: Optional[torch.Tensor], aux: Optional[torch.Tensor]
                 ) -> tuple[torch.Tensor, list[torch.Tensor], Optional[torch.Tensor]]:
        if len(skips) != self.num_skips:
            raise ValueError(f"unetdsl: this level takes {self.num_skips} skip tensors, got {len(skips)}")
        h = in_layout(h, self.channels_last, self.min_positions)
        produced: list[torch.Tensor] = []  # this level's own skip outputs, in the order they are made
        last = len(self.resnets) - 1
        for i, (res, attn) in enumerate(zip(self.resnets, self.attentions)):
            if i < self.num_skips:
                h = torch.cat([h, in_layout(skips[i], self.channels_last, self.min_positions)], dim=1)  # (B, C + C_skip, *S)
            h = attn(res(h, temb), context)
            if self.push_skips and (not self.last_only or i == last):
                produced.append(h)
        if self.downsample is not None:
            h = self.downsample(h, temb)  # (B, C, *S/2)
            if self.pyramid is not None:  # the input pyramid joins: its sum is the skip
                h, aux = self.pyramid(h, aux)
            if self.push_skips and self.push_resampled:
                produced.append(h)
        if self.upsample is not None:
            if self.pyramid is not None:  # the output pyramid reads the features at this size
                h, aux = self.pyramid(h, aux)
            h = self.upsample(h, temb)  # (B, C, *2S)
        if self.project is not None:
            h = self.project(h)  # (B, C_next, *S)
        return h, produced, aux


class MiddleBlock(Checkpointable):
    """ResBlock, then (attention -> ResBlock) for the rest (diffusers UNetMidBlock2D)."""

    channels_last: Final[bool]
    min_positions: Final[int]

    def __init__(self, resnets: list[nn.Module], attentions: list[nn.Module], channels_last: bool = False,
                 down: Optional[nn.Module] = None, up: Optional[nn.Module] = None):
        super().__init__()
        self.channels_last = channels_last
        self.min_positions = CHANNELS_LAST_MIN_POSITIONS
        self.resnets = nn.ModuleList(resnets)
        # middle.resample: halve the size first, double it last (Dance Diffusion's UNetMidBlock1D), or None
        self.down = down
        self.up = up
        # attention i follows resnet i; the last resnet is followed by NoAttention (no weights)
        self.attentions = nn.ModuleList([*attentions, *[NoAttention() for _ in range(len(resnets) - len(attentions))]])

    def forward(self, h: torch.Tensor, temb: Optional[torch.Tensor], context: Optional[torch.Tensor]) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return self._checkpointed(h, temb, context)
        return self._forward(h, temb, context)

    @torch.jit.unused
    def _checkpointed(self, h: torch.Tensor, temb: Optional[torch.Tensor], context: Optional[torch.Tensor]) -> torch.Tensor:
        return checkpoint(self._forward, h, temb, context)

    def _forward(self, h: torch.Tensor, temb: Optional[torch.Tensor], context: Optional[torch.Tensor]) -> torch.Tensor:
        if self.down is not None:
            h = self.down(h)  # (B, C, *S/2)
        h = in_layout(h, self.channels_last, self.min_positions)
        for res, attn in zip(self.resnets, self.attentions):
            h = attn(res(h, temb), context)
        if self.up is not None:
            h = self.up(h)  # (B, C, *2S)
        return h


class Head(nn.Module):
    """[norm -> act ->] conv to the output channels."""

    def __init__(self, norm: Optional[nn.Module], act: nn.Module, conv: nn.Module, block: Optional[nn.Module] = None):
        super().__init__()
        self.norm = norm
        self.act = act
        self.act_ = in_place(act)  # inference, on the norm's output (layers.in_place)
        self.conv = conv
        self.block = block  # a ResBlock on cat(h, the stem's output) first (lucidrains' final_res_block), or None

    def forward(self, h: torch.Tensor, stem: Optional[torch.Tensor] = None, temb: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        if self.block is not None:
            if stem is None:
                raise ValueError("unetdsl: this head's stem block takes the stem's output")
            h = self.block(torch.cat([h, stem.to(h.dtype)], dim=1), temb)  # (B, C + C_stem, *S) -> (B, C, *S)
        if self.norm is not None:
            h = self.norm(h)
            h = self.act(h) if torch.is_grad_enabled() else self.act_(h)
        return self.conv(h)


class _Net(nn.Module):
    """stem -> encoder levels -> middle -> decoder levels -> head, for all three models: an
    encoder alone has no decoder levels, a decoder alone no encoder levels (empty lists hold no
    weights, so each model's state dict has only its own parts), and only a U-Net keeps skips.
    The subclasses differ in name only, so that an artifact's class says which model it is."""

    dims: Final[int]
    in_channels: Final[int]
    size_multiple: Final[int]
    size_min: Final[int]  # the smallest spatial size (reflect-padded resampling needs positions to reflect)
    center_input: Final[bool]
    divide_by_timestep: Final[bool]
    channels_last: Final[bool]
    min_positions: Final[int]
    context_dim: Final[int]  # 0: the model takes no context; else the width it takes (before any projection)
    takes_residuals: Final[bool]  # a U-Net: its decoder consumes skips a ControlNet's residuals are added to
    push_stem: Final[bool]  # the stem's output is the first skip (encoder.skips: every)
    time_into_input: Final[bool]  # time.into input: the time features are input channels, no ResBlock takes time

    def __init__(self, *, dims: int, in_channels: int, size_multiple: int, conv_in: nn.Module,
                 time_embedding: Optional[nn.Module], encoder: list[Level], middle: MiddleBlock,
                 decoder: list[Level], head: Head, center_input: bool = False,
                 divide_by_timestep: bool = False, channels_last: bool = False, context_dim: int = 0,
                 quant_conv: Optional[nn.Module] = None, post_quant_conv: Optional[nn.Module] = None,
                 context_proj: Optional[nn.Linear] = None, preconditioning: Optional[nn.Module] = None,
                 push_stem: bool = True, time_into_input: bool = False, size_min: int = 1):
        super().__init__()
        self.context_dim = context_proj.in_features if context_proj is not None else context_dim
        self.dims, self.in_channels, self.size_multiple = dims, in_channels, size_multiple
        self.center_input, self.divide_by_timestep = center_input, divide_by_timestep
        # Whether the stem may run channels-last (NHWC / NDHWC); like each level and the middle, it
        # decides per call by its input's size (in_layout).
        # Inputs and outputs stay in the default layout; values are unchanged.
        self.channels_last = channels_last and dims in (2, 3)
        self.min_positions = CHANNELS_LAST_MIN_POSITIONS
        self.conv_in = conv_in
        self.time_embedding = time_embedding
        self.head = head
        self.encoder = nn.ModuleList(encoder)  # registered after the head: the state dict's order is the artifacts'
        self.middle = middle
        self.decoder = nn.ModuleList(decoder)
        self.takes_residuals = bool(decoder) and decoder[0].num_skips > 0
        self.push_stem = push_stem
        self.size_min = size_min
        self.time_into_input = time_into_input
        # an autoencoder's halves: 1x1 convs on the moments after the head (encoder) and on the
        # latent before the stem (decoder), registered last (they are new, the order is the artifacts')
        self.quant_conv = quant_conv
        self.post_quant_conv = post_quant_conv
        # the context as given (B, T, context_input_dim) -> (B, T, context_dim) (diffusers' encoder_hid_proj)
        self.encoder_hid_proj = context_proj
        # the denoiser around the network (nn/precond.py): sigma (B,) -> c_skip, c_out, c_in, c_noise; no weights
        self.preconditioning = preconditioning

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != self.dims + 2:
            raise ValueError(f"unetdsl: expected input of shape (B, C, {self.dims} spatial dims), got {x.dim()} dims")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"unetdsl: expected {self.in_channels} input channels, got {x.shape[1]}")
        for size in x.shape[2:]:
            if size < self.size_min:
                raise ValueError(f"unetdsl: every spatial size must be at least {self.size_min} (its reflect-padded "
                                 f"resampling needs positions to reflect); got {list(x.shape[2:])}")
            if size % self.size_multiple != 0:
                raise ValueError(f"unetdsl: every spatial size must be a multiple of {self.size_multiple} "
                                 f"(the total downsampling); got {list(x.shape[2:])}")

    def _embed(self, x: torch.Tensor, t: Optional[torch.Tensor], y: Optional[torch.Tensor],
               cond: Optional[dict[str, torch.Tensor]], context: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if self.time_embedding is None:
            if t is not None or y is not None or cond is not None:
                raise ValueError("unetdsl: this model has no time (or class, or condition) embedding: call model(x)")
            return None
        if t is None:
            raise ValueError("unetdsl: this model is conditioned on the timestep: call model(x, t)")
        return self.time_embedding(t, x.shape[0], y, cond, context)  # (B, T); the context as given (IF pools it)

    def _centered(self, x: torch.Tensor) -> torch.Tensor:
        """What the stem (and an input pyramid) reads: x, or 2x - 1 for inputs in [0, 1]."""
        return 2.0 * x - 1.0 if self.center_input else x

    def _with_time(self, x: torch.Tensor, temb: Optional[torch.Tensor]) -> torch.Tensor:
        """time.into input: x (B, C, *S) and the time features (B, F) repeated along the positions ->
        (B, C + F, *S) (Dance Diffusion); x otherwise."""
        if not self.time_into_input or temb is None:
            return x
        features = temb.to(x.dtype)
        for _ in range(self.dims):
            features = features.unsqueeze(-1)
        shape = [x.shape[0], features.shape[1]] + list(x.shape[2:])  # noqa: RUF005 (TorchScript: no starred lists)
        return torch.cat([x, features.expand(shape)], dim=1)

    def _stem(self, x: torch.Tensor, added: Optional[torch.Tensor] = None) -> torch.Tensor:
        """conv_in(x) (+ `added`: a ControlNet's embedded hint), in the layout the body runs in."""
        h = self.conv_in(x)
        if added is not None:
            h = h + added
        return in_layout(h, self.channels_last, self.min_positions)

    def _encoded(self, h: torch.Tensor, temb: Optional[torch.Tensor], context: Optional[torch.Tensor],
                 image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The encoder levels on the stem's output: the features, and the skips in the order they are
        made (the stem's first, then every block and downsample output; a U-Net's and ControlNet's only).
        `image`, the stem's input, starts an input pyramid (levels without one pass it on)."""
        skips: list[torch.Tensor] = [h] if self.push_stem else []
        none: list[torch.Tensor] = []
        aux: Optional[torch.Tensor] = image
        for level in self.encoder:
            h, produced, aux = level(h, temb, none, context, aux)
            skips.extend(produced)
        return h, skips

    def forward(self, x: torch.Tensor, t: Optional[torch.Tensor] = None, y: Optional[torch.Tensor] = None,
                context: Optional[torch.Tensor] = None, cond: Optional[dict[str, torch.Tensor]] = None,
                residuals: Optional[list[torch.Tensor]] = None) -> torch.Tensor:
        """x (B, Cin, *S), t () | (B,), y (B,), context (B, T, context_dim), cond {name: (B, width)},
        residuals (a U-Net's: a ControlNet's output, one per skip then the middle's) -> (B, Cout, *S')."""
        self._check(x)
        self._check_context(x, context)
        noisy = x
        coefficients: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        if self.preconditioning is not None:  # t is sigma: the network sees c_in x and c_noise
            x, t, coefficients = self._preconditioned(x, t)
        temb = self._embed(x, t, y, cond, context)
        context = self._projected(context)
        if self.post_quant_conv is not None:
            x = self.post_quant_conv(x)  # (B, latent, *S)
        x = self._centered(x)
        stem = self._stem(self._with_time(x, temb))
        if self.time_into_input:
            temb = None  # (its features are in the input now)
        h, skips = self._encoded(stem, temb, context, x)
        if residuals is not None:
            skips = self._added(skips, residuals)
        h = self.middle(h, temb, context)
        if residuals is not None:
            if residuals[-1].shape != h.shape:
                raise ValueError(f"unetdsl: the last residual (the middle's) should have shape {list(h.shape)}, "
                                 f"got {list(residuals[-1].shape)}")
            h = h + residuals[-1]  # (B, C, *S/f): the middle's output
        aux: Optional[torch.Tensor] = None  # an output pyramid's running sum (B, Cout, *S)
        for level in self.decoder:
            # this level's skips, last produced first: the stack pops, the level only reads
            taken = [skips.pop() for _ in range(level.num_skips)]  # type: ignore[arg-type]
            h, _produced, aux = level(h, temb, taken, context, aux)  # a decoder level produces no skips
        out = self._finish(h, t, aux, stem, temb)
        if self.quant_conv is not None:
            out = self.quant_conv(out)  # (B, 2 x latent, *S): the posterior's moments
        if coefficients is not None:  # D = c_skip x + c_out F, in the coefficients' precision
            c_skip, c_out = coefficients
            out = (c_skip * noisy.to(c_skip.dtype) + c_out * out.to(c_out.dtype)).to(noisy.dtype)
        return out

    def _preconditioned(self, x: torch.Tensor, t: Optional[torch.Tensor]
                        ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, C, *S), sigma = t () | (B,) -> c_in x, c_noise (B,), and (c_skip, c_out) shaped (B, 1, ...)."""
        if t is None:
            raise ValueError("unetdsl: this model is a denoiser: call model(x, sigma) with the noise level sigma")
        if t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"unetdsl: the noise level sigma is a real number, got {t.dtype}")
        sigma = t.reshape(-1).to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        if sigma.shape[0] == 1 and x.shape[0] != 1:
            sigma = sigma.expand(x.shape[0])
        if sigma.shape[0] != x.shape[0]:
            raise ValueError(f"unetdsl: got {sigma.shape[0]} noise levels for a batch of {x.shape[0]}; give one, "
                             "or one per sample")
        assert self.preconditioning is not None
        c_skip, c_out, c_in, c_noise = self.preconditioning(sigma)
        shape = [x.shape[0]] + [1] * (x.dim() - 1)  # (B, 1, ...): one per sample
        x_in = (c_in.reshape(shape) * x.to(c_in.dtype)).to(x.dtype)
        return x_in, c_noise, (c_skip.reshape(shape), c_out.reshape(shape))

    def _added(self, skips: list[torch.Tensor], residuals: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each skip plus its residual (a ControlNet's, diffusers' down_block_additional_residuals)."""
        if not self.takes_residuals:
            raise ValueError("unetdsl: only a U-Net takes residuals (they are added to its skips)")
        if len(residuals) != len(skips) + 1:
            raise ValueError(f"unetdsl: this U-Net takes {len(skips) + 1} residuals (one per skip, then the "
                             f"middle's), got {len(residuals)}")
        out: list[torch.Tensor] = []
        for i, skip in enumerate(skips):
            if residuals[i].shape != skip.shape:
                raise ValueError(f"unetdsl: residual {i} should have shape {list(skip.shape)}, got "
                                 f"{list(residuals[i].shape)}")
            out.append(skip + residuals[i])
        return out

    def _projected(self, context: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The context projected to the width the attention blocks take where the model has a
        projection: (B, T, context_dim) -> (B, T, attended width)."""
        if context is not None and self.encoder_hid_proj is not None:
            context = self.encoder_hid_proj(context)
        return context

    def _check_context(self, x: torch.Tensor, context: Optional[torch.Tensor]) -> None:
        if context is None:
            if self.context_dim > 0:
                raise ValueError(f"unetdsl: this model attends to a context of shape (B, tokens, {self.context_dim}): "
                                 "call model(x, t, context=...)")
            return
        if self.context_dim == 0:
            raise ValueError("unetdsl: this model takes no context (its spec has no context_dim)")
        if context.dim() != 3 or context.shape[0] != x.shape[0] or context.shape[2] != self.context_dim:
            raise ValueError(f"unetdsl: expected a context of shape ({x.shape[0]}, tokens, {self.context_dim}), "
                             f"got {list(context.shape)}")

    def _finish(self, h: torch.Tensor, t: Optional[torch.Tensor], aux: Optional[torch.Tensor] = None,
                stem: Optional[torch.Tensor] = None, temb: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.head(h, stem, temb)
        if aux is not None:
            out = out + aux  # an output pyramid's sum of the lower levels' heads
        if self.divide_by_timestep and t is not None:
            # score models: the output is divided by the noise level t, one per sample
            sigma = t.reshape(-1).to(out.dtype).expand(out.shape[0])
            for _ in range(out.dim() - 1):
                sigma = sigma.unsqueeze(-1)
            out = out / sigma
        return out.contiguous()


class UNet(_Net):
    """x (B, Cin, *S), t () | (B,), y (B,) -> (B, Cout, *S). The encoder's levels push skip
    tensors, the decoder's consume them."""


class Encoder(_Net):
    """x (B, Cin, *S) -> (B, Cout, *S / 2^(levels-1)): encoder levels and the middle, no skips."""


class Decoder(_Net):
    """z (B, Cin, *S) -> (B, Cout, *S * 2^(levels-1)): the middle first, then the decoder levels."""


class AutoencoderKL(nn.Module):
    """Latent diffusion's KL autoencoder (diffusers' AutoencoderKL): `encoder` (x -> the posterior's
    moments, quant conv included) and `decoder` (z -> x, post-quant conv included), each a model of
    its own that exports alone. x (B, Cin, *S) -> (B, Cout, *S): decode(the posterior's mean), as
    diffusers' forward by default. `scaling_factor` is carried, never applied (as diffusers)."""

    latent_channels: Final[int]
    scaling_factor: Final[float]

    def __init__(self, *, encoder: Encoder, decoder: Decoder, latent_channels: int, scaling_factor: float):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.latent_channels = latent_channels
        self.scaling_factor = scaling_factor

    def forward(self, x: torch.Tensor, t: Optional[torch.Tensor] = None, y: Optional[torch.Tensor] = None,
                context: Optional[torch.Tensor] = None, cond: Optional[dict[str, torch.Tensor]] = None) -> torch.Tensor:
        if t is not None or y is not None or context is not None or cond is not None:
            raise ValueError("unetdsl: an autoencoder takes images only: call model(x)")
        mean = self.encode(x)[:, : self.latent_channels]  # the posterior's mode
        return self.decode(mean)

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, Cin, *S) -> the posterior's moments (B, 2 x latent, *S/f): mean, then log-variance
        (diffusers' latent_dist.parameters; sample as mean + exp(logvar / 2) * noise, logvar clamped
        to [-30, 20] as diffusers does)."""
        return self.encoder(x)

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent, *S/f) -> (B, Cout, *S)."""
        return self.decoder(z)
