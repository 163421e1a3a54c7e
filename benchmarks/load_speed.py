"""Loading trained weights against building with random ones, and the memory loading takes.

    .venv/bin/python benchmarks/load_speed.py [--spec specs/adm-imagenet64-cond.yaml] [--rounds 5]

Saves the spec's model once (`unetdsl.save`, into a temporary folder), then runs rounds of fresh
interpreters, in an order that alternates round by round (ABBA), each timing one call after its
imports:
  build   `build_model(spec, seed=0)`: every parameter allocated and drawn at random
  load    `unetdsl.load(file)`: built on meta, the file mapped, every tensor checked (names,
          shapes, dtypes, NaN/Inf) and used in place
  weights `build_model(spec, weights=file)`: the same through build_model
The ratio is the median of the per-round ratios load/build (IQR beside it). Memory: the child's
peak RSS (ru_maxrss) after the call minus its RSS before it, against the weights' bytes; the
file is in the page cache (it was just written), as for any model loaded twice.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import paired  # benchmarks/timing.py (run as a script: its folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
CHILD = r"""
import json, resource, sys, time
import torch, unetdsl
torch.set_num_threads(int(sys.argv[4]))
def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
kind, spec, path = sys.argv[1:4]
before = rss()
start = time.perf_counter()
if kind == "build":
    model = unetdsl.build_model(spec, seed=0)
elif kind == "load":
    model = unetdsl.load(path)
else:
    model = unetdsl.build_model(spec, weights=path)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before,
                  "bytes": sum(p.nbytes for p in model.parameters())}))
"""
KINDS = ("build", "load", "weights")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", default=str(ROOT / "specs" / "adm-imagenet64-cond.yaml"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import unetdsl

    runs: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        path = unetdsl.save(unetdsl.build_model(args.spec, seed=0), Path(tmp) / "model.safetensors")
        for r in range(args.rounds):
            for kind in KINDS if r % 2 == 0 else KINDS[::-1]:
                done = subprocess.run([sys.executable, "-c", CHILD, kind, args.spec, str(path), str(args.threads)],
                                      capture_output=True, text=True, check=True)
                runs[kind].append(json.loads(done.stdout.strip().splitlines()[-1]))
        size = path.stat().st_size
    weights = runs["load"][0]["bytes"]
    print(f"{Path(args.spec).stem}: {weights / 2**20:.0f} MiB of weights (file {size / 2**20:.0f} MiB), "
          f"{args.threads} threads, median of {args.rounds} rounds of fresh processes")
    for kind in KINDS:
        sec = [r["seconds"] for r in runs[kind]]
        peak = statistics.median(r["peak_kib"] for r in runs[kind]) * 1024
        print(f"  {kind:8} {statistics.median(sec) * 1000:8.1f} ms   peak memory {peak / 2**20:7.0f} MiB "
              f"= {peak / weights:.2f}x the weights")
    build = [r["seconds"] for r in runs["build"]]
    print(f"  ratio load / build:          {paired([r['seconds'] for r in runs['load']], build)}")
    print(f"  ratio build(weights=) / build: {paired([r['seconds'] for r in runs['weights']], build)}")


if __name__ == "__main__":
    main()
