"""Training on many processes with torch.distributed: 2 CPU processes on gloo take one AdamW step
on halves of a global batch, wrapped in DDP, in FSDP2 sharded per level + root, and per ResBlock
+ root (with and without activation checkpointing); the parameters after the step must equal a
single process's step on the whole batch. The same code runs on NCCL/GPUs unchanged.

One spawn runs every wrapping in turn (process start and torch import dominate on 2 cores)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import unetdsl

# small, but every kind of unit: attention, scale-shift, a ResBlock-down and -up, class labels
SPEC = """\
unetdsl: 1
name: dist
in_channels: 2
out_channels: 2
sample_size: 8
time: {embedding: sinusoidal, dim: 16, injection: scale_shift}
classes: 3
defaults: {norm: {groups: 2}, dropout: 0.0}
encoder:
  levels:
    - {channels: 4, blocks: 1, downsample: resblock}
    - {channels: 8, blocks: 2, attention: {heads: 2}}
middle: {blocks: 2, attention: {heads: 2}}
decoder: {upsample: resblock}
"""
WORLD, GLOBAL_BATCH, LR = 2, 4, 1e-2
MODES = ["ddp", "fsdp-level", "fsdp-block", "fsdp-level-checkpointed"]


# float64 for the parameters after the step: Adam divides each gradient by its own magnitude, so
# where a gradient is near its eps (1e-8) float32 reduction-order noise (~1e-10) moves the step by
# ~1e-4 (and the key bias, whose gradient is zero in exact arithmetic, takes a full step of random
# sign). In float64 that noise is ~1e-19 and the step is a deterministic function of the batch.
# float32 is checked on the gradients, where the distributed reduction happens.
DTYPES = [torch.float64, torch.float32]


def batch(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(GLOBAL_BATCH, 2, 8, 8, generator=g, dtype=torch.float64).to(dtype)
    t = torch.randint(0, 1000, (GLOBAL_BATCH,), generator=g)
    y = torch.randint(0, 3, (GLOBAL_BATCH,), generator=g)
    target = torch.randn(GLOBAL_BATCH, 2, 8, 8, generator=g, dtype=torch.float64).to(dtype)
    return x, t, y, target


def one_step(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    loss = F.mse_loss(model(x, t, y), target)
    loss.backward()
    opt.step()
    return loss.item()


def wrap(mode: str, model: torch.nn.Module) -> torch.nn.Module:
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    if mode == "ddp":
        return DistributedDataParallel(model)
    granularity = "level" if mode.startswith("fsdp-level") else "block"
    if mode.endswith("checkpointed"):
        unetdsl.set_activation_checkpointing(model, granularity)
    for unit in unetdsl.training_units(model, granularity):
        fully_shard(unit)
    fully_shard(model)
    return model


def whole(p: torch.Tensor) -> torch.Tensor:
    """A parameter or gradient whole, on every rank (FSDP2 holds DTensor shards)."""
    return (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()


def full_state(model: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    params = {name.removeprefix("module."): whole(p) for name, p in model.named_parameters()}
    grads = {name.removeprefix("module."): whole(p.grad) for name, p in model.named_parameters() if p.grad is not None}
    return {"params": params, "grads": grads}


def worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        local = slice(rank * GLOBAL_BATCH // WORLD, (rank + 1) * GLOBAL_BATCH // WORLD)
        for dtype in DTYPES:
            x, t, y, target = batch(dtype)
            for mode in MODES:
                model = wrap(mode, unetdsl.build_model(SPEC, seed=0, dtype=dtype))
                loss = one_step(model, x[local], t[local], y[local], target[local])
                state = full_state(model)
                if rank == 0:
                    torch.save({**state, "loss": loss}, os.path.join(out_dir, f"{mode}-{dtype}.pt"))
                dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    mp.start_processes(worker, args=(str(out / "init"), str(out)), nprocs=WORLD, join=True, start_method="spawn")
    return out


def single_process(dtype: torch.dtype) -> dict:  # type: ignore[type-arg]
    model = unetdsl.build_model(SPEC, seed=0, dtype=dtype)
    loss = one_step(model, *batch(dtype))
    return {**full_state(model), "loss": loss}


@pytest.mark.parametrize("mode", MODES)
def test_one_step_on_two_processes_equals_one_process(mode: str, distributed_results: Path) -> None:
    got = torch.load(distributed_results / f"{mode}-{torch.float64}.pt")
    want = single_process(torch.float64)
    assert set(got["params"]) == set(want["params"]) == set(got["grads"]) == set(want["grads"])
    assert got["loss"] != want["loss"]  # rank 0 saw its own half of the batch ...
    start = dict(unetdsl.build_model(SPEC, seed=0, dtype=torch.float64).named_parameters())
    for name, p in want["params"].items():  # ... yet every parameter took the whole batch's step
        torch.testing.assert_close(got["grads"][name], want["grads"][name], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(got["params"][name], p, rtol=1e-6, atol=0.0, msg=lambda m, n=name: f"{n}: {m}")
        assert not torch.equal(p, start[name].detach()), f"{name} did not move: the comparison would be vacuous"


@pytest.mark.parametrize("mode", MODES)
def test_float32_gradients_on_two_processes_equal_one_process(mode: str, distributed_results: Path) -> None:
    got = torch.load(distributed_results / f"{mode}-{torch.float32}.pt")
    want = single_process(torch.float32)
    # float32 rounding: a batch of 4 and two batches of 2 plus an all-reduce sum in different orders
    # (and a part's layout follows its input's size, so the halves may even run another kernel);
    # float64 above is exact
    for name, g in want["grads"].items():
        torch.testing.assert_close(got["grads"][name], g, rtol=1e-5, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}")
