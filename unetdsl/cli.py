"""The `unetdsl` command line.

Exit status: 0 success, 1 invalid spec (or a failed check), 2 usage error, 3 internal error.
Results go to stdout; problems, warnings and progress to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from .errors import InternalError, Problem, SpecError, UnetdslError
from .frontend import compose, resolve_spec
from .interop.diffusers_condition import TIME_IDS
from .version import __version__

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3

Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = fn
        return fn

    return register


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def spec_inputs(files: Sequence[str]) -> dict[str, str]:
    """The files a spec was read from, as check_output's inputs: the spec, then each it extends."""
    return {("spec" if i == 0 else f"spec it extends ({i} deep)"): f for i, f in enumerate(files)}


def _warn(warnings: Sequence[Problem]) -> None:
    for w in warnings:
        _err("warning: " + w.render())


@command("validate")
def cmd_validate(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for path in args.specs:
        try:
            resolved, warnings = resolve_spec(Path(path), args.set, root=args.root)  # a CLI argument is always a file
        except SpecError as exc:
            _err(exc.render())
            status = EXIT_INVALID
            continue
        _warn(warnings)
        print(f"ok  {path}  {resolved.name}  {resolved.spec_id}")
    return status


@command("resolve")
def cmd_resolve(args: argparse.Namespace) -> int:
    resolved, warnings = resolve_spec(Path(args.spec), args.set, root=args.root)
    _warn(warnings)
    if args.json:
        print(json.dumps(resolved.view(), indent=2))
    else:
        from .schema import schema_line

        print(schema_line())
        print(f"# resolved by unetdsl {__version__}; spec id {resolved.spec_id}")
        print(yaml.safe_dump(resolved.view(), sort_keys=False, default_flow_style=None,
                             width=100), end="")
    return EXIT_OK


@command("build")
def cmd_build(args: argparse.Namespace) -> int:
    # options that would do nothing with this format are refused, not ignored (before any work)
    if args.freeze and args.format != "torchscript":
        _err(f"error: --freeze applies to --format torchscript only, not {args.format}"
             + (" (an aoti package is always frozen)" if args.format == "aoti" else ""))
        return EXIT_USAGE
    if args.no_prepack and not (args.freeze or args.format == "aoti"):
        _err("error: --no-prepack applies to --freeze (TorchScript) and --format aoti only: nothing else packs weights")
        return EXIT_USAGE
    import torch

    from .api import build_model
    from .artifacts import DTYPES, ExportError, check_request, default_path, export
    from .estimate import estimate
    from .fsutil import OutputError, check_output
    from .nn.layers import prepacking_off
    from .resources import ResourceError, check_build, check_structure
    from .sample import first_nonfinite, sample_inputs
    from .summary import render
    from .weights import WeightsError

    whole, warnings, read = compose(Path(args.spec), args.set, root=args.root)
    _warn(warnings)
    if args.part and whole.model != "autoencoder":
        _err(f"error: --part {args.part}: only an autoencoder has parts; {args.spec} is a {whole.model}")
        return EXIT_USAGE
    # what is shipped: the model, or one half of an autoencoder as a model of its own
    resolved = whole.part(args.part) if args.part else whole
    try:  # before the build: a long build must not end in a write that cannot or must not happen
        target = check_output(args.output or default_path(resolved, args.format),
                              inputs={**spec_inputs(read), "weights file": args.weights})
    except OutputError as exc:
        _err(f"error: {exc}")
        return EXIT_INVALID
    if args.device == "cuda" and not torch.cuda.is_available():
        _err("error: --device cuda: no CUDA device is available on this machine")
        return EXIT_USAGE
    try:  # the format's own refusals (output name, sizes, dtype on this device), also before the build
        check_request(resolved, args.format, target, device=torch.device(args.device), dtype=DTYPES[args.dtype],
                      freeze=args.freeze, prepack=not args.no_prepack, residuals=args.residuals)
    except ExportError as exc:
        _err(f"error: {exc}")
        return EXIT_INVALID
    if not args.no_resource_check:  # layers past the time bound: refused before the estimator spends minutes
        try:
            check_structure(resolved, format=args.format, device=torch.device(args.device))
        except ResourceError as exc:
            _err(f"error: {exc}")
            return EXIT_INVALID
    # the estimate of the check forward (batch 2, sample size) is both the guard and the summary
    est = estimate(resolved, batch=2, dtype=DTYPES[args.dtype], training=False)
    if not args.no_resource_check:
        try:
            for notice in check_build(est, device=torch.device(args.device), output_dir=target.parent,
                                      format=args.format):
                _err(notice)
        except ResourceError as exc:
            _err(f"error: {exc}")
            return EXIT_INVALID
    if args.weights:  # the whole model's weights, whichever part is shipped: read in place, no random init
        try:
            model = build_model(whole, memory_format=args.memory_format, weights=args.weights, check_resources=False)
        except WeightsError as exc:
            _err(f"error: {exc}")
            return EXIT_INVALID
        loaded = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        print(f"weights: {args.weights} ({str(loaded).removeprefix('torch.')})")
    else:
        model = build_model(whole, memory_format=args.memory_format, seed=args.seed, check_resources=False)
    model = model.eval()
    if args.part:
        model = model.get_submodule(args.part)  # its `.spec` is the part's
    model = model.to(device=args.device, dtype=DTYPES[args.dtype])
    inputs = sample_inputs(resolved, batch=2, device=args.device, dtype=DTYPES[args.dtype])
    with torch.inference_mode(), prepacking_off(model):  # one forward: packed weights would only cost memory
        out = model(*inputs.args())
    outs = list(out) if isinstance(out, (list, tuple)) else [out]  # a ControlNet's residuals
    print(render(resolved, est, device=args.device))
    shown = f"output {list(out.shape)}" if len(outs) == 1 else f"{len(outs)} residuals {[list(o.shape) for o in outs]}"
    print(f"sample: input {list(inputs.x.shape)} -> {shown}")
    if not all(torch.isfinite(o).all() for o in outs):
        where = first_nonfinite(model, inputs)
        _err("error: the sample forward produced NaN or Inf" + (f", first in {where}" if where else "")
             + ("" if args.weights else " (with random weights: a spec whose numbers overflow; please report it)"))
        return EXIT_INVALID
    if not args.weights and not any(o.any() for o in outs):
        why = "a new ControlNet's zero convs" if resolved.controlnet is not None else "init.zero_out"
        _err(f"warning: the randomly initialised model outputs zeros ({why}), so the export check compares "
             "zeros; pass --weights to check the artifact on real numbers")
    try:
        report = export(model, target, format=args.format, freeze=args.freeze, prepack=not args.no_prepack,
                        residuals=args.residuals)
    except ExportError as exc:
        _err(f"error: {exc}")
        return EXIT_INVALID
    checks = "; ".join(f"{shape}: max |diff| {diff:.2e}" for shape, diff in report.checks)
    print(f"wrote {report.path} ({args.format}); reloaded and checked against eager: {checks}")
    return EXIT_OK


@command("summary")
def cmd_summary(args: argparse.Namespace) -> int:
    from .artifacts import DTYPES
    from .estimate import estimate
    from .summary import render

    resolved, warnings = resolve_spec(Path(args.spec), args.set, root=args.root)
    _warn(warnings)
    size = args.size or list(resolved.sample_size)
    if len(size) == 1:
        size = size * resolved.dims
    factor = resolved.downsampling_factor
    if len(size) != resolved.dims or any(s % factor for s in size):
        _err(f"error: --size: this model is {resolved.dims}D and its sizes must be multiples of {factor} "
             f"(the total downsampling); got {','.join(map(str, args.size))}")
        return EXIT_USAGE
    est = estimate(resolved, batch=args.batch, size=size, dtype=DTYPES[args.dtype])
    if args.json:
        data = {"name": resolved.name, "spec_id": resolved.spec_id, "model": resolved.model, "dims": resolved.dims,
                **est.as_data()}
        print(json.dumps(data, indent=2))
    else:
        print(render(resolved, est))
    return EXIT_OK


@command("diagram")
def cmd_diagram(args: argparse.Namespace) -> int:
    from .diagram import render_svg
    from .estimate import estimate
    from .fsutil import OutputError, check_output, write_text_atomic

    resolved, warnings, read = compose(Path(args.spec), args.set, root=args.root)
    _warn(warnings)
    try:
        target = check_output(args.output, inputs=spec_inputs(read))
    except OutputError as exc:
        _err(f"error: {exc}")
        return EXIT_INVALID
    write_text_atomic(target, render_svg(resolved, estimate(resolved, training=False)))
    print(f"wrote {target} (SVG)")
    return EXIT_OK


@command("inspect")
def cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect import InspectError, read_metadata
    from .provenance import ID_KEY, SPEC_KEY, StoredSpecError, resolved_from_stored

    try:
        meta = read_metadata(args.file)
    except InspectError as exc:
        _err(f"error: {exc}")
        return EXIT_INVALID
    spec = meta.pop(SPEC_KEY, None)
    for key, value in sorted(meta.items()):
        print(f"{_printable(key.removeprefix('unetdsl/'))}: {_printable(value)}")
    if spec is not None:  # shown as the language view of the resolved spec, once it is known to be one
        try:
            data = resolved_from_stored(spec, meta.get(ID_KEY)).view()
        except StoredSpecError as exc:
            _err(f"error: {args.file}: {exc}")
            return EXIT_INVALID
        print("spec:")
        print(_printable(yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100), keep_newlines=True),
              end="")
    return EXIT_OK


def _printable(text: str, *, keep_newlines: bool = False, limit: int = 100_000) -> str:
    """Text from a file, made safe for a terminal: control characters (escape sequences that
    would recolour, retitle or rewrite the screen) shown as \\xNN, cut at `limit` characters."""
    out = "".join(ch if ch.isprintable() or (keep_newlines and ch == "\n") else f"\\x{ord(ch):02x}" if ord(ch) < 256
                  else f"\\u{ord(ch):04x}" for ch in text[:limit])
    return out + (f"... ({len(text)} characters)" if len(text) > limit else "")


@command("convert")
def cmd_convert(args: argparse.Namespace) -> int:
    from .fsutil import OutputError
    from .interop.diffusers import convert_pretrained
    from .weights import WeightsError

    try:
        resolved = convert_pretrained(args.folder, args.output, args.weights, name=args.name, time_ids=args.time_ids)
    except (WeightsError, OutputError) as exc:
        _err(f"error: {exc}")
        return EXIT_INVALID
    print(f"wrote {args.output} ({resolved.name}, {resolved.spec_id})")
    if args.weights:
        print(f"wrote {args.weights} (every tensor mapped; unetdsl.load or build --weights reads it)")
    return EXIT_OK


@command("schema")
def cmd_schema(args: argparse.Namespace) -> int:
    from .schema import schema_text

    sys.stdout.write(schema_text())
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unetdsl",
        description="Build diffusion U-Nets from validated YAML specs.",
        epilog="Exit status: 0 ok, 1 invalid spec or failed check, 2 usage error, 3 internal error (a bug).",
    )
    parser.add_argument("--version", action="version", version=f"unetdsl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def with_set(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", metavar="PATH=VALUE", action="append", default=[],
                       help="override a setting, e.g. --set encoder.levels.1.channels=192 (VALUE is YAML); repeatable")
        p.add_argument("--root", metavar="DIR", default=None,
                       help="the folder tree `extends` may read from (default: the spec's own folder)")

    p = sub.add_parser("validate", help="check specs; print each one's spec id",
                       description="Check every spec completely (types, bounds, cross-field rules) without torch.")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="spec files (YAML)")
    with_set(p)

    p = sub.add_parser("resolve", help="print the fully explicit spec",
                       description="Print the spec with every setting written at every place (defaults, "
                       "inheritance and the mirrored decoder expanded): the language view of the resolved spec, "
                       "which resolves back to it. The resolved spec's canonical JSON hashes to the spec id.")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    with_set(p)

    p = sub.add_parser("build", help="validate, build, check and export a model",
                       description="Validate the spec, build the model, run the sample input through it, print a "
                       "summary, write the TorchScript file, reload it and check it against the eager model.")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file (default: the spec's name + .pt/.pt2/.onnx/.aoti.pt2)")
    p.add_argument("--format", choices=["torchscript", "export", "onnx", "aoti"], default="torchscript",
                   help="torchscript (.pt, default), export (torch.export .pt2), onnx, or aoti (an AOTInductor "
                        "package, .aoti.pt2: compiled for this machine's CPU or GPU; minutes to compile)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--weights", metavar="FILE.safetensors", help="trained weights to load (strict; never a pickle)")
    p.add_argument("--freeze", action="store_true",
                   help="torch.jit.freeze the TorchScript module (on the CPU its convolution weights are also "
                        "packed for oneDNN when the file loads: a CPU-only file, as fast as eager)")
    p.add_argument("--residuals", action="store_true",
                   help="export, onnx, aoti: the U-Net's program also takes a ControlNet's residuals (one per skip, "
                   "then the middle's; a TorchScript U-Net always takes them)")
    p.add_argument("--no-prepack", action="store_true",
                   help="with --freeze on the CPU: keep the plain frozen graph (a file that loads on any device); "
                        "with --format aoti: compile without packed convolution weights")
    p.add_argument("--memory-format", choices=["auto", "channels_last", "contiguous"], default="auto",
                   help="layout the 2D/3D body runs in (default auto: channels_last on the CPU, for oneDNN's "
                        "faster convolutions; contiguous on a GPU)")
    p.add_argument("--seed", type=_seed, default=0, help="seed for the random initial weights (default 0)")
    p.add_argument("--no-resource-check", action="store_true",
                   help="build even when the estimated memory, disk or time exceeds what this machine has")
    p.add_argument("--part", choices=["encoder", "decoder"],
                   help="an autoencoder's encoder (x -> the posterior's moments) or decoder (latent -> x) alone, "
                   "as deployments ship it (the output is named after the part)")
    with_set(p)

    p = sub.add_parser("summary", help="parameters, FLOPs, memory and receptive field, without building",
                       description="Estimate what the spec costs from the spec alone (the model runs on fake "
                       "tensors: nothing is allocated): per part and in total, parameters, forward FLOPs, "
                       "activation memory for inference and for a training step (with and without activation "
                       "checkpointing), weights + AdamW state, and the receptive field at the bottleneck.")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--batch", type=_count("--batch"), default=1, help="batch size (default 1)")
    p.add_argument("--size", type=_sizes, help="spatial size: one number for every side, or one per dimension "
                   "(e.g. 64 or 64,32); default the spec's sample_size")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.add_argument("--json", action="store_true", help="print one JSON object (documented in docs/analysis.md)")
    with_set(p)

    p = sub.add_parser("diagram", help="draw the architecture as an SVG picture",
                       description="Draw the U: encoder levels descending, the middle, decoder levels ascending, "
                       "skip connections across, each part labelled with resolution, channels, blocks, attention "
                       "and parameters; resampling and time/class conditioning marked. Nothing is allocated.")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("-o", "--output", metavar="OUT.svg", required=True)
    with_set(p)

    p = sub.add_parser("inspect", help="print the spec and provenance stored in an exported file",
                       description="Read the resolved spec, spec id and versions stored in a .pt, .pt2, .aoti.pt2, "
                       ".onnx or .safetensors file written by unetdsl, without running any code from it; the "
                       "stored spec is checked (every rule, its id) and shown in the language.")
    p.add_argument("file", metavar="FILE")

    p = sub.add_parser("convert", help="turn a diffusers folder (UNet2DModel, UNet2DConditionModel, AutoencoderKL, "
                       "ControlNetModel) into a spec (+ weights)",
                       description="Read a local diffusers save_pretrained folder (config.json and "
                       "diffusion_pytorch_model.safetensors; no network) of a UNet2DModel, UNet2DConditionModel, "
                       "AutoencoderKL or ControlNetModel, recognised by its _class_name, and write a validated unetdsl spec, and "
                       "optionally the weights mapped to unetdsl's names. Config keys unetdsl cannot represent are "
                       "refused by name, never ignored.")
    p.add_argument("source", choices=["diffusers"], help="the library the folder comes from")
    p.add_argument("folder", metavar="DIR")
    p.add_argument("-o", "--output", metavar="SPEC.yaml", required=True)
    p.add_argument("--weights", metavar="OUT.safetensors", help="also write the mapped weights")
    p.add_argument("--name", help="the spec's name (default: from the folder's config)")
    p.add_argument("--time-ids", type=_count("--time-ids"), default=TIME_IDS, metavar="N",
                   help="SDXL-style models (addition_embed_type text_time): how many time_ids the model takes, "
                   "which the config does not say (6 for SDXL base, 5 for the refiner; default 6)")

    sub.add_parser("schema", help="print the JSON Schema of the language",
                   description="Print the JSON Schema (draft 2020-12) that editors use to check specs.")
    return parser


_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EPIPE, errno.EDQUOT, errno.EBADF}


def _seed(text: str) -> int:
    """argparse type for --seed: torch seeds are 64-bit; the message never echoes the value."""
    if not (0 < len(text) <= 20 and text.isascii() and text.isdigit()) or int(text) >= 2**64:
        raise argparse.ArgumentTypeError("expected a whole number from 0 to 2^64-1")
    return int(text)


# batch and sizes an estimate accepts: far past any machine, well inside int64 element counts
MAX_ESTIMATE_EXTENT = 2**20


def _count(flag: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not (0 < len(text) <= 8 and text.isascii() and text.isdigit()) or not 0 < int(text) <= MAX_ESTIMATE_EXTENT:
            raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {MAX_ESTIMATE_EXTENT:,}")
        return int(text)
    parse.__name__ = flag  # argparse names the type in its message
    return parse


def _sizes(text: str) -> list[int]:
    return [_count("--size")(part.strip()) for part in text.split(",")]


def _silence_stdout() -> None:
    """After stdout failed (reader gone, disk full), send what is left to /dev/null so that the
    interpreter's final flush does not fail again with a trace."""
    import os

    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a full disk or a closed pipe shows here, not in the interpreter's exit
        return code
    except SpecError as exc:
        _err(exc.render())
        return EXIT_INVALID
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # `unetdsl ... | head`: the reader left; not an error of ours
        _silence_stdout()
        return EXIT_OK
    except OSError as exc:  # the machine said no (disk full, permission, device): not a bug of ours
        where = f" ({exc.filename})" if exc.filename else " (standard output)" if exc.errno in _OUTPUT_ERRNOS else ""
        _silence_stdout()
        _err(f"error: {exc.strerror or exc}{where}")
        return EXIT_INVALID
    except InternalError as exc:
        _err(f"internal error (a bug in unetdsl {__version__}, please report it): {exc}")
        return EXIT_INTERNAL
    except UnetdslError as exc:  # a refusal of ours a command did not word itself (e.g. an estimate too large)
        _err(f"error: {exc}")
        return EXIT_INVALID
    except Exception as exc:
        import traceback

        _err(f"internal error (a bug in unetdsl {__version__}, please report it with this trace):")
        traceback.print_exc()
        _err(f"{type(exc).__name__}: {exc}")
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
