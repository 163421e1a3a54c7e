"""The compiler: every example spec builds, runs, back-propagates and scripts to the same numbers."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import unetdsl
from unetdsl import SpecError, build_model
from unetdsl.nn.layers import set_prepacking
from unetdsl.nn.resblock import ResBlock
from unetdsl.nn.unet import AutoencoderKL, Decoder, Encoder, UNet
from unetdsl.sample import sample_inputs
from unetdsl.spec.resolved import ResolvedSpec
from unetdsl.torchscript import script

from .conftest import MECHANICS, ROOT, TINY, TWINS, label

KINDS = {"unet": UNet, "encoder": Encoder, "decoder": Decoder, "autoencoder": AutoencoderKL}


def smallest_size(spec: ResolvedSpec) -> list[int]:
    # the smallest input every level can take: one pixel at the deepest level (2 for a decoder)
    return [spec.downsampling_factor if spec.model != "decoder" else 2] * spec.dims


# what a miniature twin may change: widths, and the names and head/group counts that follow them
TWIN_WIDTHS = {"name", "channels", "heads", "head_dim", "groups", "features", "dim", "classes", "context_dim",
               "width", "sinusoid", "sample_size"}


@pytest.mark.parametrize("twin", sorted(TWINS.glob("*.yaml")), ids=label)  # (the SDXL twin's full size is meta only)
def test_a_twin_is_its_spec_at_other_widths(twin: Path) -> None:
    from unetdsl.provenance import differences

    def topology(data: object) -> object:
        if isinstance(data, dict):
            return {k: topology(v) for k, v in data.items() if k not in TWIN_WIDTHS}
        return [topology(v) for v in data] if isinstance(data, list) else data

    full, _ = unetdsl.resolve_spec(ROOT / "specs" / twin.name)
    small, _ = unetdsl.resolve_spec(twin)
    assert differences(topology(full.view()), topology(small.view())) == []
    assert [lv.channels for lv in small.encoder] < [lv.channels for lv in full.encoder]


@pytest.fixture(scope="module", params=MECHANICS, ids=[label(p) for p in MECHANICS])
def built(request: pytest.FixtureRequest) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(request.param).eval()


def test_sample_forward_has_the_right_shape(built: torch.nn.Module) -> None:
    spec = built.spec
    inputs = sample_inputs(spec, batch=1)
    with torch.inference_mode():
        out = built(*inputs.args())
    assert type(built) is KINDS[spec.model]
    assert out.shape == (1, spec.out_channels, *spec.output_size)
    assert torch.isfinite(out).all()


def test_backward_reaches_every_parameter(built: torch.nn.Module) -> None:
    spec = built.spec
    inputs = sample_inputs(spec, batch=2, size=smallest_size(spec))
    built.train()
    try:
        built.zero_grad(set_to_none=True)
        built(*inputs.args()).square().mean().backward()
    finally:
        built.eval()
    for name, p in built.named_parameters():
        if not p.requires_grad:  # the fixed Fourier frequencies
            continue
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    built.zero_grad(set_to_none=True)


def test_scripted_equals_eager(built: torch.nn.Module) -> None:
    spec = built.spec
    inputs = sample_inputs(spec, batch=2, size=smallest_size(spec), seed=1)
    scripted = script(built)
    # no_grad, not inference_mode, for the scripted call: TorchScript shares a method's graph executor
    # between modules of one structure, and once another test has run such a module with gradients, its
    # differentiable plan fails under inference_mode ("Inference tensors cannot be saved for backward",
    # pytorch/pytorch#82550): order-dependent under xdist. Loaded artifacts have executors of their own.
    with torch.no_grad():
        got = scripted(*inputs.args())
    with torch.inference_mode():
        packed = built(*inputs.args())  # eager inference convolves with prepacked weights (nn/layers.py)
        set_prepacking(built, False)
        try:
            plain = built(*inputs.args())
        finally:
            set_prepacking(built, True)
    torch.testing.assert_close(got, plain, rtol=0, atol=1e-6)  # scripting changes nothing
    torch.testing.assert_close(packed, plain, rtol=1e-4, atol=1e-5)  # packing: another kernel's float32 rounding


def test_ddpm_cifar10_has_the_published_parameter_count() -> None:
    model = build_model(ROOT / "specs" / "ddpm-cifar10.yaml", device="meta")
    assert sum(p.numel() for p in model.parameters()) == 35_746_307


def test_meta_device_builds_without_allocating() -> None:
    big = TINY.replace("channels: 4,", "channels: 4096,").replace("channels: 8,", "channels: 8192,")
    model = build_model(big, device="meta")  # ~3.6e9 parameters: 14 GB if it were allocated
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) > 3e9


def test_spec_errors_come_before_any_tensor() -> None:
    with pytest.raises(SpecError):
        build_model(TINY.replace("{groups: 2}", "{groups: 3}"), device="meta")


def test_model_carries_its_resolved_spec_and_named_halves() -> None:
    model = build_model(TINY)
    assert isinstance(model.spec, ResolvedSpec) and model.spec.name == "tiny"
    assert len(model.encoder) == 2 and len(model.decoder) == 2
    assert hasattr(model.encoder[0], "resnets") and hasattr(model, "middle")
    assert unetdsl.build_model is build_model


def test_dtype_option() -> None:
    model = build_model(TINY, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    inputs = sample_inputs(model.spec, dtype=torch.float64)
    assert model(*inputs.args()).dtype == torch.float64


def test_scalar_timestep_broadcasts_like_a_vector() -> None:
    model = build_model(TINY)
    x = torch.randn(3, 3, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(model(x, torch.tensor(7)), model(x, torch.full((3,), 7)), rtol=0, atol=0)
        torch.testing.assert_close(model(x, torch.tensor([7])), model(x, torch.full((3,), 7)), rtol=0, atol=0)


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "scripted"])
def test_bad_calls_get_clear_errors(scripted: bool) -> None:
    model = build_model(TINY)
    cond = build_model(TINY + "classes: 5\n")
    if scripted:
        model, cond = script(model), script(cond)
    x = torch.randn(2, 3, 16, 16)
    cases = [
        (lambda: model(x), "conditioned on the timestep"),
        (lambda: model(torch.randn(2, 3, 15, 16), torch.zeros(2)), "multiple of 2"),
        (lambda: model(torch.randn(2, 4, 16, 16), torch.zeros(2)), "expected 3 input channels"),
        (lambda: model(torch.randn(3, 16, 16), torch.zeros(2)), "spatial dims"),
        (lambda: model(x, torch.zeros(3)), "3 timesteps for a batch of 2"),
        (lambda: cond(x, torch.zeros(2)), "class labels"),
        # inputs never ignored or broadcast (issue 22, class 5): labels for an unconditional model, a label
        # count that is not the batch (both ways, and a (B, 1) column), labels that are not integers
        (lambda: model(x, torch.zeros(2), torch.zeros(2, dtype=torch.long)), "not class-conditional"),
        (lambda: model(x[:1], torch.zeros(1), torch.zeros(1, dtype=torch.long)), "not class-conditional"),
        (lambda: cond(x[:1], torch.zeros(1), torch.tensor([0, 1, 2])), r"shape \[3\] for a batch of 1"),
        (lambda: cond(x, torch.zeros(2), torch.tensor([1])), r"shape \[1\] for a batch of 2"),
        (lambda: cond(x, torch.zeros(2), torch.tensor([0, 1, 2])), r"shape \[3\] for a batch of 2"),
        (lambda: cond(x, torch.zeros(2), torch.zeros(2, 1, dtype=torch.long)), r"shape \[2, 1\]"),
        (lambda: cond(x, torch.zeros(2), torch.tensor([0.0, 1.0])), "integers"),
        (lambda: cond(x, torch.zeros(2), torch.tensor([True, False])), "integers"),
        (lambda: cond(x[:1], torch.zeros(3), torch.zeros(1, dtype=torch.long)), "3 timesteps for a batch of 1"),
    ]
    for call, message in cases:
        with pytest.raises(Exception, match=message) as info:
            call()
        assert isinstance(info.value, (ValueError, torch.jit.Error))
    # what is right still runs: one label per sample, or a scalar label and timestep for a batch of 1
    assert cond(x, torch.zeros(2), torch.tensor([0, 4])).shape == (2, 3, 16, 16)
    assert cond(x[:1], torch.tensor(3), torch.tensor(4)).shape == (1, 3, 16, 16)


def test_unconditioned_model_refuses_a_timestep() -> None:
    enc = build_model(ROOT / "specs" / "ldm-kl-f8-encoder.yaml", device="meta")
    assert enc.time_embedding is None
    with pytest.raises(ValueError, match="no time"):
        enc(torch.randn(1, 3, 8, 8, device="meta"), torch.zeros(1, device="meta"))


def test_zero_out_zeroes_the_residual_branches() -> None:
    model = build_model(TINY + "init: {zero_out: true}\n")
    assert model.encoder[0].resnets[0].conv2.weight.abs().sum() == 0
    assert model.head.conv.weight.abs().sum() == 0
    assert model.middle.attentions[0].to_out.weight.abs().sum() == 0
    x = torch.randn(1, 3, 16, 16)
    assert model(x, torch.zeros(1)).abs().max() == 0  # the output conv starts at zero


def test_torchscript_deprecation_warnings_are_silenced_only_in_our_calls(tmp_path: Path) -> None:
    model = build_model(TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        script(model)
    with pytest.warns(DeprecationWarning, match="torch.jit.script"):
        torch.jit.script(model)  # a user's own call still warns


@pytest.mark.parametrize(("norm", "order", "conv1", "conv2"), [
    ("group", "pre", True, True), ("group", "post", True, True),
    ("batch", "pre", False, True), ("batch", "post", False, False),
])
def test_conv_bias_only_where_the_next_norm_keeps_it(norm: str, order: str, conv1: bool, conv2: bool) -> None:
    text = TINY.replace("{groups: 2}", "{groups: 2}" if norm == "group" else "{type: batch}")
    model = build_model(text, overrides=[f"defaults.order={order}"])
    block = model.encoder[1].resnets[0]
    assert (block.conv1.bias is not None, block.conv2.bias is not None) == (conv1, conv2)


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_body_changes_no_numbers_and_returns_the_default_layout(dims: int) -> None:
    text = TINY.replace("name: tiny", f"name: tiny\ndims: {dims}").replace("sample_size: 16", "sample_size: 8")
    torch.manual_seed(0)
    fast = build_model(text)
    plain = build_model(text, memory_format="contiguous")
    plain.load_state_dict(fast.state_dict())
    # a part runs channels-last on inputs of at least CHANNELS_LAST_MIN_POSITIONS (batch x spatial)
    # positions, in the default layout below (where oneDNN's per-call weight reorders cost more)
    side = {2: 32, 3: 8}[dims]  # 2 x 32^2 = 2048, 2 x 8^3 = 1024
    x, t = torch.randn(2, 3, *[side] * dims), torch.tensor([3, 9])
    seen = []
    fast.encoder[0].resnets[0].conv1.register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    with torch.inference_mode():
        a, b = fast(x, t), plain(x, t)
        fast(x[:1, :, : side // 2], t[:1])  # 1 x 16^2 / 1 x 4 x 8^2: too small
    fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
    assert seen[0].is_contiguous(memory_format=fmt) and not seen[0].is_contiguous()
    assert seen[1].is_contiguous()
    assert a.is_contiguous()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="known: auto, channels_last, contiguous"):
        build_model(text, memory_format="nhwc")


def test_auto_layout_is_channels_last_on_the_cpu_and_contiguous_on_a_gpu() -> None:
    """"auto" (the default) picks per target device: oneDNN gains from channels-last; on an H100
    channels-last eager measured slower (benchmarks/results/2026-11-27-gpu-h100.log)."""
    from unetdsl.compiler import memory_format_for

    assert memory_format_for("auto", torch.device("cpu")) == "channels_last"
    assert memory_format_for("auto", torch.device("meta")) == "channels_last"
    assert memory_format_for("auto", torch.device("cuda", 1)) == "contiguous"
    assert memory_format_for("contiguous", torch.device("cpu")) == "contiguous"  # an explicit choice stands
    assert memory_format_for("channels_last", torch.device("cuda")) == "channels_last"
    # the default build on the CPU is the channels-last one: its 1x1 weights carry channels-last strides
    shortcut = build_model(TINY, device="meta").encoder[1].resnets[0].conv_shortcut.weight
    assert shortcut.stride() == (4, 1, 4, 4)
    plain = build_model(TINY, device="meta", memory_format="contiguous")
    assert plain.encoder[1].resnets[0].conv_shortcut.weight.stride() == (4, 1, 1, 1)


def test_conv_bias_false_gives_the_bias_free_resblock() -> None:
    """`conv_bias: false` drops the bias of every ResBlock conv a norm follows: in pre order conv1
    (norm2 follows; conv2 feeds the residual and keeps its bias), in post order both. The count
    shows it: one bias of `out` channels per dropped conv."""
    from unetdsl.interop.diffusers import diffusers_config

    spec = TINY.replace("norm: {groups: 2}", "norm: {groups: 2}\n  conv_bias: false")
    with_bias = unetdsl.build_model(TINY, seed=0)
    without = unetdsl.build_model(spec, seed=0)
    convs = [m for m in with_bias.modules() if isinstance(m, ResBlock)]
    dropped = sum(b.conv1.out_channels for b in convs)  # pre order: conv1 of every ResBlock
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(with_bias) - count(without) == dropped > 0
    assert all(b.conv1.bias is None and b.conv2.bias is not None for b in without.modules() if isinstance(b, ResBlock))
    post = unetdsl.build_model(spec.replace("conv_bias: false", "conv_bias: false\n  order: post"), seed=0)
    assert all(b.conv1.bias is None and b.conv2.bias is None for b in post.modules() if isinstance(b, ResBlock))
    # still scripts and runs; the default spec's id is unchanged, the new one differs
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([1, 2])
    torch.testing.assert_close(script(without.eval())(x, t), without(x, t))
    assert unetdsl.resolve_spec(TINY)[0].spec_id == "v2:sha256:98a3b022edb75a87"
    resolved = unetdsl.resolve_spec(spec)[0]
    assert resolved.spec_id != "v2:sha256:98a3b022edb75a87" and unetdsl.resolve_spec(resolved.view())[0] == resolved
    # a level can take it back; diffusers cannot express it
    mixed = unetdsl.resolve_spec(spec.replace("- {channels: 4, blocks: 1}", "- {channels: 4, blocks: 1, conv_bias: true}"))[0]
    assert mixed.encoder[0].conv_bias and not mixed.encoder[1].conv_bias and not mixed.middle.conv_bias
    with pytest.raises(unetdsl.SpecError, match="bias-free ResBlock convolutions"):
        diffusers_config(resolved)
