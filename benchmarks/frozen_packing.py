"""Frozen artifacts with packed convolution weights against the same artifact unpacked, same process.

    .venv/bin/python benchmarks/frozen_packing.py [--spec specs/sd15-unet.yaml] [--batch 1] [--size 32]
        [--tokens 77] [--threads 2] [--rounds 7] [--format torchscript|aoti]

Both files are written by unetdsl.export (so both passed their check), one with `prepack=False`:
- torchscript (`freeze=True`): the plain frozen module is what torch.jit.freeze gives, reordering
  every convolution weight on every call; the packed one packs them when it loads;
- aoti: the plain package is what inductor's freezing gives for dynamic sizes (weights reordered
  on every call); the packed one had its weights larger than 1x1 packed when compiled
  (unetdsl.aoti_packing). Each package compiles for minutes.
Timed interleaved round by round (ABBA) with the eager model, which packs its own weights; each
ratio is the median of paired per-round ratios (IQR). Without diffusers in the process, so the
SD 1.5 U-Net's three copies of 3.4 GB fit in 23 GB (the `vs_diffusers.py` SD run cannot hold
frozen modules beside diffusers' two).
Also reported: what loading each file costs (the packed TorchScript file packs as it loads).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from timing import interleaved, paired  # benchmarks/timing.py (run as a script: its folder is on sys.path)

from unetdsl import build_model, export
from unetdsl.sample import sample_inputs
from unetdsl.torchscript import load


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="specs/sd15-unet.yaml")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=77)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--format", choices=["torchscript", "aoti"], default="torchscript")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.spec).eval()
    spec = model.spec
    inp = sample_inputs(spec, batch=args.batch, size=[args.size] * spec.dims, tokens=args.tokens)
    call = inp.args()
    loads: dict[str, float] = {}
    aoti = args.format == "aoti"
    with tempfile.TemporaryDirectory() as tmp:
        modules: dict[str, Callable[..., torch.Tensor]] = {}
        for name, prepack in (("packed", True), ("plain", False)):
            path = Path(tmp) / (f"{name}.aoti.pt2" if aoti else f"{name}.pt")
            if aoti:
                export(model, path, format="aoti", prepack=prepack)
            else:
                export(model, path, freeze=True, prepack=prepack)
            start = time.perf_counter()
            modules[name] = torch._inductor.aoti_load_package(str(path)) if aoti else load(path)
            loads[name] = time.perf_counter() - start
            path.unlink()  # the loaded module holds what it needs; free the disk
    what = "aoti" if aoti else "frozen"
    contenders: dict[str, Callable[[], object]] = {
        "eager": lambda: model(*call),
        f"{what} packed": lambda: modules["packed"](*call),
        f"{what} plain": lambda: modules["plain"](*call),
    }
    with torch.inference_mode():
        times = interleaved(contenders, args.rounds, warmup=2)
    print(f"{spec.name}: batch {args.batch}, {list(inp.x.shape[2:])}, float32, CPU, {args.threads} threads, "
          f"torch {torch.__version__}; median of {args.rounds} interleaved rounds")
    for name, ts in times.items():
        print(f"  {name:14} {statistics.median(ts) * 1000:9.1f} ms")
    print(f"  ratio {what} packed / {what} plain: {paired(times[f'{what} packed'], times[f'{what} plain'])}")
    print(f"  ratio {what} packed / eager:        {paired(times[f'{what} packed'], times['eager'])}")
    loader = "aoti_load_package" if aoti else "torch.jit.load"
    print(f"  {loader}: packed {loads['packed']:.2f} s, plain {loads['plain']:.2f} s")


if __name__ == "__main__":
    main()
