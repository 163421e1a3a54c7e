"""unetdsl against diffusers on the same architecture and the same weights, in one process.

    .venv/bin/python benchmarks/vs_diffusers.py [--spec specs/ddpm-cifar10.yaml] [--batch 8]
        [--threads 2] [--rounds 21] [--device cpu|cuda] [--dtype float32|float16]

Builds the spec in unetdsl, turns it into a diffusers UNet2DModel with the same weights
(unetdsl.interop.diffusers.to_diffusers; outputs agree to 1e-5), then times forwards in
inference mode, interleaved round by round so machine noise hits every contender alike:
  unetdsl eager / diffusers eager
  unetdsl TorchScript (scripted file, reloaded) / diffusers torch.jit.trace (the best diffusers
  can do: its UNets do not script)
Each round runs every contender once, in an order that alternates round by round (ABBA), and
each ratio is the median over rounds of the *paired* per-round ratio, so drifts in machine speed
cancel; the interquartile range of those ratios says how much to trust the figure (< 1: unetdsl
is faster).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from timing import paired as paired_ratio  # benchmarks/timing.py (run as a script: its folder is on sys.path)

from unetdsl import build_model, export
from unetdsl.interop.diffusers import to_diffusers
from unetdsl.sample import sample_inputs
from unetdsl.torchscript import load


class _Traceable(torch.nn.Module):
    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.unet(x, t, return_dict=False)[0]
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="specs/ddpm-cifar10.yaml")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    args = ap.parse_args()
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    torch.manual_seed(0)
    ours = build_model(args.spec, device=device, dtype=dtype).eval()  # inference: dropout off
    theirs = to_diffusers(ours).to(device=device, dtype=dtype).eval()
    inp = sample_inputs(ours.spec, batch=args.batch, device=device, dtype=dtype)
    x, t = inp.x, inp.t
    assert t is not None
    with torch.inference_mode():
        diff = (ours(x, t, inp.y) - theirs(x, t, class_labels=inp.y).sample).abs().max().item()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.pt"
        export(ours, path)
        scripted = load(path, map_location=device)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # trace warnings and torch.jit deprecation: diffusers' side, not ours
        traced = torch.jit.trace(_Traceable(theirs), (x, t), check_trace=False)

    contenders: dict[str, Callable[[], object]] = {
        "unetdsl eager": lambda: ours(x, t, inp.y),
        "diffusers eager": lambda: theirs(x, t, class_labels=inp.y),
        "unetdsl torchscript": lambda: scripted(x, t, inp.y),
        "diffusers traced": lambda: traced(x, t),
    }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    with torch.inference_mode():
        for fn in contenders.values():
            for _ in range(3):
                fn()
        order = list(contenders)
        for r in range(args.rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                sync()
                start = time.perf_counter()
                contenders[name]()
                sync()
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}

    def paired(a: str, b: str) -> str:
        return paired_ratio(times[a], times[b])
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"{ours.spec.name}: batch {args.batch}, {list(x.shape[2:])}, {args.dtype}, {where}, torch {torch.__version__}; "
          f"max |unetdsl - diffusers| = {diff:.2e}; median of {args.rounds} interleaved rounds")
    for name, m in med.items():
        print(f"  {name:20} {m * 1000:9.2f} ms")
    print(f"  ratio unetdsl eager / diffusers eager:        {paired('unetdsl eager', 'diffusers eager')}")
    print(f"  ratio unetdsl torchscript / diffusers traced: {paired('unetdsl torchscript', 'diffusers traced')}")


if __name__ == "__main__":
    main()
