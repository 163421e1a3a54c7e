"""Training conventions: train/eval mode, seeds, dropout, pure forwards under wrappers, activation
checkpointing (same gradients, less saved memory, still scripts), mixed precision, torch.compile.
Distributed training has its own file (test_distributed.py)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

import unetdsl
from unetdsl.nn.layers import norm, prepacking_off
from unetdsl.sample import sample_inputs
from unetdsl.torchscript import script
from unetdsl.training import activation_bytes

from .conftest import ROOT, SPECS

# every kind of unit, dropout on: attention, scale-shift, ResBlock-down/up, classes
SPEC = """\
unetdsl: 1
name: train
in_channels: 2
out_channels: 2
sample_size: 16
time: {embedding: sinusoidal, dim: 32, injection: scale_shift}
classes: 3
defaults: {norm: {groups: 4}, dropout: 0.2}
encoder:
  levels:
    - {channels: 8, blocks: 1, downsample: resblock}
    - {channels: 16, blocks: 2, attention: {heads: 2}}
    - {channels: 16, blocks: 1}
middle: {blocks: 2, attention: {heads: 2}}
decoder: {upsample: resblock}
"""


def inputs(batch: int = 3, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(3)
    return (torch.randn(batch, 2, 16, 16, generator=g).to(dtype), torch.randint(0, 1000, (batch,), generator=g),
            torch.randint(0, 3, (batch,), generator=g))


def grads_after_backward(model: torch.nn.Module, seed: int = 7) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout masks for every model compared
    out = model(*inputs())
    out.square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# --- modes and seeds -----------------------------------------------------------------------
def test_build_model_returns_train_mode_and_load_returns_eval_mode(tmp_path: Any) -> None:
    model = unetdsl.build_model(SPEC, seed=0)
    assert model.training and all(m.training for m in model.modules())
    unetdsl.save(model, tmp_path / "m.safetensors")
    loaded = unetdsl.load(tmp_path / "m.safetensors")
    assert not any(m.training for m in loaded.modules())


def test_export_gives_the_model_back_in_the_mode_it_came(tmp_path: Any) -> None:
    model = unetdsl.build_model(SPEC, seed=0)
    unetdsl.export(model, tmp_path / "m.pt")
    assert model.training
    model.eval()
    unetdsl.export(model, tmp_path / "m.pt")
    assert not model.training


def test_dropout_is_active_in_train_mode_only() -> None:
    model = unetdsl.build_model(SPEC, seed=0)
    x, t, y = inputs()
    with torch.no_grad():
        assert not torch.equal(model(x, t, y), model(x, t, y))
        model.eval()
        assert torch.equal(model(x, t, y), model(x, t, y))


def test_seed_fixes_the_weights_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = unetdsl.build_model(SPEC, seed=5).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(999)  # another global state: the same weights
    b = unetdsl.build_model(SPEC, seed=5).state_dict()
    c = unetdsl.build_model(SPEC, seed=6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    torch.manual_seed(5)  # seed=None draws from the global RNG, as any nn.Module
    assert all(torch.equal(a[k], v) for k, v in unetdsl.build_model(SPEC).state_dict().items())


# --- pure forwards -------------------------------------------------------------------------
def test_forward_survives_wrappers_that_copy_arguments() -> None:
    """FSDP2's pre-forward hook hands a module copies of its arguments; a forward that appended
    skips to a list it was given lost them. Every unit gets such a hook here."""
    model = unetdsl.build_model(SPEC, seed=0).eval()
    x, t, y = inputs()
    with torch.no_grad():
        want = model(x, t, y)

    def copy_args(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(list(a) if isinstance(a, list) else a for a in args)

    for unit in unetdsl.training_units(model, "level") + unetdsl.training_units(model, "block"):
        unit.register_forward_pre_hook(copy_args)
    with torch.no_grad():
        assert torch.equal(model(x, t, y), want)


def test_training_units_are_the_levels_or_the_blocks() -> None:
    model = unetdsl.build_model(SPEC, seed=0)
    levels = unetdsl.training_units(model, "level")
    assert levels == [*model.encoder, model.middle, *model.decoder]
    blocks = unetdsl.training_units(model, "block")
    # 4 encoder ResBlocks (one a ResBlock-down) + 2 middle + 7 decoder (two ResBlock-up) + 3 + 1 + 3 attention
    assert len(blocks) == (1 + 1 + 2 + 1) + 2 + (2 + 3 + 1 + 2 + 1) + (2 + 1 + 3)
    with pytest.raises(ValueError, match="known: level, block"):
        unetdsl.training_units(model, "layer")


# --- activation checkpointing ----------------------------------------------------------------
@pytest.mark.parametrize("granularity", ["block", "level"])
def test_checkpointing_gives_the_plain_gradients(granularity: str) -> None:
    model = unetdsl.build_model(SPEC, seed=0)  # train mode, dropout 0.2: the masks must replay
    out, want = grads_after_backward(model)
    unetdsl.set_activation_checkpointing(model, granularity)
    out_ckpt, got = grads_after_backward(model)
    assert torch.equal(out, out_ckpt)
    assert set(got) == set(want) == {n for n, p in model.named_parameters() if p.requires_grad}
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def saved_bytes(model: torch.nn.Module, batch: int) -> int:
    return activation_bytes(lambda: model(*inputs(batch)).square().mean())


@pytest.mark.parametrize("granularity,at_most", [("block", 0.45), ("level", 0.25)])
def test_checkpointing_keeps_less_for_backward(granularity: str, at_most: float) -> None:
    model = unetdsl.build_model(SPEC, seed=0)
    plain = saved_bytes(model, 4)
    unetdsl.set_activation_checkpointing(model, granularity)
    kept = saved_bytes(model, 4)
    assert kept <= at_most * plain, (kept, plain)
    unetdsl.set_activation_checkpointing(model, None)
    assert saved_bytes(model, 4) == plain


def test_a_checkpointed_model_scripts_exports_and_keeps_its_keys(tmp_path: Any) -> None:
    plain = unetdsl.build_model(SPEC, seed=0)
    model = unetdsl.set_activation_checkpointing(unetdsl.build_model(SPEC, seed=0), "block")
    assert list(model.state_dict()) == list(plain.state_dict())
    model.eval()
    x, t, y = inputs()
    with torch.no_grad(), prepacking_off(model):  # TorchScript runs the plain convolutions
        torch.testing.assert_close(script(model)(x, t, y), model(x, t, y), rtol=0, atol=1e-6)
    report = unetdsl.export(model, tmp_path / "m.pt2", format="export")
    assert report.max_abs_diff < 1e-4


def test_checkpointing_refuses_what_it_cannot_switch() -> None:
    with pytest.raises(ValueError, match="known: level, block"):
        unetdsl.set_activation_checkpointing(unetdsl.build_model(SPEC), "everything")
    with pytest.raises(ValueError, match="built by unetdsl"):
        unetdsl.set_activation_checkpointing(torch.nn.Linear(2, 2), "block")


# --- mixed precision -----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_group_norm_computes_half_precision_inputs_in_float32(dtype: torch.dtype) -> None:
    """ATen's kernel accumulates half-precision statistics in float32 (so unetdsl adds no casts of
    its own, layers.py): a large offset with a small spread, which bfloat16 statistics (8 bits of
    mantissa) would lose, is normalised as exactly as the input's dtype can hold."""
    x = (1000.0 + torch.randn(2, 8, 16, 16, generator=torch.Generator().manual_seed(0))).to(dtype)
    layer = norm("group", 2, 8, 2, 1e-5).to(dtype)
    want = F.group_norm(x.double(), 2, eps=1e-5)  # the exact answer for the half-precision input
    got = layer(x)
    assert got.dtype == dtype
    # values of size ~3 rounded to the dtype: bfloat16 steps of 1/64 there, float16 of 1/512
    assert (got.double() - want).abs().max() <= {torch.bfloat16: 0.016, torch.float16: 0.0025}[dtype]
    torch.testing.assert_close(got, F.group_norm(x.float(), 2, eps=1e-5).to(dtype), rtol=0,
                               atol={torch.bfloat16: 1 / 64, torch.float16: 1 / 512}[dtype])  # the float32 round trip
    # float32 and float64 are nn.GroupNorm exactly (diffusers parity)
    for dt in (torch.float32, torch.float64):
        ref = torch.nn.GroupNorm(2, 8).to(dt)
        xx = torch.randn(2, 8, 4, 4, dtype=dt)
        assert torch.equal(norm("group", 2, 8, 2, 1e-5).to(dt)(xx), ref(xx))


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


def test_autocast_bfloat16_inference_and_training_stay_close_to_float32() -> None:
    model = unetdsl.build_model(SPEC, seed=0).eval()
    x, t, y = inputs()
    with torch.no_grad():
        want = model(x, t, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(x, t, y)
    assert relative_error(got, want) < 0.03
    # a training step under autocast: loss and gradients close to float32's
    _, g32 = grads_after_backward(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, g16 = grads_after_backward(model)
    assert all(g.dtype == torch.float32 for g in g16.values())  # parameters stay float32
    flat32 = torch.cat([g.flatten() for g in g32.values()])
    flat16 = torch.cat([g16[n].flatten() for n in g32])
    assert relative_error(flat16, flat32) < 0.05


def test_a_model_cast_to_bfloat16_runs_and_trains() -> None:
    model = unetdsl.build_model(SPEC, seed=0).eval()
    x, t, y = inputs()
    with torch.no_grad():
        want = model(x, t, y)
    model = model.to(torch.bfloat16)
    with torch.no_grad():
        got = model(x.to(torch.bfloat16), t, y)
    assert got.dtype == torch.bfloat16
    assert relative_error(got, want) < 0.05
    model.train()
    model(x.to(torch.bfloat16), t, y).float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


# --- torch.compile -------------------------------------------------------------------------
def small_inputs(spec: Any) -> tuple[Any, ...]:
    size = [spec.downsampling_factor * 2 if spec.model != "decoder" else 4] * spec.dims
    return sample_inputs(spec, batch=2, size=size, seed=2).args()


@pytest.mark.slow
@pytest.mark.parametrize("path", [pytest.param(p, marks=[pytest.mark.heavy] if p.stem == "adm-imagenet64-cond" else [])
                                  for p in SPECS], ids=[p.stem for p in SPECS])
def test_every_example_spec_compiles_as_one_graph_forward_and_backward(path: Any) -> None:
    """fullgraph=True fails on any graph break. aot_eager traces forward *and* backward through
    dynamo and AOTAutograd (what inductor compiles) without paying for inductor's C++ builds;
    inductor itself runs on the small spec below and in benchmarks/."""
    torch._dynamo.reset()
    model = unetdsl.build_model(path, seed=0).eval()  # eval: no dropout, so the numbers compare
    args = small_inputs(model.spec)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(*args)
    out.square().mean().backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    want = model(*args)
    want.square().mean().backward()
    torch.testing.assert_close(out, want, rtol=0, atol=1e-4)
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.inductor
def test_inductor_compiles_a_checkpointed_training_step_as_one_graph() -> None:
    torch._dynamo.reset()
    model = unetdsl.build_model(ROOT / "specs" / "tiny.yaml", seed=0)
    unetdsl.set_activation_checkpointing(model, "block")
    model.eval()  # dropout off so eager and compiled compare; the checkpointed path runs with grad on
    args = small_inputs(model.spec)
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(*args)
    out.square().mean().backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    want = model(*args)
    want.square().mean().backward()
    torch.testing.assert_close(out, want, rtol=0, atol=1e-4)
    for name, p in model.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


# --- CUDA (skipped without a GPU) ------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_cuda_autocast_training_step_stays_close_to_float32(dtype: torch.dtype) -> None:
    model = unetdsl.build_model(ROOT / "specs" / "ddpm-cifar10.yaml", seed=0, device="cuda").eval()
    spec = model.spec
    args = [a.cuda() if a is not None else None for a in sample_inputs(spec, batch=4).args()]
    model(*args).square().mean().backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    with torch.autocast("cuda", dtype=dtype):
        out = model(*args)
    scaler.scale(out.float().square().mean()).backward()
    scale = scaler.get_scale() if dtype == torch.float16 else 1.0
    got = torch.cat([(p.grad / scale).flatten() for n, p in model.named_parameters()])
    assert relative_error(got, torch.cat([g.flatten() for g in want.values()])) < 0.05


@pytest.mark.cuda
@cuda
def test_cuda_compiled_training_step_equals_eager() -> None:
    torch._dynamo.reset()
    model = unetdsl.build_model(ROOT / "specs" / "ddpm-cifar10.yaml", seed=0, device="cuda").eval()
    args = [a.cuda() if a is not None else None for a in sample_inputs(model.spec, batch=4).args()]
    out = torch.compile(model, fullgraph=True)(*args)
    out.square().mean().backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    want = model(*args)
    want.square().mean().backward()
    torch.testing.assert_close(out, want, rtol=1e-3, atol=1e-3)  # TF32 and fused kernels on the GPU
    for name, p in model.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-2, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.cuda
@cuda
def test_cuda_ddp_on_one_gpu_with_nccl(tmp_path: Any) -> None:
    import torch.distributed as dist

    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        model = unetdsl.build_model(SPEC, seed=0, device="cuda")
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        x, t, y = (a.cuda() for a in inputs())
        ddp(x, t, y).square().mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    finally:
        dist.destroy_process_group()
