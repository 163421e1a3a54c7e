"""SIGKILL `unetdsl build -o TARGET` at random moments and check that TARGET is never torn: it is
always the previous file byte for byte, or a new complete file that loads and carries its
provenance; and that a live run's temporary is never removed by another run.

    .venv/bin/python benchmarks/kill_test.py [--kills 50] [--formats torchscript,export,onnx] [--seed 0]

Each round starts a build of specs/tiny.yaml with a fresh --seed (so every new file differs from
the old), kills it after a random delay drawn over the build's measured duration, and inspects the
target. Every few rounds two builds to the same target run at once and both must succeed.
Prints a line per format: kills, how many left the old file, how many landed a new one, failures.
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "tiny.yaml"
SUFFIX = {"torchscript": ".pt", "export": ".pt2", "onnx": ".onnx"}


def build(target: Path, fmt: str, seed: int) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("unetdsl")
    return subprocess.Popen([str(exe), "build", str(SPEC), "-o", str(target), "--format", fmt, "--seed", str(seed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def complete(target: Path) -> bool:
    """A whole artifact: its provenance reads, and (TorchScript) torch loads it."""
    from unetdsl.inspect import InspectError, read_metadata

    try:
        meta = read_metadata(target)
    except InspectError:
        return False
    if target.suffix == ".pt":
        from unetdsl.torchscript import load

        try:
            load(target)
        except Exception:
            return False
    return "unetdsl/spec_id" in meta


def campaign(fmt: str, kills: int, rng: random.Random, work: Path, concurrent_every: int = 10
             ) -> tuple[int, int, int, list[str]]:
    target = work / f"m{SUFFIX[fmt]}"
    start = time.perf_counter()
    first = build(target, fmt, 0)
    if first.wait() != 0:
        raise SystemExit(f"{fmt}: the first build failed: {first.stderr.read().decode()[-2000:] if first.stderr else ''}")
    duration = time.perf_counter() - start
    kept = landed = 0
    failures: list[str] = []
    for i in range(1, kills + 1):
        before = target.read_bytes()
        proc = build(target, fmt, i)
        time.sleep(rng.uniform(0.0, duration * 1.1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        after = target.read_bytes()
        if after == before:
            kept += 1
        elif complete(target):
            landed += 1
        else:
            failures.append(f"round {i}: the target is torn ({len(after)} bytes)")
        if i % concurrent_every == 0:  # two live runs to one target: neither may remove the other's temporary
            a, b = build(target, fmt, 1000 + i), build(target, fmt, 2000 + i)
            codes = a.wait(), b.wait()
            if codes != (0, 0):
                err = (a.stderr.read() if a.stderr else b"") + (b.stderr.read() if b.stderr else b"")
                failures.append(f"round {i}: concurrent builds exited {codes}: {err.decode()[-500:]}")
            elif not complete(target):
                failures.append(f"round {i}: after concurrent builds the target is not complete")
    return kept, landed, kills, failures


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--formats", default="torchscript,export,onnx")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="folder for the targets (default: a temporary one)")
    args = ap.parse_args()
    import tempfile

    rng = random.Random(args.seed)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        for fmt in args.formats.split(","):
            kept, landed, kills, failures = campaign(fmt, args.kills, rng, work)
            left = sorted(p.name for p in work.iterdir() if p.name.startswith(".unetdsl-tmp-"))
            print(f"{fmt:12} kills {kills}: old file kept {kept}, new verified file {landed}, torn 0 expected, "
                  f"failures {len(failures)}; temporaries left by killed runs: {len(left)} (removed by the next run)")
            for f in failures:
                print("   ", f)
            failed |= bool(failures)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
