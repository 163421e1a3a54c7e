"""unetdsl against diffusers on a CUDA GPU, half precision: every deployment format against diffusers
eager and diffusers compiled, same architecture and same weights, in one process.

    python benchmarks/gpu.py [--spec specs/ddpm-cifar10.yaml] [--dtypes float16,bfloat16]
        [--batches 8,64] [--rounds 30] [--budget 600] [--compile-limit 150] [--out gpu.json]

For each dtype it builds the spec on the GPU, makes the diffusers model with the same weights
(unetdsl.interop.diffusers.to_diffusers), writes and reloads each format through unetdsl.export
(checked against eager like every export), and times, per batch size, interleaved round by round
(ABBA) with the GPU synchronised around each forward:
  unetdsl: eager (as built: memory_format "auto", the default layout on a GPU), eager built
  channels-last (the CPU's rule), eager with every conv weight and every part channels-last
  ("all-cl"), TorchScript, TorchScript frozen,
  torch.export (`ExportedProgram.module()`), AOTInductor package, torch.compile
  diffusers: eager, eager channels-last (model and input), torch.jit.trace, torch.compile
ONNX Runtime's CUDA provider is timed where onnxruntime has it (onnxruntime-gpu), else reported absent.
Ratios are medians of paired per-round ratios with their IQR (< 1: unetdsl faster). Every contender
is set up inside its own try: one that fails is reported with its error and the rest still run;
results are written to --out after every section, so a run cut short keeps what it measured.
Phases, each timed and written before the next: every format and eager variant for each dtype, then
per dtype torch.compile and AOTInductor. `--budget` seconds bounds the run (a compile that would
outlast it gives up), `--compile-limit` each compile.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import paired
from vs_diffusers import _diffusers_call, _Traceable

from unetdsl import build_model, export
from unetdsl.artifacts import FORMATS
from unetdsl.interop.diffusers import to_diffusers
from unetdsl.sample import sample_inputs

START = time.perf_counter()


def _elapsed() -> float:
    return time.perf_counter() - START


def _all_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """Every 4D/5D weight channels-last and every part channels-last at any size: the layout
    cuDNN's tensor-core kernels want, with no per-call weight reorder."""
    for m in model.modules():
        if hasattr(m, "min_positions"):
            m.min_positions = 0
        for p in m.parameters(recurse=False):
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
            elif p.dim() == 5:
                p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
    return model


class Section:
    """One dtype: the two models (same weights), the contenders set up so far, their timings."""

    REFERENCES = ("unetdsl eager", "diffusers eager", "diffusers traced", "diffusers compiled")

    def __init__(self, spec_path: str, device: torch.device, dtype: torch.dtype, batches: list[int], rounds: int,
                 tmp: Path, log: Callable[[str], None]):
        self.spec_path, self.device, self.dtype, self.batches, self.rounds = spec_path, device, dtype, batches, rounds
        self.tmp, self.log = tmp, log
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.name = str(dtype).removeprefix("torch.")
        self.errors: dict[str, str] = {}
        self.results: dict[str, dict[str, object]] = {}  # "phase, batch N" -> ms and ratios
        self.runners: dict[str, Callable[[object], object]] = {}
        torch.manual_seed(0)
        self.ours = build_model(spec_path, device=device, dtype=dtype).eval()
        self.theirs = to_diffusers(self.ours).to(device=device, dtype=dtype).eval()
        self.spec = self.ours.spec
        self.call = _diffusers_call(self.spec, self.spec.classes is not None)
        self.probe = sample_inputs(self.spec, batch=batches[0], device=device, dtype=dtype)
        with torch.inference_mode():
            self.diff = (self.ours(*self.probe.args()) - self.call(self.theirs, *self.probe.present())).abs().max().item()

    def summary(self) -> dict[str, object]:
        return {"dtype": self.name, "max_abs_diff_vs_diffusers": self.diff, "errors": self.errors, "results": self.results}

    def add(self, name: str, setup: Callable[[], Callable[[object], object]], limit: float | None = None) -> None:
        """Set a contender up; with `limit`, give up after that many seconds (SIGALRM: compiles)."""
        if limit is not None and limit < 20:
            self.errors[name] = f"skipped: {limit:.0f} s of the run's budget left"
            self.log(f"  {name}: {self.errors[name]}")
            return
        t0 = time.perf_counter()
        if limit is not None:
            signal.signal(signal.SIGALRM, _alarm)
            signal.alarm(int(limit))
        try:
            self.runners[name] = setup()
            self.log(f"  {name}: ready in {time.perf_counter() - t0:.1f} s")
        except BaseException as exc:  # a contender that fails is reported, the rest still run
            if isinstance(exc, KeyboardInterrupt):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.errors[name] = f"{type(exc).__name__} after {time.perf_counter() - t0:.0f} s: {first[:300]}"
            self.log(f"  {name}: FAILED {self.errors[name]}")
            if not isinstance(exc, _Timeout):
                traceback.print_exc()
        finally:
            if limit is not None:
                signal.alarm(0)

    def exported(self, fmt: str, freeze: bool = False) -> Callable[[], Callable[[object], object]]:
        def setup() -> Callable[[object], object]:
            path = self.tmp / f"{self.name}-{fmt}{'-frozen' if freeze else ''}{FORMATS[fmt].suffix}"
            report = export(self.ours, path, format=fmt, freeze=freeze)
            self.log(f"    {fmt}{' frozen' if freeze else ''}: checked against eager, max |diff| {report.max_abs_diff:.3g}")
            run = FORMATS[fmt].load(path, self.device)
            return lambda inp: run(inp)
        return setup

    def aoti_static(self) -> Callable[[], Callable[[object], object]]:
        """An AOTInductor package for the first batch size's shapes alone (not a unetdsl format:
        a diagnosis of the dynamic-shape compile's cost), checked against eager at that size."""
        def setup() -> Callable[[object], object]:
            from unetdsl.artifacts import TOLERANCE, _traceable, call_args

            inp = sample_inputs(self.spec, batch=self.batches[0], device=self.device, dtype=self.dtype)
            program = torch.export.export(_traceable(self.ours, self.spec), call_args(inp))
            with torch.no_grad():  # inductor freezes only with grad disabled
                path = torch._inductor.aoti_compile_and_package(
                    program, package_path=str(self.tmp / f"{self.name}-static.pt2"), inductor_configs={"freezing": True})
            run = torch._inductor.aoti_load_package(path)
            with torch.inference_mode():
                got, want = run(*call_args(inp)), self.ours(*inp.args())
            atol, rtol = TOLERANCE[self.dtype]
            if not bool(((got.float() - want.float()).abs() <= atol + rtol * want.float().abs()).all()):
                raise RuntimeError("the static AOTInductor package disagrees with eager")
            def fixed(i: object) -> object:
                if i.x.shape != inp.x.shape:  # type: ignore[attr-defined]
                    raise ValueError(f"a static package runs {list(inp.x.shape)} only")  # reported, not timed
                return run(*call_args(i))  # type: ignore[arg-type]
            return fixed
        return setup

    def compiled(self, which: str) -> Callable[[], Callable[[object], object]]:
        def setup() -> Callable[[object], object]:
            if which == "unetdsl":
                c = torch.compile(self.ours)
                fn: Callable[[object], object] = lambda inp: c(*inp.args())  # type: ignore[attr-defined]  # noqa: E731
            else:
                c = torch.compile(self.theirs)
                fn = lambda inp: self.call(c, *inp.present())  # type: ignore[attr-defined]  # noqa: E731
            with torch.inference_mode():
                for b in self.batches:  # compiled for every batch timed
                    fn(sample_inputs(self.spec, batch=b, device=self.device, dtype=self.dtype))
            return fn
        return setup

    def time(self, phase: str, names: list[str]) -> None:
        """Time `names` and the references, interleaved (ABBA), at every batch size."""
        names = [n for n in dict.fromkeys([*self.REFERENCES, *names]) if n in self.runners]
        for batch in self.batches:
            inp = sample_inputs(self.spec, batch=batch, device=self.device, dtype=self.dtype)
            times: dict[str, list[float]] = {}
            with torch.inference_mode():
                for name in names:
                    try:
                        for _ in range(5):
                            self.runners[name](inp)
                        self.sync()
                        times[name] = []
                    except Exception as exc:
                        self.errors[f"{name} @ batch {batch}"] = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
                        self.log(f"  {name} @ batch {batch}: FAILED {self.errors[f'{name} @ batch {batch}']}")
                order = list(times)
                for r in range(self.rounds):
                    for name in order if r % 2 == 0 else order[::-1]:
                        self.sync()
                        t0 = time.perf_counter()
                        self.runners[name](inp)
                        self.sync()
                        times[name].append(time.perf_counter() - t0)
            row: dict[str, object] = {"ms": {k: statistics.median(v) * 1000 for k, v in times.items()}}
            for peer in ("diffusers eager", "diffusers compiled", "diffusers traced"):
                if peer in times:
                    row[f"/ {peer}"] = {k: paired(v, times[peer]) for k, v in times.items() if k.startswith("unetdsl")}
            self.results[f"{phase}, batch {batch}"] = row
            self.log(f"  {self.name} {phase}, batch {batch}, {list(inp.x.shape)}:")
            for k, v in row["ms"].items():  # type: ignore[attr-defined]
                self.log(f"    {k:32} {v:8.3f} ms")
            for key in [k for k in row if k.startswith("/")]:
                for k, v in row[key].items():  # type: ignore[attr-defined]
                    self.log(f"    ratio {k} {key}: {v}")


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Timeout("gave up: over its time limit")


def cheap(s: Section) -> list[str]:
    """The contenders that take seconds to set up."""
    s.add("unetdsl eager", lambda: lambda inp: s.ours(*inp.args()))  # type: ignore[attr-defined]
    s.add("diffusers eager", lambda: lambda inp: s.call(s.theirs, *inp.present()))  # type: ignore[attr-defined]

    def all_cl() -> Callable[[object], object]:
        m = _all_channels_last(build_model(s.spec_path, device=s.device, dtype=s.dtype).eval())
        m.load_state_dict(s.ours.state_dict())
        return lambda inp: m(*inp.args())  # type: ignore[attr-defined]
    s.add("unetdsl eager all-cl", all_cl)

    def channels_last() -> Callable[[object], object]:  # the CPU's layout rule, on the GPU
        m = build_model(s.spec_path, device=s.device, dtype=s.dtype, memory_format="channels_last").eval()
        m.load_state_dict(s.ours.state_dict())
        return lambda inp: m(*inp.args())  # type: ignore[attr-defined]
    s.add("unetdsl eager channels-last", channels_last)

    def diffusers_cl() -> Callable[[object], object]:
        m = to_diffusers(s.ours).to(device=s.device, dtype=s.dtype, memory_format=torch.channels_last).eval()

        def run(inp: object) -> object:
            x, *rest = inp.present()  # type: ignore[attr-defined]
            return s.call(m, x.contiguous(memory_format=torch.channels_last), *rest)
        return run
    s.add("diffusers eager channels-last", diffusers_cl)

    def traced() -> Callable[[object], object]:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            tr = torch.jit.trace(_Traceable(s.theirs, s.call), s.probe.present(), check_trace=False)
        return lambda inp: tr(*inp.present())  # type: ignore[attr-defined]
    s.add("diffusers traced", traced)
    s.add("unetdsl torchscript", s.exported("torchscript"))
    s.add("unetdsl torchscript frozen", s.exported("torchscript", freeze=True))
    s.add("unetdsl export", s.exported("export"))
    try:
        import onnxruntime as ort
        providers = ort.get_available_providers()
    except ImportError:
        providers = []
    if "CUDAExecutionProvider" in providers:
        s.add("unetdsl onnx (ort cuda)", s.exported("onnx"))
    else:
        s.errors["unetdsl onnx (ort cuda)"] = f"not run: onnxruntime has no CUDA provider here ({', '.join(providers)})"
        s.log(f"  {s.errors['unetdsl onnx (ort cuda)']}")
    return list(s.runners)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="specs/ddpm-cifar10.yaml")
    ap.add_argument("--dtypes", default="float16,bfloat16")
    ap.add_argument("--batches", default="8,64")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--budget", type=float, default=600.0, help="seconds the whole run may take: compiles stop there")
    ap.add_argument("--compile-limit", type=float, default=150.0, help="seconds one compile may take")
    ap.add_argument("--out", default="gpu.json")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of this script itself (its figures mean nothing)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA GPU")
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    lines: list[str] = []

    def log(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (dry run)"
    header = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version(), "spec": args.spec, "rounds": args.rounds, "sections": []}
    log(f"{header['device']}, torch {header['torch']}, CUDA {header['cuda']}, cuDNN {header['cudnn']}; {args.spec}")
    batches = [int(b) for b in args.batches.split(",")]
    sections: list[Section] = []

    def dump() -> None:
        header["sections"] = [s.summary() for s in sections]
        Path(args.out).write_text(json.dumps(header, indent=1))
        Path(args.out).with_suffix(".log").write_text("\n".join(lines) + "\n")

    def left() -> float:
        return args.budget - _elapsed()

    # the phases cheapest first, each timed and written before the next: a run cut short keeps
    # what it measured (an AOTInductor compile with dynamic shapes can take minutes on CUDA)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.dtypes.split(","):
            log(f"{name}, formats ({_elapsed():.0f} s into the run):")
            try:
                s = Section(args.spec, device, getattr(torch, name), batches, args.rounds, Path(tmp), log)
            except Exception:
                traceback.print_exc()
                continue
            sections.append(s)
            s.time("formats", cheap(s))
            dump()
        for s in sections:  # one dtype's compiles, then the next's
            log(f"{s.name}, torch.compile ({_elapsed():.0f} s into the run):")
            for which in ("diffusers", "unetdsl"):
                s.add(f"{which} compiled", s.compiled(which), limit=min(args.compile_limit, left()))
            s.time("compiled", ["unetdsl compiled"])
            dump()
            log(f"{s.name}, AOTInductor ({_elapsed():.0f} s into the run):")
            # static shapes first: on the H100 (torch 2.11) the dynamic-shape compile ran past 290 s
            # in sympy; whether a static package compiles in time tells where the cost is
            s.add("unetdsl aoti static", s.aoti_static(), limit=min(args.compile_limit, left()))
            s.add("unetdsl aoti", s.exported("aoti"), limit=min(args.compile_limit, left()))
            s.time("aoti", ["unetdsl aoti static", "unetdsl aoti", "unetdsl torchscript frozen"])
            dump()
    log(f"done in {_elapsed():.0f} s")
    dump()


if __name__ == "__main__":
    main()
