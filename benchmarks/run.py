"""Every speed and memory benchmark from one entry point: runs each script as its own process,
prints every ratio with its spread, and with `--table` rewrites the table of docs/measurements.md (between the
`<!-- bench:begin -->` and `<!-- bench:end -->` markers) from what this run printed.

    make bench                                        # all of them (about 40 minutes on 2 cores)
    .venv/bin/python benchmarks/run.py --only ddpm,sd15 [--table]
    .venv/bin/python benchmarks/run.py --list
    .venv/bin/python benchmarks/run.py --table-from run1.log run2.log   # the table from earlier runs' output

Each row names the command that made it, so any figure can be re-measured alone. Ratios < 1 mean
unetdsl is faster (or smaller); "IQR" is the interquartile range of the paired per-round ratios
(benchmarks/timing.py). A row whose line is missing from its script's output is an error: the
table is never half-written.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


@dataclass(frozen=True)
class Row:
    what: str
    pattern: str  # a regex over the script's output; group 1 is the result shown


@dataclass(frozen=True)
class Bench:
    name: str
    args: tuple[str, ...]  # benchmarks/<script> and its arguments
    rows: tuple[Row, ...]

    @property
    def command(self) -> str:
        return ".venv/bin/python benchmarks/" + " ".join(self.args)


_DDPM = "DDPM CIFAR-10, batch 8, 32x32, same weights as diffusers"
_SD = "SD 1.5 U-Net (UNet2DConditionModel), batch 1, 32x32 latents, 77 tokens, same weights"
BENCHES: tuple[Bench, ...] = (
    Bench("ddpm", ("vs_diffusers.py", "--rounds", "21", "--aoti", "--flops"), (
        Row(f"unetdsl eager / diffusers eager, {_DDPM}", r"ratio unetdsl eager / diffusers eager:\s+(.+)"),
        Row("unetdsl TorchScript (written, reloaded) / diffusers `torch.jit.trace`, same",
            r"ratio unetdsl torchscript / diffusers traced:\s+(.+)"),
        Row("unetdsl TorchScript frozen / diffusers traced and frozen, same",
            r"ratio unetdsl ts frozen / diffusers traced frozen:\s+(.+)"),
        Row("unetdsl TorchScript frozen / diffusers traced (not frozen), same",
            r"ratio unetdsl ts frozen / diffusers traced:\s+(.+)"),
        Row("unetdsl AOTInductor package / diffusers traced and frozen, same",
            r"ratio unetdsl aoti / diffusers traced frozen:\s+(.+)"),
        Row("unetdsl AOTInductor package / diffusers traced (not frozen), same",
            r"ratio unetdsl aoti / diffusers traced:\s+(.+)"),
        Row("FLOP/s unetdsl eager achieves / the best single 3x3 conv of the model run alone, same",
            r"achieves (.+)"),
    )),
    # (--no-frozen: two more copies of 3.4 GB of weights would not fit beside the rest in 23 GB)
    Bench("sd15", ("vs_diffusers.py", "--spec", "specs/sd15-unet.yaml", "--batch", "1", "--size", "32", "--rounds", "9",
                   "--no-frozen"), (
        Row(f"unetdsl eager / diffusers eager, {_SD}", r"ratio unetdsl eager / diffusers eager:\s+(.+)"),
        Row("unetdsl TorchScript / diffusers traced, same SD U-Net", r"ratio unetdsl torchscript / diffusers traced:\s+(.+)"),
    )),
    Bench("vae", ("vs_diffusers.py", "--spec", "specs/sd-vae.yaml", "--batch", "1", "--size", "16", "--rounds", "9"), (
        Row("unetdsl eager / diffusers eager, SD VAE decoder (AutoencoderKL.decode), batch 1, 16x16 latents",
            r"ratio unetdsl eager / diffusers eager:\s+(.+)"),
        Row("unetdsl TorchScript / diffusers traced, same VAE decoder",
            r"ratio unetdsl torchscript / diffusers traced:\s+(.+)"),
        Row("unetdsl TorchScript frozen / diffusers traced and frozen, same VAE decoder",
            r"ratio unetdsl ts frozen / diffusers traced frozen:\s+(.+)"),
    )),
    # (no diffusers in this process: the U-Net eager, packed and plain frozen fit in 23 GB together)
    Bench("frozen-packing", ("frozen_packing.py", "--rounds", "7"), (
        Row("unetdsl TorchScript frozen, convolution weights packed when loaded / frozen plain (`--no-prepack`), "
            "SD 1.5 U-Net, batch 1, 32x32 latents, 77 tokens", r"ratio frozen packed / frozen plain:\s+(.+)"),
        Row("the same packed frozen module / unetdsl eager", r"ratio frozen packed / eager:\s+(.+)"),
        Row("`torch.jit.load` of each (the packed file packs as it loads)", r"torch.jit.load: (.+)"),
    )),
    # (two AOTInductor compiles of DDPM: about 3 minutes of the run's 4)
    Bench("aoti-packing", ("frozen_packing.py", "--format", "aoti", "--spec", "specs/ddpm-cifar10.yaml", "--batch", "1",
                           "--size", "32", "--rounds", "15"), (
        Row("unetdsl AOTInductor package, convolution weights packed when compiled / the same unpacked (`--no-prepack`), "
            "DDPM CIFAR-10, batch 1, 32x32", r"ratio aoti packed / aoti plain:\s+(.+)"),
        Row("the same packed package / unetdsl eager", r"ratio aoti packed / eager:\s+(.+)"),
    )),
    # (two AOTInductor compiles of the SD 1.5 U-Net: about 8 minutes)
    Bench("aoti-pack-sd15", ("frozen_packing.py", "--format", "aoti", "--rounds", "7"), (
        Row("unetdsl AOTInductor package, convolution weights packed when compiled / the same unpacked, "
            "SD 1.5 U-Net, batch 1, 32x32 latents, 77 tokens", r"ratio aoti packed / aoti plain:\s+(.+)"),
        Row("the same packed SD package / unetdsl eager", r"ratio aoti packed / eager:\s+(.+)"),
    )),
    Bench("export", ("export_throughput.py", "--rounds", "15", "--formats", "torchscript,export,onnx"), (
        Row("exported artifact / eager (unpacked weights in the artifacts), DDPM CIFAR-10, batch 8: TorchScript",
            r"torchscript .* ratio to eager (\S+)"),
        Row("the same: torch.export `.pt2` (`ExportedProgram.module()`)", r"export .* ratio to eager (\S+)"),
        Row("the same: ONNX Runtime (CPU provider)", r"onnx .* ratio to eager (\S+)"),
    )),
    Bench("load", ("load_speed.py", "--rounds", "5"), (
        Row("`unetdsl.load` / random-init `build_model`, ADM ImageNet-64 (1129 MiB of weights), fresh processes",
            r"ratio load / build:\s+(.+)"),
        Row("peak memory of `unetdsl.load` / the weights' bytes, same", r"load .* = (\S+x) the weights"),
    )),
    # (without --no-compile it also compiles both models: 5 more minutes, and no gain on this CPU)
    Bench("train", ("train_step.py", "--rounds", "11", "--no-compile"), (
        Row("training step (forward + backward + AdamW), unetdsl eager / diffusers eager, DDPM CIFAR-10, batch 16",
            r"unetdsl eager / diffusers eager \(train step\):\s+(.+)"),
    )),
    Bench("checkpointing", ("checkpointing.py", "--rounds", "7"), (
        Row("activation checkpointing per block / plain, DDPM CIFAR-10, batch 32: activations kept (ratio); peak "
            "step memory (MiB; ratio); step time (ms; ratio)", r"block\s+\d+ MiB\s+(.+)"),
        Row("checkpointing per level / plain, same", r"level\s+\d+ MiB\s+(.+)"),
    )),
    Bench("validate", ("validate_vs_torch_import.py", "--runs", "9"), (
        Row("`unetdsl validate` / `python -c \"import torch\"` (whole processes)", r"ratio validate / import torch: (.+)"),
    )),
    Bench("summary", ("summary_speed.py",), (
        Row("`unetdsl summary` of a 642 M-parameter spec (fresh process): wall time", r"wall time .*: (median .+)"),
    )),
)

_WHATS = [row.what for bench in BENCHES for row in bench.rows]
assert len(_WHATS) == len(set(_WHATS)), "each row's label must be unique: --table-from finds results by it"


def run(bench: Bench) -> tuple[list[str], str]:
    """(each row's result, the script's output); SystemExit if the script fails or a row is missing."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / bench.args[0]), *bench.args[1:]],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{bench.command} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    results = []
    for row in bench.rows:
        found = re.search(row.pattern, done.stdout)
        if found is None:
            raise SystemExit(f"{bench.command}: no line matches {row.pattern!r} in its output:\n{done.stdout}")
        results.append(found.group(1).strip())
    print(f"{bench.name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return results, done.stdout


def table(measured: dict[str, list[str]]) -> str:
    lines = ["| what | command | result |", "| --- | --- | --- |"]
    for bench in BENCHES:
        if bench.name not in measured:
            continue
        for i, (row, result) in enumerate(zip(bench.rows, measured[bench.name], strict=True)):
            command = f"`{bench.command}`" if i == 0 else "same run"
            result = re.sub(r"\s{2,}", "; ", result)  # a script's aligned columns, as a list
            lines.append(f"| {row.what} | {command} | {result} |")
    return "\n".join(lines)


TABLE_PAGE = ROOT / "docs" / "measurements.md"


def rewrite_readme(new_table: str, header: str) -> None:
    """Rewrite the table between the bench markers of docs/measurements.md."""
    readme = TABLE_PAGE
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} section to rewrite")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(f"{head}{BEGIN}\n{header}\n\n{new_table}\n{END}{tail}")
    tmp.replace(readme)


def _header() -> str:
    import torch

    return (f"Made by `make bench` on {time.strftime('%Y-%m-%d')}: torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads available, CPU only unless a row names a GPU.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated benchmark names (see --list)")
    ap.add_argument("--table", action="store_true", help="rewrite docs/measurements.md's table with this run's results "
                                                          "(needs every benchmark: no --only)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--table-from", nargs="+", metavar="LOG",
                    help="rewrite docs/measurements.md's table from what earlier runs printed (say, a full run whose one failed "
                         "benchmark was then run alone with --only); every row must be found")
    args = ap.parse_args()
    if args.list:
        for bench in BENCHES:
            print(f"{bench.name:14} {bench.command}")
        return
    if args.table_from:
        printed = "\n".join(Path(p).read_text() for p in args.table_from)
        measured = {}
        for bench in BENCHES:
            results = []
            for row in bench.rows:
                found = re.findall(r"^  " + re.escape(row.what) + r": (.+)$", printed, flags=re.M)
                if not found:
                    raise SystemExit(f"no result for {row.what!r} in {', '.join(args.table_from)}")
                results.append(found[-1].strip())  # the latest run's
            measured[bench.name] = results
        rewrite_readme(table(measured), _header())
        print("docs/measurements.md: table rewritten", file=sys.stderr)
        return
    names = args.only.split(",") if args.only else [b.name for b in BENCHES]
    unknown = sorted(set(names) - {b.name for b in BENCHES})
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(b.name for b in BENCHES)}")
    if args.table and args.only:
        raise SystemExit("--table rewrites the whole table: run every benchmark (drop --only)")
    measured: dict[str, list[str]] = {}
    for bench in BENCHES:
        if bench.name in names:
            measured[bench.name], output = run(bench)
            print(output.strip().splitlines()[0])
            for row, result in zip(bench.rows, measured[bench.name], strict=True):
                print(f"  {row.what}: {result}")
    if args.table:
        rewrite_readme(table(measured), _header())
        print("docs/measurements.md: table rewritten", file=sys.stderr)
    else:
        print()
        print(table(measured))


if __name__ == "__main__":
    main()
