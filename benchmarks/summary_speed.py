"""How fast `unetdsl summary` is, and how little memory it takes, on a 642 M-parameter spec
(benchmarks/specs/sd-sized-self-attention.yaml; weights alone would be 2.4 GiB in float32).

    .venv/bin/python benchmarks/summary_speed.py [SPEC] [--repeats 3]

Each run is a fresh interpreter doing exactly what the CLI does (`unetdsl summary SPEC`), so the
time includes importing torch and the fake-tensor machinery's first use; the peak RSS of that
process (ru_maxrss) is the memory figure. Printed: median and spread of the wall time, the peak RSS,
and, for scale, the same process's RSS after only `import torch`."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = r"""
import json, resource, sys, time
start = time.perf_counter()
import torch
after_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
from unetdsl.cli import main
import contextlib, io
with contextlib.redirect_stdout(io.StringIO()):
    code = main(["summary", sys.argv[1]] + sys.argv[2:])
print(json.dumps({"code": code, "seconds": time.perf_counter() - start,
                  "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "torch_kib": after_import}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec", nargs="?", default=str(ROOT / "benchmarks" / "specs" / "sd-sized-self-attention.yaml"))
    parser.add_argument("--repeats", type=int, default=3)
    args, extra = parser.parse_known_args()
    runs = []
    for _ in range(args.repeats):
        done = subprocess.run([sys.executable, "-c", CHILD, args.spec, *extra], capture_output=True, text=True,
                              check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        assert runs[-1]["code"] == 0
    seconds = [r["seconds"] for r in runs]
    peak = max(r["peak_kib"] for r in runs) / 1024
    base = max(r["torch_kib"] for r in runs) / 1024
    print(f"unetdsl summary {Path(args.spec).name} {' '.join(extra)}".rstrip())
    print(f"  wall time (fresh process, torch import included): median {statistics.median(seconds):.2f} s, "
          f"min {min(seconds):.2f}, max {max(seconds):.2f} over {len(runs)} runs")
    print(f"  peak RSS {peak:.0f} MiB (after `import torch` alone: {base:.0f} MiB)")


if __name__ == "__main__":
    main()
