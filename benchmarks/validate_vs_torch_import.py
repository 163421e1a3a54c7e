"""How fast `unetdsl validate` answers, as a ratio to `python -c "import torch"`.

    .venv/bin/python benchmarks/validate_vs_torch_import.py [--runs 15]

Both are whole processes started the same way, interleaved so machine noise hits both alike;
the figure is median(validate) / median(import torch). The front end never imports torch, so
the ratio is well under 1: validation costs less than merely loading the framework.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    validate = [sys.executable, "-m", "unetdsl.cli", "validate", str(ROOT / "specs" / "ddpm-cifar10.yaml")]
    torch_import = [sys.executable, "-c", "import torch"]
    bare = [sys.executable, "-c", "pass"]
    for cmd in (validate, torch_import, bare):  # warm the page cache
        timed(cmd)
    runs: dict[str, list[float]] = {"validate": [], "import torch": [], "python -c pass": []}
    for _ in range(args.runs):
        runs["validate"].append(timed(validate))
        runs["import torch"].append(timed(torch_import))
        runs["python -c pass"].append(timed(bare))
    med = {k: statistics.median(v) for k, v in runs.items()}
    for k, v in med.items():
        print(f"{k:16} median {v * 1000:7.1f} ms over {args.runs} runs")
    print(f"ratio validate / import torch: {med['validate'] / med['import torch']:.3f}")


if __name__ == "__main__":
    main()
