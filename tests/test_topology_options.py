"""Topology options (issue 24, first part): the stem's own width and kernel (EDM's model_channels below
a wider level 0, lucidrains' 7x7 stem, diffusers' conv_in_kernel), each ResBlock's residual scale
(EDM's skip_scale, diffusers' resnet_out_scale_factor and mid_block_scale_factor) and a ResBlock
that takes the time embedding without its own activation (diffusers' resnet_skip_time_act, EDM).
Hand computations, the channel flow, 1D/2D/3D, scripting and export; diffusers parity for the
options it has is in tests/test_interop_diffusers_condition.py and tests/test_joint_attention.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import unetdsl
from unetdsl import SpecError, build_model, resolve_spec
from unetdsl.estimate import estimate
from unetdsl.nn.resblock import ResBlock
from unetdsl.sample import sample_inputs
from unetdsl.torchscript import script

SPEC: dict[str, Any] = {
    "unetdsl": 1, "name": "topo", "in_channels": 3, "out_channels": 3, "sample_size": 8,
    "time": {"embedding": "sinusoidal", "features": 8, "dim": 16, "post_activation": "silu"},
    "stem": {"channels": 4, "kernel_size": 5}, "defaults": {"norm": {"groups": 4}, "residual_scale": 0.7071067811865476,
                                                            "time_activation": False},
    "encoder": {"levels": [{"channels": 8, "blocks": 1}, {"channels": 12, "blocks": 1, "attention": True}]},
    "middle": {"residual_scale": 1.0},
}


def test_the_stem_has_its_own_width_in_the_channel_flow() -> None:
    spec, _ = resolve_spec(SPEC)
    assert spec.stem_channels == 4 and spec.stem_kernel == 5
    assert spec.encoder[0].blocks[0].in_channels == 4  # level 0 widens the stem's 4 to 8
    assert spec.decoder[-1].blocks[-1].skip_channels == 4  # the stem's skip, consumed last
    assert spec.residual_channels[0] == 4
    assert spec.view()["stem"] == {"channels": 4, "kernel_size": 5}
    model = build_model(spec, seed=0)
    assert model.conv_in.weight.shape == (4, 3, 5, 5) and model.conv_in.padding == (2, 2)
    rows = {p.part: p for p in estimate(spec, training=False).parts}
    assert rows["stem"].channels == "3->4" and rows["stem"].parameters == 4 * 3 * 25 + 4


def test_a_stem_as_wide_as_level_0_is_not_written_in_the_view() -> None:
    spec, _ = resolve_spec({**SPEC, "stem": {"channels": 8}})
    assert "stem" not in spec.view()
    assert resolve_spec(spec.view())[0].spec_id == spec.spec_id


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_the_options_build_run_script_and_export_in_every_dims(dims: int, tmp_path: Path) -> None:
    model = build_model({**SPEC, "dims": dims}, seed=0).eval()
    s = sample_inputs(model.spec)  # type: ignore[arg-type]
    with torch.no_grad():
        want = model(*s.args())
        assert (script(model)(*s.args()) - want).abs().max().item() <= 1e-5
    assert unetdsl.export(model, tmp_path / "m.pt").max_abs_diff <= 1e-5


def test_residual_scale_and_time_activation_by_hand() -> None:
    torch.manual_seed(0)
    kw: dict[str, Any] = dict(dims=2, in_channels=4, out_channels=6, temb_channels=5, norm1=torch.nn.GroupNorm(2, 4),
                              norm2=torch.nn.GroupNorm(2, 6), act=torch.nn.SiLU(), dropout=0.0, pre=True,
                              scale_shift=False)
    plain = ResBlock(**kw).eval()
    scaled = ResBlock(**kw, residual_scale=0.5, time_activation=False).eval()
    scaled.load_state_dict(plain.state_dict())
    x, temb = torch.randn(2, 4, 6, 6), torch.randn(2, 5)
    with torch.no_grad():
        # by hand: conv1(act(norm1 x)) + proj(temb) (no activation on temb), conv2(act(norm2 .)), plus the 1x1 shortcut
        h = scaled.conv1(torch.nn.functional.silu(scaled.norm1(x))) + scaled.time_emb_proj(temb)[:, :, None, None]
        h = scaled.conv2(torch.nn.functional.silu(scaled.norm2(h)))
        want = (h + scaled.conv_shortcut(x)) * 0.5  # type: ignore[misc]
        torch.testing.assert_close(scaled(x, temb), want, rtol=0, atol=1e-6)
        assert (plain(x, temb) * 0.5 - scaled(x, temb)).abs().max() > 1e-3  # the time activation counts


@pytest.mark.parametrize(("change", "path", "words"), [
    ({"model": "decoder", "encoder": None, "decoder": {"levels": [{"channels": 8}]}}, ("stem", "channels"),
     "feeds its stem to the middle"),
    ({"stem": {"kernel_size": 4}}, ("stem", "kernel_size"), ""),
    ({"defaults": {"residual_scale": 0}}, ("defaults", "residual_scale"), ""),
    ({"defaults": {"residual_scale": 4.5}}, ("defaults", "residual_scale"), ""),
    ({"stem": {"channels": 6}}, ("defaults", "norm", "groups"), "6"),  # the groups must divide what norms see
])
def test_the_options_are_bounded_and_checked_where_written(change: dict[str, Any], path: tuple[Any, ...],
                                                           words: str) -> None:
    data = {k: v for k, v in {**SPEC, **change}.items() if v is not None}
    with pytest.raises(SpecError) as info:
        resolve_spec(data)
    assert any(p.path[:len(path)] == path and words in p.message for p in info.value.problems), info.value.problems


def test_residual_scale_at_its_bound_is_allowed() -> None:
    assert resolve_spec({**SPEC, "defaults": {"norm": {"groups": 4}, "residual_scale": 4.0}})[0].encoder[0].residual_scale == 4.0


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_a_level_kernel_size_is_each_resblocks_two_convolutions(dims: int) -> None:
    """Dance Diffusion's ResConvBlock: kernel 5, padded by 2, at one level only (the others keep 3)."""
    spec = SPEC | {"dims": dims, "encoder": {"levels": [{"channels": 8, "blocks": 1, "kernel_size": 5},
                                                        {"channels": 12, "blocks": 1}]}}
    model = build_model(spec, seed=0, dtype=torch.float64).eval()
    block = model.encoder[0].resnets[0]
    assert block.conv1.kernel_size == (5,) * dims and block.conv1.padding == (2,) * dims
    assert model.encoder[1].resnets[0].conv1.kernel_size == (3,) * dims
    assert model.decoder[1].resnets[0].conv2.kernel_size == (5,) * dims  # the mirror of level 0
    x = torch.randn(2, 4, *[8] * dims, dtype=torch.float64)
    temb = torch.randn(2, 16, dtype=torch.float64)
    conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}[dims]
    h = conv(torch.nn.functional.silu(block.norm1(x)), block.conv1.weight, block.conv1.bias, padding=2)
    h = h + block.time_emb_proj(temb).reshape(2, 8, *[1] * dims)  # time_activation false: as it comes
    h = conv(torch.nn.functional.silu(block.norm2(h)), block.conv2.weight, block.conv2.bias, padding=2)
    want = (h + block.conv_shortcut(x)) * 0.7071067811865476
    with torch.no_grad():
        assert (block(x, temb) - want).abs().max().item() <= 1e-12
        x_in, t = torch.randn(2, 3, *[8] * dims), torch.tensor([1, 500])
        assert (script(model.float())(x_in, t) - model(x_in, t)).abs().max().item() <= 1e-5
