"""The building blocks, checked against hand computations and the seed text's claims."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unetdsl.nn.attention import AttentionBlock
from unetdsl.nn.layers import ACTIVATIONS, NORMS, activation, conv_nd, norm, prepacking_off
from unetdsl.nn.resblock import ResBlock
from unetdsl.nn.sampling import ConvDownsample, InterpolateUpsample, PoolDownsample, TransposedUpsample
from unetdsl.nn.time import FourierProjection, SinusoidalProjection
from unetdsl.spec.vocabulary import Activation, NormType, names
from unetdsl.torchscript import script

torch.manual_seed(0)


def block(dims: int = 2, cin: int = 4, cout: int = 8, *, pre: bool = True, scale_shift: bool = False,
          kind: str = "group", temb: int | None = 6, act: str = "silu") -> ResBlock:
    groups = 2
    return ResBlock(dims=dims, in_channels=cin, out_channels=cout, temb_channels=temb,
                    norm1=norm(kind, dims, cin if pre else cout, groups, 1e-5), norm2=norm(kind, dims, cout, groups, 1e-5),
                    act=activation(act), dropout=0.0, pre=pre, scale_shift=scale_shift).eval()


def test_registries_cover_exactly_the_vocabulary() -> None:
    assert set(ACTIVATIONS) == set(names(Activation))
    assert set(NORMS) == set(names(NormType))
    with pytest.raises(KeyError, match="known: silu, gelu"):
        activation("swish")


def test_resblock_pre_matches_hand_computation() -> None:
    b = block()
    x, t = torch.randn(3, 4, 5, 5), torch.randn(3, 6)
    h = F.silu(F.group_norm(x, 2, b.norm1.weight, b.norm1.bias, 1e-5))
    h = F.conv2d(h, b.conv1.weight, b.conv1.bias, padding=1)
    h = h + F.linear(F.silu(t), b.time_emb_proj.weight, b.time_emb_proj.bias)[:, :, None, None]
    h = F.silu(F.group_norm(h, 2, b.norm2.weight, b.norm2.bias, 1e-5))
    h = F.conv2d(h, b.conv2.weight, b.conv2.bias, padding=1)
    expected = F.conv2d(x, b.conv_shortcut.weight, b.conv_shortcut.bias) + h
    torch.testing.assert_close(b(x, t), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("act", ["silu", "gelu", "mish"])
@pytest.mark.parametrize(("pre", "scale_shift", "cin"), [(True, False, 4), (False, False, 8), (True, True, 8), (False, True, 4)])
def test_inference_activations_in_place_touch_only_the_blocks_own_tensors(act: str, pre: bool, scale_shift: bool,
                                                                          cin: int) -> None:
    """In inference a ResBlock applies its activations in place (layers.in_place), on tensors it
    made itself: the numbers are the out-of-place ones, and neither its input x (a skip the U-Net
    keeps) nor the time embedding (shared by every block) is written."""
    b = block(cin=cin, pre=pre, scale_shift=scale_shift, act=act)
    x, t = torch.randn(2, cin, 5, 5), torch.randn(2, 6)
    x0, t0 = x.clone(), t.clone()
    want = b(x, t)  # grad enabled: out of place
    with torch.inference_mode(), prepacking_off(b):  # the same convolution kernels: exact equality
        got = b(x, t)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.equal(x, x0) and torch.equal(t, t0)
    assert b.nonlinearity_ is not b.nonlinearity if act != "gelu" else b.nonlinearity_ is b.nonlinearity
    assert script(b)(x, t).equal(want)  # TorchScript takes the same branch


def test_resblock_scale_shift_matches_hand_computation() -> None:
    b = block(cin=8, scale_shift=True)
    x, t = torch.randn(2, 8, 4, 4), torch.randn(2, 6)
    h = F.conv2d(F.silu(F.group_norm(x, 2, b.norm1.weight, b.norm1.bias, 1e-5)), b.conv1.weight, b.conv1.bias, padding=1)
    s, sh = F.linear(F.silu(t), b.time_emb_proj.weight, b.time_emb_proj.bias)[:, :, None, None].chunk(2, dim=1)
    h = F.group_norm(h, 2, b.norm2.weight, b.norm2.bias, 1e-5) * (1 + s) + sh
    h = F.conv2d(F.silu(h), b.conv2.weight, b.conv2.bias, padding=1)
    assert b.conv_shortcut is None
    torch.testing.assert_close(b(x, t), x + h, rtol=0, atol=1e-6)


def test_scale_shift_with_zero_projection_equals_the_plain_block() -> None:
    ss, plain = block(scale_shift=True), block(scale_shift=False)
    plain.load_state_dict({k: v for k, v in ss.state_dict().items() if not k.startswith("time_emb_proj")}, strict=False)
    for b in (ss, plain):
        nn.init.zeros_(b.time_emb_proj.weight)
        nn.init.zeros_(b.time_emb_proj.bias)
    x, t = torch.randn(2, 4, 6, 6), torch.randn(2, 6)
    torch.testing.assert_close(ss(x, t), plain(x, t), rtol=0, atol=0)
    torch.testing.assert_close(ss(x, t), plain(x, None), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["group", "layer", "instance"])
@pytest.mark.parametrize("pre", [True, False])
def test_per_sample_norms_do_not_mix_the_batch(kind: str, pre: bool) -> None:
    b = block(kind=kind, pre=pre)
    x, t = torch.randn(4, 4, 6, 6), torch.randn(4, 6)
    others = x.clone()
    others[1:] = torch.randn(3, 4, 6, 6) * 10 + 3  # change every other sample drastically
    torch.testing.assert_close(b(x, t)[:1], b(others, t)[:1], rtol=0, atol=0)


def test_batch_norm_does_mix_the_batch_in_training() -> None:
    b = block(kind="batch").train()
    x, t = torch.randn(4, 4, 6, 6), torch.randn(4, 6)
    assert not torch.allclose(b(x[:1], t[:1]), b(x, t)[:1])


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_3x3_padding_1_keeps_size_and_resampling_halves_or_doubles(dims: int) -> None:
    x = torch.randn(2, 4, *[8] * dims)
    assert conv_nd(dims, 4, 6, 3, padding=1)(x).shape == (2, 6, *[8] * dims)
    downs = [ConvDownsample(dims=dims, channels=4), ConvDownsample(dims=dims, channels=4, padding=0),
             PoolDownsample(dims=dims, kind="avgpool"), PoolDownsample(dims=dims, kind="maxpool")]
    for d in downs:
        assert d(x, None).shape == (2, 4, *[4] * dims)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[dims]
    ups = [InterpolateUpsample(dims=dims, channels=4, mode="nearest"), InterpolateUpsample(dims=dims, channels=4, mode=mode),
           TransposedUpsample(dims=dims, channels=4)]
    for u in ups:
        assert u(x, None).shape == (2, 4, *[16] * dims)


def test_asymmetric_conv_downsample_pads_right_and_bottom_only() -> None:
    d = ConvDownsample(dims=2, channels=1, padding=0)
    x = torch.randn(1, 1, 4, 4)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), d.conv.weight, d.conv.bias, stride=2)
    torch.testing.assert_close(d(x, None), expected, rtol=0, atol=0)


@pytest.mark.parametrize("features", [8, 7])
@pytest.mark.parametrize("flip", [True, False])
def test_sinusoidal_embedding_matches_hand_computation(features: int, flip: bool) -> None:
    proj = SinusoidalProjection(features=features, flip_sin_to_cos=flip, freq_shift=1.0, max_period=10000.0)
    t = torch.tensor([0.0, 3.0, 999.0])
    half = features // 2
    freqs = [math.exp(-math.log(10000.0) * i / (half - 1.0)) for i in range(half)]
    rows = []
    for ti in t.tolist():
        sin = [math.sin(ti * f) for f in freqs]
        cos = [math.cos(ti * f) for f in freqs]
        row = cos + sin if flip else sin + cos
        rows.append(row + [0.0] * (features % 2))
    torch.testing.assert_close(proj(t), torch.tensor(rows), rtol=0, atol=2e-4)  # float32 of t*f up to ~1e3


def test_fourier_projection_is_fixed_and_uses_log() -> None:
    p = FourierProjection(features=6, scale=16.0, log=True, flip_sin_to_cos=False)
    assert not p.weight.requires_grad and p.weight.shape == (3,)
    t = torch.tensor([2.0])
    arg = math.log(2.0) * p.weight * 2 * math.pi
    torch.testing.assert_close(p(t)[0], torch.cat([arg.sin(), arg.cos()]), rtol=0, atol=1e-5)


def test_attention_matches_plain_softmax_attention() -> None:
    a = AttentionBlock(channels=8, heads=2, norm=nn.GroupNorm(2, 8)).eval()
    x = torch.randn(2, 8, 3, 3)
    h = a.group_norm(x).reshape(2, 8, 9).transpose(1, 2)  # (B, N, C)
    q, k, v = (lin(h).reshape(2, 9, 2, 4).transpose(1, 2) for lin in (a.to_q, a.to_k, a.to_v))
    w = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1)  # sqrt(head_dim 4)
    out = a.to_out((w @ v).transpose(1, 2).reshape(2, 9, 8)).transpose(1, 2).reshape(2, 8, 3, 3)
    torch.testing.assert_close(a(x), x + out, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dims", [1, 3])
def test_blocks_script_in_every_dimension(dims: int) -> None:
    b = block(dims=dims, pre=False, scale_shift=True)
    x, t = torch.randn(2, 4, *[4] * dims), torch.randn(2, 6)
    torch.testing.assert_close(script(b)(x, t), b(x, t), rtol=0, atol=1e-6)
