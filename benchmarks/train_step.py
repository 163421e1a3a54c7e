"""A training step (forward + backward + AdamW) of unetdsl against diffusers UNet2DModel with the
same architecture and the same weights, in one process; eager and torch.compile'd; plus the
compiled/eager ratio of unetdsl inference.

    .venv/bin/python benchmarks/train_step.py [--spec specs/ddpm-cifar10.yaml] [--batch 16]
        [--threads 2] [--rounds 15] [--no-compile] [--device cpu|cuda]

Both models are in train mode (dropout on), each with its own AdamW; the loss is the MSE to a
fixed target. Rounds are interleaved and alternate their order (ABBA); every ratio is the median
of per-round paired ratios with its interquartile range (< 1: the first named is faster).
Compiled contenders are compiled and warmed before timing (compile time is printed, not timed).
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timing import paired as paired_ratio  # benchmarks/timing.py (run as a script: its folder is on sys.path)

from unetdsl import build_model
from unetdsl.interop.diffusers import to_diffusers
from unetdsl.sample import sample_inputs


class _Diffusers(torch.nn.Module):
    """diffusers' forward with unetdsl's signature, returning the tensor."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        if context is not None:  # UNet2DConditionModel
            out: torch.Tensor = self.unet(x, t, encoder_hidden_states=context, class_labels=y, return_dict=False)[0]
            return out
        out = self.unet(x, t, class_labels=y, return_dict=False)[0]
        return out


def train_step(model: torch.nn.Module, args: tuple[torch.Tensor | None, ...], target: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(*args), target).backward()
        opt.step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="specs/ddpm-cifar10.yaml")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    ours = build_model(args.spec, device=device, seed=0)  # train mode
    theirs = _Diffusers(to_diffusers(ours)).to(device)   # same weights, train mode too
    inp = sample_inputs(ours.spec, batch=args.batch, device=device)
    call = inp.args()
    target = torch.randn_like(inp.x)
    contenders: dict[str, Callable[[], None]] = {
        "unetdsl eager": train_step(ours, call, target),
        "diffusers eager": train_step(theirs, call, target),
    }
    inference: dict[str, Callable[[], object]] = {}
    ours_eval = copy.deepcopy(ours).eval()
    inference["unetdsl eager inference"] = lambda: ours_eval(*call)
    if args.compile:
        compiled_ours = copy.deepcopy(ours)
        compiled_theirs = copy.deepcopy(theirs)
        contenders["unetdsl compiled"] = train_step(torch.compile(compiled_ours, fullgraph=True), call, target)
        # diffusers' UNet2DModel graph-breaks (fullgraph=True fails on it); compile it as it allows
        contenders["diffusers compiled"] = train_step(torch.compile(compiled_theirs), call, target)
        compiled_eval = torch.compile(copy.deepcopy(ours).eval(), fullgraph=True)
        inference["unetdsl compiled inference"] = lambda: compiled_eval(*call)

    for name, fn in [*contenders.items(), *inference.items()]:
        start = time.perf_counter()
        with torch.inference_mode(name.endswith("inference")):
            for _ in range(2):
                fn()
        sync()
        print(f"  warm-up {name}: {time.perf_counter() - start:.1f} s (compile included)", flush=True)

    times: dict[str, list[float]] = {k: [] for k in [*contenders, *inference]}
    order = list(times)
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            fn = contenders.get(name) or inference[name]
            with torch.inference_mode(name.endswith("inference")):
                sync()
                start = time.perf_counter()
                fn()
                sync()
            times[name].append(time.perf_counter() - start)

    def paired(a: str, b: str) -> str:
        return paired_ratio(times[a], times[b])

    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"{ours.spec.name}: training step (forward + backward + AdamW), batch {args.batch}, "
          f"{list(inp.x.shape[2:])}, float32, {where}, torch {torch.__version__}; median of {args.rounds} rounds")
    for name, ts in times.items():
        print(f"  {name:28} {statistics.median(ts) * 1000:9.1f} ms")
    print(f"  unetdsl eager / diffusers eager (train step):       {paired('unetdsl eager', 'diffusers eager')}")
    if args.compile:
        print(f"  unetdsl compiled / diffusers compiled (train step): {paired('unetdsl compiled', 'diffusers compiled')}")
        print(f"  unetdsl compiled / unetdsl eager (train step):      {paired('unetdsl compiled', 'unetdsl eager')}")
        print(f"  unetdsl compiled / unetdsl eager (inference):       "
              f"{paired('unetdsl compiled inference', 'unetdsl eager inference')}")


if __name__ == "__main__":
    main()
