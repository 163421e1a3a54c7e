"""The transformer attention block and the context input: the language's rules (resolve/attention.py),
the block against diffusers' Transformer2DModel, and the model's checks of its context."""

from __future__ import annotations

import pytest
import torch

from unetdsl import SpecError, build_model, resolve_spec
from unetdsl.nn.transformer import SpatialTransformer

from .conftest import TEXT_TINY, TINY


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        resolve_spec(text)
    return [p.render() for p in info.value.problems]


def test_transformer_settings_on_self_attention_are_refused_where_written() -> None:
    text = TINY.replace("attention: {heads: 2}}", "attention: {heads: 2, depth: 2, upcast: true}}")
    rendered = problems(text)
    assert any(r.startswith("<string>:13:61:") and "depth is a setting of the transformer attention block" in r
               for r in rendered)
    assert any("upcast is a setting of the transformer attention block" in r and "found:   true" in r
               for r in rendered)
    assert all("set `type: transformer`" in r for r in rendered)


def test_a_context_needs_a_block_that_attends_to_it_and_only_cross_needs_a_context() -> None:
    no_block = TINY + "context_dim: 16\n"
    assert any(r.startswith("<string>:15:14:") and "context_dim: the model takes a context, and no attention block "
               "attends to it" in r for r in problems(no_block))
    only_cross = TINY.replace("middle: {blocks: 2, attention: {heads: 2}}",
                              "middle: {blocks: 2, attention: {type: transformer, heads: 2, only_cross: true}}")
    assert any("middle.attention.only_cross" in r and "set context_dim" in r for r in problems(only_cross))


def test_a_transformer_without_a_context_is_self_attention_and_feed_forward() -> None:
    text = TINY.replace("middle: {blocks: 2, attention: {heads: 2}}",
                        "middle: {blocks: 2, attention: {type: transformer, heads: 2}}")
    model = build_model(text)
    layer = model.middle.attentions[0].transformer_blocks[0]
    assert layer.attn2 is None and layer.norm2 is None
    with_context = build_model(text + "context_dim: 4\n")
    # the cross-attention: LayerNorm (2 x 8) + q (8 x 8) + k, v (4 x 8 each) + out (8 x 8 + 8)
    extra = sum(p.numel() for p in with_context.parameters()) - sum(p.numel() for p in model.parameters())
    assert extra == 16 + 64 + 32 + 32 + 72


def test_heads_and_head_dim_divide_the_channels() -> None:
    text = TEXT_TINY.replace("{type: transformer, heads: 2, linear_projection: true}}",
                             "{type: transformer, head_dim: 12, linear_projection: true}}")
    assert any("head_dim 12 does not divide the level's 32 channels" in r for r in problems(text))


def test_the_resolved_form_states_every_transformer_setting() -> None:
    resolved, _ = resolve_spec(TEXT_TINY)
    att = resolved.view()["encoder"]["levels"][1]["attention"]
    assert att == {"type": "transformer", "heads": 2, "norm": True, "depth": 2, "linear_projection": True,
                   "only_cross": False, "upcast": False, "norm_eps": 1e-6, "layer_norm_eps": 1e-5}
    assert resolve_spec(resolved.view())[0].spec_id == resolved.spec_id


@pytest.mark.parametrize("linear", [False, True], ids=["conv-projection", "linear-projection"])
@pytest.mark.parametrize("only_cross", [False, True], ids=["self-first", "only-cross"])
def test_block_equals_diffusers_transformer2d(linear: bool, only_cross: bool) -> None:
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    ref = diffusers.models.Transformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=16,
                                              num_layers=2, cross_attention_dim=6, norm_num_groups=4,
                                              use_linear_projection=linear, only_cross_attention=only_cross).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours = SpatialTransformer(dims=2, channels=16, heads=2, depth=2, context_dim=6,
                              norm=torch.nn.GroupNorm(4, 16, eps=1e-6), linear=linear, only_cross=only_cross).eval()
    state = {k.replace(".to_out.0.", ".to_out."): v for k, v in ref.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    x, context = torch.randn(2, 16, 4, 6), torch.randn(2, 5, 6)
    with torch.no_grad():
        want = ref(x, encoder_hidden_states=context).sample
        assert (ours(x, context) - want).abs().max().item() <= 1e-5
        # in channels-last layout too (the body's layout on CPU)
        cl = x.contiguous(memory_format=torch.channels_last)
        assert (ours(cl, context) - want).abs().max().item() <= 1e-5


def test_inference_adds_in_place_into_its_own_tensors_only() -> None:
    """With grad disabled the residual sums and GEGLU's product write into the sub-blocks' fresh
    outputs: the numbers are the out-of-place ones exactly, and the input and context are untouched."""
    torch.manual_seed(0)
    block = SpatialTransformer(dims=2, channels=16, heads=2, depth=2, context_dim=6,
                               norm=torch.nn.GroupNorm(4, 16, eps=1e-6), linear=True).eval()
    x, context = torch.randn(2, 16, 4, 6), torch.randn(2, 5, 6)
    x0, c0 = x.clone(), context.clone()
    want = block(x, context)  # grad enabled: out of place
    with torch.inference_mode():
        got = block(x, context)
    assert torch.equal(got, want)
    assert torch.equal(x, x0) and torch.equal(context, c0)


def test_upcast_attention_runs_half_precision_scores_in_float32() -> None:
    block = SpatialTransformer(dims=1, channels=8, heads=2, depth=1, context_dim=None,
                               norm=torch.nn.GroupNorm(2, 8, eps=1e-6), upcast=True)
    x = torch.randn(1, 8, 6)
    with torch.no_grad():
        full = block(x)
        half = block.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16 and (half.float() - full).abs().max().item() < 0.1


def test_the_model_checks_its_context() -> None:
    model = build_model(TEXT_TINY).eval()
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([1, 2])
    with torch.no_grad():
        for context, message in [(None, r"attends to a context of shape \(B, tokens, 16\)"),
                                 (torch.randn(2, 3, 8), r"expected a context of shape \(2, tokens, 16\), got \[2, 3, 8\]"),
                                 (torch.randn(1, 3, 16), r"expected a context of shape \(2, tokens, 16\)")]:
            with pytest.raises(ValueError, match=message):
                model(x, t, None, context)
        with pytest.raises(ValueError, match="takes no context"):
            build_model(TINY)(torch.randn(1, 3, 16, 16), torch.tensor([1]), None, torch.randn(1, 2, 2))
        # any token count: the output depends on the context, not on a fixed length
        a = model(x, t, None, torch.randn(2, 3, 16))
        b = model(x, t, None, torch.randn(2, 77, 16))
    assert a.shape == b.shape == x.shape and not torch.equal(a, b)


@pytest.mark.parametrize("granularity", ["block", "level"])
def test_checkpointing_a_text_model_gives_the_plain_gradients(granularity: str) -> None:
    import unetdsl
    from unetdsl.sample import sample_inputs

    model = build_model(TEXT_TINY, seed=0)
    args = sample_inputs(model.spec, batch=2, seed=3).args()

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model(*args).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    want = grads()
    units = unetdsl.training_units(model, granularity)
    if granularity == "block":  # the transformer blocks are units of their own
        assert sum(isinstance(u, SpatialTransformer) for u in units) == 2 + 1 + 4  # encoder, middle, decoder
    unetdsl.set_activation_checkpointing(model, granularity)
    got = grads()
    assert set(got) == set(want) and "encoder.0.attentions.0.transformer_blocks.0.attn2.to_k.weight" in got
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6)
