"""Activation checkpointing: peak training memory and step time, plain vs per block vs per level.

    .venv/bin/python benchmarks/checkpointing.py [--spec specs/ddpm-cifar10.yaml] [--batch 32]
        [--threads 2] [--rounds 9]

Three figures per setting:
- activation memory: the bytes autograd keeps for backward during one step (each storage
  counted once: unetdsl.training.activation_bytes) — exact and repeatable;
- peak step memory: the process's peak RSS during training steps at `--batch`, minus its peak
  after a step at batch 1 (weights, gradients and AdamW moments are already allocated then);
  each setting in a fresh process, since a peak never comes down;
- step time: forward + backward + AdamW, the settings interleaved in one process round by round;
  the ratio is the median of per-round paired ratios against the plain model.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import unetdsl
from unetdsl.sample import sample_inputs
from unetdsl.training import activation_bytes

SETTINGS = ["plain", "block", "level"]


def setup(spec: str, batch: int, setting: str) -> tuple[torch.nn.Module, torch.optim.Optimizer, tuple, torch.Tensor]:  # type: ignore[type-arg]
    model = unetdsl.build_model(spec, seed=0)
    unetdsl.set_activation_checkpointing(model, None if setting == "plain" else setting)
    inp = sample_inputs(model.spec, batch=batch)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-5), inp.args(), torch.randn_like(inp.x)


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, args: tuple, target: torch.Tensor) -> None:  # type: ignore[type-arg]
    opt.zero_grad(set_to_none=True)
    F.mse_loss(model(*args), target).backward()
    opt.step()


def saved_bytes(model: torch.nn.Module, args: tuple, target: torch.Tensor) -> int:  # type: ignore[type-arg]
    kept = activation_bytes(lambda: F.mse_loss(model(*args), target))
    model.zero_grad(set_to_none=True)
    return kept


def peak_child(spec: str, batch: int, setting: str, threads: int) -> None:
    """In a fresh process: peak RSS of training steps at `batch` above a step at batch 1."""
    torch.set_num_threads(threads)
    model, opt, args, target = setup(spec, 1, setting)
    step(model, opt, args, target)  # gradients and AdamW moments now exist
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    inp = sample_inputs(model.spec, batch=batch)
    for _ in range(2):
        step(model, opt, inp.args(), torch.randn_like(inp.x))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_kib": base, "peak_kib": peak}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="specs/ddpm-cifar10.yaml")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--peak-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak_child:
        peak_child(args.spec, args.batch, args.peak_child, args.threads)
        return
    torch.set_num_threads(args.threads)

    peaks = {}
    for setting in SETTINGS:
        out = subprocess.run([sys.executable, __file__, "--spec", args.spec, "--batch", str(args.batch),
                              "--threads", str(args.threads), "--peak-child", setting],
                             capture_output=True, text=True, check=True)
        peaks[setting] = json.loads(out.stdout.strip().splitlines()[-1])

    model, opt, call, target = setup(args.spec, args.batch, "plain")
    activations = {}
    for setting in SETTINGS:
        unetdsl.set_activation_checkpointing(model, None if setting == "plain" else setting)
        activations[setting] = saved_bytes(model, call, target)
    times: dict[str, list[float]] = {s: [] for s in SETTINGS}
    for setting in SETTINGS:  # warm-up
        unetdsl.set_activation_checkpointing(model, None if setting == "plain" else setting)
        step(model, opt, call, target)
    for r in range(args.rounds):
        for setting in SETTINGS if r % 2 == 0 else SETTINGS[::-1]:
            unetdsl.set_activation_checkpointing(model, None if setting == "plain" else setting)
            start = time.perf_counter()
            step(model, opt, call, target)
            times[setting].append(time.perf_counter() - start)

    print(f"{model.spec.name}: training step, batch {args.batch}, {list(call[0].shape[2:])}, float32, "
          f"CPU {args.threads} threads, torch {torch.__version__}; {args.rounds} interleaved rounds")
    print(f"  {'setting':8} {'activations kept':>17} {'vs plain':>9} {'peak step mem':>14} {'vs plain':>9} "
          f"{'step time':>10} {'vs plain':>18}")
    plain_peak = peaks["plain"]["peak_kib"] - peaks["plain"]["base_kib"]
    for s in SETTINGS:
        peak = peaks[s]["peak_kib"] - peaks[s]["base_kib"]
        ratios = sorted(a / b for a, b in zip(times[s], times["plain"], strict=True))
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        print(f"  {s:8} {activations[s] / 2**20:13.0f} MiB {activations[s] / activations['plain']:9.2f} "
              f"{peak / 1024:10.0f} MiB {peak / plain_peak:9.2f} {statistics.median(times[s]) * 1000:8.0f} ms "
              f"{statistics.median(ratios):6.2f} (IQR {q[0]:.2f}-{q[2]:.2f})")


if __name__ == "__main__":
    main()
