"""Throughput of the exported artifacts against the eager model they came from, same process.

    .venv/bin/python benchmarks/export_throughput.py [--spec specs/ddpm-cifar10.yaml] [--batch 8]
        [--device cpu|cuda] [--dtype float32|float16|bfloat16] [--threads 2] [--rounds 15]
        [--formats torchscript,export,onnx]

Each artifact is written with unetdsl.export (so it passed its check), loaded back the way a
deployment loads it, and timed interleaved with eager, round by round, so machine noise hits all
alike. Reported: median seconds per forward and the ratio artifact / eager (< 1 is faster).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from unetdsl import build_model, export
from unetdsl.artifacts import DTYPES, FORMATS
from unetdsl.sample import sample_inputs


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="specs/ddpm-cifar10.yaml")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=list(DTYPES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--formats", default="torchscript,export,onnx")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model = build_model(args.spec, device=device, dtype=dtype).eval()
    inputs = sample_inputs(model.spec, batch=args.batch, device=device, dtype=dtype)
    runners: dict[str, Callable[[], object]] = {"eager": lambda: model(*inputs.args())}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats.split(","):
            path = Path(tmp) / f"m{FORMATS[fmt].suffix}"
            export(model, path, format=fmt)
            run = FORMATS[fmt].load(path, device)
            runners[fmt] = lambda run=run: run(inputs)
        times: dict[str, list[float]] = {k: [] for k in runners}
        with torch.inference_mode():
            for fn in runners.values():  # warm-up (TorchScript profiles its first calls)
                for _ in range(3):
                    fn()
            for _ in range(args.rounds):
                for name, fn in runners.items():
                    times[name].append(timed(fn, sync))
    eager = statistics.median(times["eager"])
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"{model.spec.name}, batch {args.batch}, {list(inputs.x.shape[2:])}, {args.dtype}, {where}, "
          f"torch {torch.__version__}, median of {args.rounds} interleaved rounds")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:12} {med * 1000:9.2f} ms   ratio to eager {med / eager:.3f}")


if __name__ == "__main__":
    main()
