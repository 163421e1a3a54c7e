"""unetdsl against diffusers on a CUDA GPU, half precision: every deployment format against diffusers
eager and diffusers compiled, same architecture and same weights, in one process.

    python benchmarks/gpu.py [--spec specs/ddpm-cifar10.yaml] [--dtypes float16,bfloat16]
        [--batches 8,64] [--rounds 30] [--budget 420] [--out gpu.json]

For each dtype it builds the spec on the GPU, makes the diffusers model with the same weights
(unetdsl.interop.diffusers.to_diffusers), writes and reloads each format through unetdsl.export
(checked against eager like every export), and times, per batch size, interleaved round by round
(ABBA) with the GPU synchronised around each forward:
  unetdsl: eager (as built), eager with every conv weight channels-last and every part channels-last
  ("all-cl", a layout candidate for CUDA), eager built contiguous, TorchScript, TorchScript frozen,
  torch.export (`ExportedProgram.module()`), AOTInductor package, torch.compile
  diffusers: eager, eager channels-last (model and input), torch.jit.trace, torch.compile
ONNX Runtime's CUDA provider is timed where onnxruntime has it (onnxruntime-gpu), else reported absent.
Ratios are medians of paired per-round ratios with their IQR (< 1: unetdsl faster). Every contender
is set up inside its own try: one that fails is reported with its error and the rest still run;
results are written to --out after every section, so a run cut short keeps what it measured.
`--budget` seconds: compile-heavy contenders are skipped once the run has used that much.
"""

from __future__ import annotations

import argparse
import json
import logging
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


def section(spec_path: str, device: torch.device, dtype: torch.dtype, batches: list[int], rounds: int,
            budget: float, tmp: Path, log: Callable[[str], None]) -> dict[str, object]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out: dict[str, object] = {"dtype": str(dtype).removeprefix("torch."), "errors": {}, "results": {}}
    errors: dict[str, str] = out["errors"]  # type: ignore[assignment]

    torch.manual_seed(0)
    ours = build_model(spec_path, device=device, dtype=dtype).eval()
    theirs = to_diffusers(ours).to(device=device, dtype=dtype).eval()
    spec = ours.spec
    call = _diffusers_call(spec, spec.classes is not None)
    probe = sample_inputs(spec, batch=batches[0], device=device, dtype=dtype)
    with torch.inference_mode():
        out["max_abs_diff_vs_diffusers"] = (ours(*probe.args()) - call(theirs, *probe.present())).abs().max().item()

    # per-input-set runners: name -> (setup() -> (inputs -> output))
    runners: dict[str, Callable[[object], object]] = {}

    def add(name: str, setup: Callable[[], Callable[[object], object]], costly: bool = False) -> None:
        if costly and _elapsed() > budget:
            errors[name] = f"skipped: the run had used {_elapsed():.0f} s of its {budget:.0f} s budget"
            log(f"  {name}: {errors[name]}")
            return
        t0 = time.perf_counter()
        try:
            runners[name] = setup()
            log(f"  {name}: ready in {time.perf_counter() - t0:.1f} s")
        except Exception as exc:  # a contender that fails is reported, the rest still run
            errors[name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            log(f"  {name}: FAILED {errors[name]}")
            traceback.print_exc()

    def export_runner(fmt: str, freeze: bool = False) -> Callable[[], Callable[[object], object]]:
        def setup() -> Callable[[object], object]:
            path = tmp / f"{out['dtype']}-{fmt}{'-frozen' if freeze else ''}{FORMATS[fmt].suffix}"
            report = export(ours, path, format=fmt, freeze=freeze)
            log(f"    {fmt}{' frozen' if freeze else ''}: checked against eager, max |diff| {report.max_abs_diff:.3g}")
            run = FORMATS[fmt].load(path, device)
            return lambda inp: run(inp)
        return setup

    add("unetdsl eager", lambda: lambda inp: ours(*inp.args()))
    add("diffusers eager", lambda: lambda inp: call(theirs, *inp.present()))

    def all_cl() -> Callable[[object], object]:
        torch.manual_seed(0)
        m = _all_channels_last(build_model(spec_path, device=device, dtype=dtype).eval())
        m.load_state_dict(ours.state_dict())
        return lambda inp: m(*inp.args())
    add("unetdsl eager all-cl", all_cl)

    def contiguous() -> Callable[[object], object]:
        m = build_model(spec_path, device=device, dtype=dtype, memory_format="contiguous").eval()
        m.load_state_dict(ours.state_dict())
        return lambda inp: m(*inp.args())
    add("unetdsl eager contiguous", contiguous)

    def diffusers_cl() -> Callable[[object], object]:
        m = to_diffusers(ours).to(device=device, dtype=dtype, memory_format=torch.channels_last).eval()
        def run(inp: object) -> object:
            x, *rest = inp.present()  # type: ignore[attr-defined]
            return call(m, x.contiguous(memory_format=torch.channels_last), *rest)
        return run
    add("diffusers eager channels-last", diffusers_cl)

    add("unetdsl torchscript", export_runner("torchscript"))
    add("unetdsl torchscript frozen", export_runner("torchscript", freeze=True))

    def traced() -> Callable[[object], object]:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            tr = torch.jit.trace(_Traceable(theirs, call), probe.present(), check_trace=False)
        return lambda inp: tr(*inp.present())  # type: ignore[attr-defined]
    add("diffusers traced", traced)
    add("unetdsl export", export_runner("export"))
    add("unetdsl aoti", export_runner("aoti"), costly=True)

    def compiled(model: torch.nn.Module,
                 fn: Callable[[torch.nn.Module, object], object]) -> Callable[[], Callable[[object], object]]:
        def setup() -> Callable[[object], object]:
            c = torch.compile(model)
            with torch.inference_mode():
                for b in batches:  # compile for every batch timed (dynamic after the second shape)
                    fn(c, sample_inputs(spec, batch=b, device=device, dtype=dtype))
            return lambda inp: fn(c, inp)
        return setup
    add("diffusers compiled", compiled(theirs, lambda m, inp: call(m, *inp.present())), costly=True)  # type: ignore[attr-defined]
    add("unetdsl compiled", compiled(ours, lambda m, inp: m(*inp.args())), costly=True)  # type: ignore[attr-defined]

    try:
        import onnxruntime as ort
        providers = ort.get_available_providers()
    except ImportError:
        providers = []
    if "CUDAExecutionProvider" in providers:
        add("unetdsl onnx (ort cuda)", export_runner("onnx"), costly=True)
    else:
        errors["unetdsl onnx (ort cuda)"] = f"not run: onnxruntime has no CUDA provider here (providers: {providers})"
        log(f"  {errors['unetdsl onnx (ort cuda)']}")

    results: dict[str, object] = out["results"]  # type: ignore[assignment]
    for batch in batches:
        inp = sample_inputs(spec, batch=batch, device=device, dtype=dtype)
        times: dict[str, list[float]] = {}
        with torch.inference_mode():
            for name, fn in list(runners.items()):
                try:
                    for _ in range(5):
                        fn(inp)
                    sync()
                    times[name] = []
                except Exception as exc:
                    errors[f"{name} @ batch {batch}"] = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
                    log(f"  {name} @ batch {batch}: FAILED {errors[f'{name} @ batch {batch}']}")
            order = list(times)
            for r in range(rounds):
                for name in order if r % 2 == 0 else order[::-1]:
                    sync()
                    t0 = time.perf_counter()
                    runners[name](inp)
                    sync()
                    times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        row: dict[str, object] = {"ms": med}
        for peer in ("diffusers eager", "diffusers compiled"):
            if peer in times:
                row[f"/ {peer}"] = {k: paired(v, times[peer]) for k, v in times.items() if k.startswith("unetdsl")}
        if "diffusers traced" in times:
            row["/ diffusers traced"] = {k: paired(times[k], times["diffusers traced"])
                                         for k in ("unetdsl torchscript", "unetdsl torchscript frozen", "unetdsl aoti")
                                         if k in times}
        results[f"batch {batch}"] = row
        log(f"  batch {batch}, {list(inp.x.shape)}:")
        for k, v in med.items():
            log(f"    {k:32} {v:8.3f} ms")
        for peer_key in [k for k in row if k.startswith("/")]:
            for k, v in row[peer_key].items():  # type: ignore[attr-defined]
                log(f"    ratio {k} {peer_key}: {v}")
    runners.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="specs/ddpm-cifar10.yaml")
    ap.add_argument("--dtypes", default="float16,bfloat16")
    ap.add_argument("--batches", default="8,64")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--budget", type=float, default=420.0, help="seconds after which compiles are skipped")
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
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.dtypes.split(","):
            log(f"{name} ({_elapsed():.0f} s into the run):")
            try:
                done = section(args.spec, device, getattr(torch, name), batches, args.rounds, args.budget, Path(tmp), log)
                header["sections"].append(done)  # type: ignore[attr-defined]
            except Exception:
                traceback.print_exc()
                header["sections"].append({"dtype": name, "failed": traceback.format_exc()[-2000:]})  # type: ignore[attr-defined]
            Path(args.out).write_text(json.dumps(header, indent=1))
            Path(args.out).with_suffix(".log").write_text("\n".join(lines) + "\n")
    log(f"done in {_elapsed():.0f} s")
    Path(args.out).with_suffix(".log").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
