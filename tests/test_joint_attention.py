"""The joint self/cross attention (`attention: {type: joint}`: diffusers' SimpleCrossAttn blocks,
DeepFloyd IF, unCLIP) and the context projection (`context_input_dim`: diffusers' encoder_hid_proj):
the language's rules, and diffusers' UNet2DConditionModel with SimpleCrossAttn / Resnet{Down,Up}sample
blocks both ways on perturbed small configs, eager and scripted, to 1e-5 in float32."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

import unetdsl
from unetdsl import SpecError, build_model, resolve_spec
from unetdsl.interop.diffusers import from_diffusers, spec_from_diffusers, to_diffusers
from unetdsl.sample import sample_inputs
from unetdsl.torchscript import script

from .test_interop_diffusers_condition import make

diffusers = pytest.importorskip("diffusers")
logging.getLogger("diffusers").setLevel(logging.ERROR)

IF_LIKE: dict[str, Any] = dict(
    block_out_channels=(16, 32), norm_num_groups=8, layers_per_block=1, sample_size=8, cross_attention_dim=32,
    attention_head_dim=8, down_block_types=("SimpleCrossAttnDownBlock2D", "ResnetDownsampleBlock2D"),
    up_block_types=("ResnetUpsampleBlock2D", "SimpleCrossAttnUpBlock2D"), mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    encoder_hid_dim=20, encoder_hid_dim_type="text_proj", cross_attention_norm="group_norm",
    resnet_time_scale_shift="scale_shift", in_channels=3, out_channels=6)
CONFIGS: dict[str, dict[str, Any]] = {
    "if-like": IF_LIKE,
    "no-projection-no-context-norm": {**IF_LIKE, "encoder_hid_dim": None, "encoder_hid_dim_type": None,
                                      "cross_attention_norm": None, "resnet_time_scale_shift": "default"},
    "only-cross-three-levels": {**IF_LIKE, "block_out_channels": (16, 32, 32), "attention_head_dim": [4, 8, 16],
                                "only_cross_attention": [True, False, True], "mid_block_only_cross_attention": True,
                                "down_block_types": ("SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D",
                                                     "ResnetDownsampleBlock2D"),
                                "up_block_types": ("ResnetUpsampleBlock2D", "SimpleCrossAttnUpBlock2D",
                                                   "SimpleCrossAttnUpBlock2D"), "sample_size": 16},
    # IF stage II's ResBlock flags: residual_scale 1 / 1.414 and no time activation on the ResNet-resampling and
    # SimpleCrossAttn levels, the middle's 1 / 2; a 5x5 stem
    "resnet-flags": {**IF_LIKE, "resnet_out_scale_factor": 1.414, "resnet_skip_time_act": True, "conv_in_kernel": 5,
                     "mid_block_scale_factor": 2.0},
    "joint-beside-transformers": {**IF_LIKE, "down_block_types": ("CrossAttnDownBlock2D", "ResnetDownsampleBlock2D"),
                                  "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"), "attention_head_dim": 2,
                                  "cross_attention_norm": None},
}
SPEC: dict[str, Any] = {
    "unetdsl": 1, "name": "joint-tiny", "in_channels": 3, "out_channels": 3, "sample_size": 8, "context_dim": 16,
    "context_input_dim": 24, "time": {"embedding": "sinusoidal"}, "defaults": {"norm": {"groups": 4}},
    "encoder": {"levels": [{"channels": 8, "attention": {"type": "joint", "head_dim": 4, "context_norm_groups": 4}},
                           {"channels": 16}], "downsample": "resblock"},
    "decoder": {"upsample": "resblock"}, "middle": {"attention": {"type": "joint", "heads": 2, "only_cross": True}},
}


def test_there_are_five_configurations() -> None:
    assert len(CONFIGS) == 5


@pytest.mark.parametrize("name", list(CONFIGS))
def test_joint_attention_unets_match_diffusers_both_ways_eager_and_scripted(name: str) -> None:
    config = CONFIGS[name]
    unet = make(config)
    model = from_diffusers(unet)
    g = torch.Generator().manual_seed(2)
    size = config["sample_size"]
    x, t = torch.randn(2, 3, size, size, generator=g), torch.tensor([4, 777])
    context = torch.randn(2, 7, config["encoder_hid_dim"] or config["cross_attention_dim"], generator=g)
    with torch.no_grad():
        want = unet(x, t, encoder_hidden_states=context).sample
        assert (model(x, t, context=context) - want).abs().max().item() <= 1e-5
        assert (script(model)(x, t, None, context) - want).abs().max().item() <= 1e-5
        back = to_diffusers(model)
        assert (back(x, t, encoder_hidden_states=context).sample - want).abs().max().item() == 0.0


def test_the_config_keys_mean_what_diffusers_makes_of_them() -> None:
    spec = spec_from_diffusers({"_class_name": "UNet2DConditionModel", **CONFIGS["only-cross-three-levels"]})
    enc = [lv.attention for lv in spec.encoder.levels]  # type: ignore[union-attr]
    # SimpleCrossAttn's attention_head_dim is the head dim (CrossAttn's is the heads); ResNet blocks resample
    assert [(a.type, a.head_dim, a.only_cross) if a else None for a in enc] == [
        ("joint", 4, True), ("joint", 8, False), None]
    assert [lv.downsample for lv in spec.encoder.levels[:2]] == ["resblock", "resblock"]  # type: ignore[union-attr]
    assert spec.middle.attention.only_cross is True and spec.middle.attention.head_dim == 16  # type: ignore[union-attr]
    assert spec.context_dim == 32 and spec.context_input_dim == 20
    assert enc[0].context_norm_groups == 32  # type: ignore[union-attr]
    # an encoder_hid_dim without its type is a text projection, as diffusers reads it
    untyped = spec_from_diffusers({"_class_name": "UNet2DConditionModel", **IF_LIKE, "encoder_hid_dim_type": None})
    assert untyped.context_input_dim == 20


def test_the_model_takes_the_context_as_given_and_projects_it() -> None:
    model = build_model(SPEC, seed=0).eval()
    assert model.encoder_hid_proj.in_features == 24 and model.encoder_hid_proj.out_features == 16  # type: ignore[union-attr]
    s = sample_inputs(model.spec)  # type: ignore[arg-type]
    assert s.context is not None and s.context.shape[2] == 24
    with torch.no_grad():
        out = model(*s.args())
        with pytest.raises(ValueError, match=r"expected a context of shape \(2, tokens, 24\)"):
            model(s.x, s.t, None, torch.randn(2, 5, 16))
    assert out.shape == (2, 3, 8, 8)
    joint = model.encoder[0].attentions[0]
    assert type(joint).__name__ == "JointAttention" and joint.norm_cross.num_groups == 4  # type: ignore[union-attr]
    assert model.middle.attentions[0].to_k is None  # only_cross: the context's keys alone


def test_joint_attention_computes_the_joint_softmax_by_hand() -> None:
    # an independent reference: softmax over the context's tokens and the positions together
    from unetdsl.nn.attention import JointAttention

    torch.manual_seed(0)
    att = JointAttention(channels=8, heads=2, context_dim=6, norm=torch.nn.Identity(), context_norm=None,
                         only_cross=False).eval()
    x, c = torch.randn(1, 8, 2, 3), torch.randn(1, 4, 6)
    h = x.reshape(1, 8, 6).transpose(1, 2)  # 6 positions
    out = torch.zeros(1, 6, 8)
    for head in range(2):
        cols = slice(4 * head, 4 * head + 4)
        q = att.to_q(h)[0, :, cols]
        k = torch.cat([att.add_k_proj(c)[0, :, cols], att.to_k(h)[0, :, cols]])  # type: ignore[misc]
        v = torch.cat([att.add_v_proj(c)[0, :, cols], att.to_v(h)[0, :, cols]])  # type: ignore[misc]
        out[0, :, cols] = torch.softmax(q @ k.T / 2.0, dim=-1) @ v  # sqrt(head dim 4) = 2
    want = x + att.to_out(out).transpose(1, 2).reshape(x.shape)
    with torch.no_grad():
        assert (att(x, c) - want).abs().max().item() <= 1e-6


@pytest.mark.parametrize(("change", "path", "words"), [
    ({"context_dim": None, "context_input_dim": None}, ("encoder", "levels", 0, "attention"),
     "a joint attention block attends to the context"),
    ({"context_dim": 6}, ("encoder", "levels", 0, "attention", "context_norm_groups"), "do not divide the context's 6"),
    ({"context_dim": None}, ("context_input_dim",), "declares no context_dim"),
    ({"middle": {"attention": {"type": "transformer", "heads": 2, "context_norm_groups": 4}}},
     ("middle", "attention", "context_norm_groups"), "a setting of the joint attention block, not of transformer"),
    ({"middle": {"attention": {"only_cross": True}}}, ("middle", "attention", "only_cross"),
     "a setting of the transformer and joint attention blocks, not of self"),
    ({"middle": {"attention": {"type": "joint"}}}, ("middle", "attention"), "a joint block states its heads"),
])
def test_the_rules_of_joint_attention(change: dict[str, Any], path: tuple[Any, ...], words: str) -> None:
    data = {k: v for k, v in {**SPEC, **change}.items() if v is not None}
    with pytest.raises(SpecError) as info:
        resolve_spec(data)
    assert any(p.path == path and words in p.message for p in info.value.problems), info.value.problems


def test_a_joint_attention_model_exports_with_its_projected_context(tmp_path: Path) -> None:
    model = build_model(SPEC, seed=0)
    report = unetdsl.export(model, tmp_path / "j.pt2", format="export")
    assert report.max_abs_diff < 1e-4
    from unetdsl.inspect import read_metadata
    from unetdsl.provenance import INPUTS_KEY

    assert "context: float32 (B, T, 24)" in read_metadata(tmp_path / "j.pt2")[INPUTS_KEY]  # the context as given


# --- DeepFloyd IF: the text pooled into the time embedding, GELU, the time embedding's own activation ---
# diffusers' own IF pipeline test U-Net (tests/pipelines/deepfloyd_if), with GroupNorms of 8 and a time activation
IF_DUMMY: dict[str, Any] = dict(
    sample_size=16, layers_per_block=1, block_out_channels=[32, 64], in_channels=3, out_channels=6,
    down_block_types=["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"], mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    up_block_types=["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"], cross_attention_dim=32, encoder_hid_dim=32,
    attention_head_dim=8, addition_embed_type="text", addition_embed_type_num_heads=2, cross_attention_norm="group_norm",
    resnet_time_scale_shift="scale_shift", act_fn="gelu", time_embedding_act_fn="gelu", norm_num_groups=8)


@pytest.mark.parametrize("change", [{}, {"encoder_hid_dim": 24, "addition_embed_type_num_heads": 4}],
                         ids=["as-diffusers-tests-it", "projected-text"])
def test_if_shaped_unets_match_diffusers_both_ways_eager_and_scripted(change: dict[str, Any]) -> None:
    config = {**IF_DUMMY, **change}
    unet = make(config)
    model = from_diffusers(unet)
    spec = model.spec  # type: ignore[union-attr]
    assert spec.conditions[0].pool_heads == config["addition_embed_type_num_heads"]
    assert spec.time.post_activation == "gelu" and spec.condition_inputs == []
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(2, 3, 16, 16, generator=g), torch.tensor([0, 999])
    context = torch.randn(2, 9, config["encoder_hid_dim"], generator=g)
    with torch.no_grad():
        want = unet(x, t, encoder_hidden_states=context).sample
        assert (model(x, t, context=context) - want).abs().max().item() <= 1e-5
        assert (script(model)(x, t, None, context) - want).abs().max().item() <= 1e-5
        assert (to_diffusers(model)(x, t, encoder_hidden_states=context).sample - want).abs().max().item() == 0.0


def test_the_if_stage1_shaped_spec_counts_as_diffusers_on_meta() -> None:
    from .conftest import ROOT
    from .test_interop_diffusers_condition import to_diffusers_meta

    model = build_model(ROOT / "specs" / "if-stage1-shaped.yaml", device="meta")
    assert sum(p.numel() for p in model.parameters()) == 618_526_470
    assert sum(p.numel() for p in to_diffusers_meta(model).parameters()) == 618_526_470
    pool = model.time_embedding.conditions.groups[0].project  # type: ignore[union-attr,index]
    # LayerNorm(4096), q/k/v 4096 x 4096 with biases, a position of 4096, linear 4096 -> 1024, LayerNorm(1024)
    assert sum(p.numel() for p in pool.parameters()) == 2 * 4096 + 3 * (4096 * 4096 + 4096) + 4096 + 4096 * 1024 + 1024 + 2 * 1024


POOLED = {**SPEC, "conditions": [{"pool_context": {"heads": 4}}]}


def test_a_pooled_context_needs_no_cond_and_refuses_one() -> None:
    model = build_model(POOLED, seed=0).eval()
    s = sample_inputs(model.spec)  # type: ignore[arg-type]
    assert s.cond is None
    with torch.no_grad():
        plain = model(s.x, s.t, context=s.context)
        assert torch.equal(model(s.x, s.t, context=s.context, cond={}), plain)
        moved = model(s.x, s.t, context=s.context + 0.5)  # the pooled text reaches the time embedding
        assert (moved - plain).abs().max() > 1e-4
        with pytest.raises(ValueError, match="has unknown \\['pooled'\\]"):
            model(s.x, s.t, context=s.context, cond={"pooled": torch.zeros(2, 3)})


@pytest.mark.parametrize(("group", "path", "words"), [
    ({"pool_context": {"heads": 4}, "inputs": [{"name": "a", "width": 2}]}, ("conditions", 0, "pool_context"),
     "inputs or pools the context, not both"),
    ({"pool_context": {"heads": 5}}, ("conditions", 0, "pool_context", "heads"), "5 heads do not divide the context's 24"),
    ({"pool_context": {"heads": 4}, "project": "mlp"}, ("conditions", 0, "project"), "has its own projection"),
    ({}, ("conditions", 0), "has inputs or pools the context"),
])
def test_the_rules_of_a_pooled_context(group: dict[str, Any], path: tuple[Any, ...], words: str) -> None:
    with pytest.raises(SpecError) as info:
        resolve_spec({**SPEC, "conditions": [group]})
    assert any(p.path == path and words in p.message for p in info.value.problems), info.value.problems


def test_a_pooled_context_needs_a_context() -> None:
    data = {k: v for k, v in POOLED.items() if k not in ("context_dim", "context_input_dim")}
    data["encoder"] = {"levels": [{"channels": 8}, {"channels": 16}]}
    data["middle"] = {}
    with pytest.raises(SpecError) as info:
        resolve_spec(data)
    assert any("pools the model's context, and the spec declares none" in p.message for p in info.value.problems)
