"""The diffusion ResBlock (DDPM / diffusers ResnetBlock2D), in both orders and both injections.

pre  (default): h = conv1(act(norm1(x)))
                add:         h = conv2(drop(act(norm2(h + proj(act(t))))))
                scale_shift: s, b = proj(act(t)); h = conv2(drop(act(norm2(h) * (1 + s) + b)))
post:           h = act(norm1(conv1(x)))
                add:         h = act(norm2(conv2(drop(h + proj(act(t))))))
                scale_shift: h = act(norm2(conv2(drop(h))) * (1 + s) + b)
out = (shortcut(x) + h) * residual_scale,  shortcut = 1x1 conv when channels change, else identity;
the time embedding's act skipped with time_activation false (diffusers' skip_time_act).
time_first (post order): the embedding joins norm1's output instead, h = act(norm1(conv1(x)) * (1 + s) + b)
(or + proj(t)), and norm2 takes none (lucidrains' ResnetBlock: Block1 takes the scale and shift).

`resample` ('up'/'down') makes it the ResBlock-up/down of guided-diffusion and diffusers
(ResnetBlock2D(up/down=True)): nearest x2 / avg-pool /2 applied to both the branch (after the
first norm+act in pre order) and the shortcut input.
"""


from typing import Final, Optional

import torch
from torch import nn

from .checkpointing import Checkpointable, checkpoint
from .layers import broadcast_to_spatial, conv_nd, in_place, zero_module


class ResBlock(Checkpointable):
    pre: Final[bool]
    scale_shift: Final[bool]
    dims: Final[int]
    residual_scale: Final[float]
    time_activation: Final[bool]
    time_first: Final[bool]
    final: Final[bool]

    def __init__(
        self,
        *,
        dims: int,
        in_channels: int,
        out_channels: int,
        temb_channels: Optional[int],
        norm1: nn.Module,
        norm2: nn.Module,
        act: nn.Module,
        dropout: float,
        pre: bool,
        scale_shift: bool,
        resample: Optional[nn.Module] = None,
        zero_out: bool = False,
        conv1_bias: bool = True,
        conv2_bias: bool = True,
        residual_scale: float = 1.0,
        time_activation: bool = True,
        shortcut_conv: bool = False,
        time_first: bool = False,
        kernel_size: int = 3,
        mid_channels: int = 0,
        shortcut_bias: bool = True,
        final: bool = False,
    ):
        super().__init__()
        self.dims, self.pre, self.scale_shift = dims, pre, scale_shift
        self.residual_scale, self.time_activation = residual_scale, time_activation
        self.time_first = time_first  # the time embedding joins at norm1 instead of norm2 (lucidrains)
        # (B, Cin, ...) -> (B, Cout, ...). The compiler drops a conv's bias only where the norm right
        # after it subtracts a per-channel mean (instance, batch); GroupNorm removes only a
        # per-group mean, so there a per-channel bias still matters (and diffusers carries it).
        self.norm1 = norm1
        mid = mid_channels or out_channels  # conv1's width (the width changes in conv2 where it is not out_channels)
        self.conv1 = conv_nd(dims, in_channels, mid, kernel_size, padding=kernel_size // 2, bias=conv1_bias)
        # (no instance annotations on these Optional submodules: TorchScript warns about them)
        self.time_emb_proj = (None if temb_channels is None
                              else nn.Linear(temb_channels, self._time_width(mid, out_channels) * (2 if scale_shift else 1)))
        self.norm2 = norm2
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv_nd(dims, mid, out_channels, kernel_size, padding=kernel_size // 2, bias=conv2_bias)
        if zero_out:
            zero_module(self.conv2)
        self.nonlinearity = act
        self.nonlinearity_ = in_place(act)  # inference, on this block's own tensors (layers.in_place)
        # a 1x1 conv where the channels change, or where asked (EDM's resampling blocks project theirs)
        self.conv_shortcut = (conv_nd(dims, in_channels, out_channels, 1, bias=shortcut_bias)
                              if in_channels != out_channels or shortcut_conv else None)
        self.final = final  # post order: no norm2 and act after conv2 (the model's output: Dance Diffusion's is_last)
        self.resample = resample  # parameter-free x2 / /2 (ResBlock-up/down), or None

    def _time_width(self, mid: int, out: int) -> int:
        """The width the embedding joins at: norm2's output in post order with scale-shift at the second
        norm (the block's output width), else conv1's (the added embedding, the first norm, pre's norm2)."""
        return out if self.scale_shift and not self.pre and not self.time_first else mid

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor]) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return self._checkpointed(x, temb)
        return self._forward(x, temb)

    @torch.jit.unused
    def _checkpointed(self, x: torch.Tensor, temb: Optional[torch.Tensor]) -> torch.Tensor:
        return checkpoint(self._forward, x, temb)

    def _forward(self, x: torch.Tensor, temb: Optional[torch.Tensor]) -> torch.Tensor:
        # x: (B, Cin, *spatial); temb: (B, T) or None
        t: Optional[torch.Tensor] = None  # the projected embedding (B, C[*2], 1...)
        if self.time_emb_proj is not None and temb is not None:
            temb = self.nonlinearity(temb) if self.time_activation else temb
            t = broadcast_to_spatial(self.time_emb_proj(temb), self.dims)
        first = t if self.time_first else None  # where the embedding joins: norm1's output, or at norm2
        second = None if self.time_first else t
        shortcut = x
        if self.pre:
            h = self._act(self._joined(self.norm1(x), first))
            if self.resample is not None:
                h = self.resample(h)
                shortcut = self.resample(shortcut)
            h = self.conv1(h)
        else:
            if self.resample is not None:
                x = self.resample(x)
                shortcut = x
            h = self._act(self._joined(self.norm1(self.conv1(x)), first))

        if second is not None and not self.scale_shift:  # add: before norm2
            h = h + second if torch.is_grad_enabled() else h.add_(second)  # (inference: into h's own memory)
        scale_shift = second if self.scale_shift else None  # scale-shift: norm2's output
        if self.pre:
            h = self._joined(self.norm2(h), scale_shift)
            h = self.conv2(self.dropout(self._act(h)))
        elif self.final:
            h = self.conv2(self.dropout(h))
        else:
            h = self._act(self._joined(self.norm2(self.conv2(self.dropout(h))), scale_shift))

        if self.conv_shortcut is not None:
            shortcut = self.conv_shortcut(shortcut)
        # h first: the sum takes its first operand's layout, the block's input's (a 1x1 shortcut
        # conv's output is channels-last even in a default-layout part, compiler.py)
        if torch.is_grad_enabled():
            out = h + shortcut  # (B, Cout, *spatial)
            return out if self.residual_scale == 1.0 else out * self.residual_scale
        out = h.add_(shortcut)  # inference: h is this block's own tensor
        return out if self.residual_scale == 1.0 else out.mul_(self.residual_scale)

    def _joined(self, h: torch.Tensor, t: Optional[torch.Tensor]) -> torch.Tensor:
        """A norm's output `h` (this block's own tensor) with the embedding `t` joined: h * (1 + scale) +
        shift (scale_shift) or h + t (add); `h` where t is None. In place in inference (the same
        roundings, no new (B, C, *S) tensors)."""
        if t is None:
            return h
        if not self.scale_shift:
            return h + t if torch.is_grad_enabled() else h.add_(t)
        scale, shift = t.chunk(2, dim=1)
        if torch.is_grad_enabled():
            return h * (1.0 + scale) + shift
        return h.mul_(1.0 + scale).add_(shift)

    def _act(self, h: torch.Tensor) -> torch.Tensor:
        """The activation of a tensor this block made (a norm's output): in place in inference."""
        if torch.is_grad_enabled():
            return self.nonlinearity(h)
        return self.nonlinearity_(h)
