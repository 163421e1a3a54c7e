"""Export a built model and prove the written file computes what the eager model computes.

    export(model, "m.pt",  format="torchscript")   # torch.jit.script (optionally frozen)
    export(model, "m.pt2", format="export")        # torch.export, dynamic batch and spatial sizes
    export(model, "m.onnx", format="onnx")         # ONNX (dynamo exporter), checked in ONNX Runtime
    export(model, "m.aoti.pt2", format="aoti")     # AOTInductor package: compiled C++, no Python to run it

Each file is written under a temporary name next to the target, loaded back the way a
deployment loads it (torch.jit.load / torch.export.load / onnxruntime / aoti_load_package), compared with the eager
model on the sample input *and* on a second batch size and spatial size, and only then renamed
into place. A failed check or an interrupted write leaves the previous file intact. Every file
carries the resolved spec, spec id, unetdsl version, dtype and device it was made for.
"""

from __future__ import annotations

import inspect
import os
import shutil
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import aoti_packing, torchscript
from .errors import UnetdslError
from .fsutil import atomic_path, check_output, remove_stale_temporaries
from .nn.layers import prepacking_off
from .provenance import (
    AOTI_KEY,
    DEVICE_KEY,
    DTYPE_KEY,
    FORMAT_KEY,
    FORWARD_KEY,
    ID_KEY,
    INPUTS_KEY,
    SPEC_KEY,
    TORCH_VERSION_KEY,
    TORCHSCRIPT_KEY,
    VERSION_KEY,
)
from .sample import SAMPLE_TOKENS, SampleInputs, sample_inputs
from .spec.resolved import ResolvedSpec
from .torchscript_packing import pack_convolutions, packable
from .version import __version__


class ExportError(UnetdslError):
    """The artifact could not be made (a missing optional dependency, an unsupported request)."""


class ExportCheckError(ExportError):
    """The written artifact does not compute what the eager model computes."""


# max |diff| allowed between the reloaded artifact and the eager model, by dtype: atol + rtol * |eager|
TOLERANCE: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-4, 1e-4),
    torch.float16: (2e-2, 2e-2),
    torch.bfloat16: (1e-1, 5e-2),
}
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ExportReport:
    path: Path
    format: str
    checks: list[tuple[list[int], float]] = field(default_factory=list)  # (input shape, max |diff|)

    @property
    def max_abs_diff(self) -> float:
        return max(d for _, d in self.checks)


def metadata(spec: ResolvedSpec, dtype: torch.dtype, device: torch.device, fmt: str,
             residuals: bool = False) -> dict[str, str]:
    """Provenance stored inside every exported file."""
    return {
        SPEC_KEY: spec.stored_json(),
        ID_KEY: spec.spec_id,
        VERSION_KEY: __version__,
        TORCH_VERSION_KEY: torch.__version__,
        FORMAT_KEY: fmt,
        DTYPE_KEY: str(dtype).removeprefix("torch."),
        DEVICE_KEY: device.type,
        FORWARD_KEY: f"forward({', '.join(input_names(spec, residuals))})",
        INPUTS_KEY: input_signature(spec, dtype, fmt, residuals),
    }


def input_signature(spec: ResolvedSpec, dtype: torch.dtype, fmt: str, residuals: bool = False) -> str:
    """The dtype and shape each input of the artifact takes. TorchScript runs the model's Python-level
    code, so `t` may be any integer or float dtype there; torch.export and ONNX fix each input's
    dtype at export: `t` is int64 timesteps for sinusoidal and learned embeddings (what diffusers'
    schedulers hand out) and float32 noise levels for fourier ones and preconditioned models (cast before
    calling)."""
    spatial = ", ".join(["H", "W", "D"][: spec.dims] if spec.dims > 1 else ["L"])
    x = f"x: {str(dtype).removeprefix('torch.')} (B, {spec.in_channels}, {spatial})"
    if spec.time is None:
        return x
    t_dtype = "float32" if spec.time.embedding == "fourier" or spec.preconditioning is not None else "int64"
    t = "t: any integer or float dtype, () or (B,)" if fmt == "torchscript" else f"t: {t_dtype} (B,)"
    if spec.preconditioning is not None:  # a denoiser's t ("; t: float32" is what the C++ runner reads)
        t += ": the noise level sigma"
    y = "; y: int64 (B,)" if spec.classes else ""
    shown = str(dtype).removeprefix("torch.")
    last = ""
    if spec.controlnet is not None:
        last = f"; hint: {shown} (B, {spec.controlnet.hint_channels}, {spatial} x {spec.controlnet.hint_factor})"
    elif residuals:
        last = "; residuals: [" + ", ".join(f"{shown} (B, {c}, {spatial}" + (f" / {k})" if k > 1 else ")")
                                            for c, k in zip(spec.residual_channels, spec.residual_scales,
                                                            strict=True)) + "]"
    return f"{x}; {t}{y}{_context_signature(spec, dtype)}{_cond_signature(spec, dtype)}{last}"


def _cond_signature(spec: ResolvedSpec, dtype: torch.dtype) -> str:
    if not spec.condition_inputs:
        return ""
    shown = str(dtype).removeprefix("torch.")
    return "; cond: {" + ", ".join(f"{i.name}: {shown} (B, {i.width})" for i in spec.condition_inputs) + "}"


def _context_signature(spec: ResolvedSpec, dtype: torch.dtype) -> str:
    if spec.context_dim is None:
        return ""
    width = spec.context_input_dim or spec.context_dim
    return f"; context: {str(dtype).removeprefix('torch.')} (B, T, {width}), any token count T"


def input_names(spec: ResolvedSpec, residuals: bool = False) -> list[str]:
    """The inputs the model has, in forward's order: x, then t, y, context and cond (a mapping of
    the named conditions) where it has them; a ControlNet's hint; a controlled U-Net's residuals
    (a list) where `residuals`."""
    present = {"x": True, "t": spec.time is not None, "y": spec.classes is not None,
               "context": spec.context_dim is not None, "cond": bool(spec.condition_inputs),
               "hint": spec.controlnet is not None, "residuals": residuals}
    return [name for name, has in present.items() if has]


def flat_input_names(spec: ResolvedSpec, residuals: bool = False) -> list[str]:
    """The tensors an artifact takes one by one (ONNX's input names, the C++ runner's order): the
    inputs, with `cond` replaced by each named condition in the spec's order and `residuals` by
    residual_0, residual_1, ... (the last the middle's)."""
    flat = {"cond": [i.name for i in spec.condition_inputs],
            "residuals": [f"residual_{i}" for i in range(len(spec.residual_channels))]}
    return [f for n in input_names(spec, residuals) for f in flat.get(n, [n])]


def output_names(spec: ResolvedSpec) -> list[str]:
    """What an artifact returns: `out`, or a ControlNet's residuals `residual_0` ... (the last the middle's)."""
    return [f"residual_{i}" for i in range(len(spec.residual_channels))] if spec.controlnet is not None else ["out"]


def call_args(inputs: SampleInputs) -> tuple[Any, ...]:
    """The positional inputs an artifact takes: x, then t, y, context and cond where the model has them."""
    return inputs.present()


def flat_args(inputs: SampleInputs) -> tuple[torch.Tensor, ...]:
    """call_args with `cond` replaced by its tensors, in its (the spec's) order: flat_input_names'."""
    return inputs.tensors()


def check_inputs(spec: ResolvedSpec, device: torch.device, dtype: torch.dtype,
                 residuals: bool = False) -> list[SampleInputs]:
    """The sample input (batch 2, sample size) and a second batch size and spatial size: another
    multiple of the downsampling factor, leaving at least 2 positions at the deepest level."""
    factor = spec.downsampling_factor
    base = spec.sample_size
    k = max(2, spec.smallest_multiple)  # (reflect-padded resampling needs more positions at the deepest part)
    second = [factor * k if s != factor * k else factor * (k + 1) for s in base]
    return [
        sample_inputs(spec, batch=2, device=device, dtype=dtype, seed=0, residuals=residuals),
        sample_inputs(spec, batch=3, size=second, device=device, dtype=dtype, seed=1, tokens=SAMPLE_TOKENS - 3,
                      residuals=residuals),
    ]


Runner = Callable[[SampleInputs], Any]  # a tensor, or a ControlNet's list of residuals


# --- formats: how each is written and how a deployment loads it back --------------------------
def _write_torchscript(model: nn.Module, inputs: SampleInputs, path: Path, meta: dict[str, str],
                       options: dict[str, Any]) -> None:
    scripted = torchscript.script(model)
    how = "scripted (weights are parameters: the file moves to any device)"
    if options.get("freeze"):
        scripted = torchscript.freeze(scripted)
        how = "frozen (weights are constants of the graph)"
        param = next(model.parameters())
        if options.get("prepack", True) and packable(param.device, param.dtype):
            packed = pack_convolutions(scripted)  # torchscript_packing: packed again by every load
            if packed:
                how = f"frozen; {packed} convolution weights packed for oneDNN when loaded (a CPU-only file)"
    torchscript.save(scripted, path, {**meta, TORCHSCRIPT_KEY: how})


def _load_torchscript(path: Path, device: torch.device) -> Runner:
    module = torchscript.load(path, map_location=device)
    return lambda inp: module(*inp.args())


def _dynamic_shapes(spec: ResolvedSpec, args: tuple[Any, ...], residuals: bool = False) -> tuple[Any, ...]:
    """Batch free; every spatial size a free multiple of the downsampling factor, at least twice
    the factor (torch.export specialises a size of 1, so the deepest level keeps >= 2 positions);
    a ControlNet's hint that size times its hint factor."""
    from torch.export import Dim

    from .spec.models import MAX_SAMPLE_SIZE

    batch = Dim("batch", min=1, max=4096)
    factor = spec.downsampling_factor
    # up to the language's cap, and never below the spec's own sample size
    least = max(2, spec.smallest_multiple)  # (reflect-padded resampling: pad < size at every resampling)
    free = [Dim(f"size{i}", min=least, max=max(MAX_SAMPLE_SIZE // factor, least)) for i in range(spec.dims)]

    def spatial(times: int) -> dict[int, Any]:
        return {0: batch, **{2 + i: f * times if times > 1 else f for i, f in enumerate(free)}}

    by_name: dict[str, Any] = {"x": spatial(factor), "context": {0: batch, 1: Dim("tokens", min=2, max=4096)},
                               "cond": {i.name: {0: batch} for i in spec.condition_inputs}}
    if spec.controlnet is not None:
        by_name["hint"] = spatial(factor * spec.controlnet.hint_factor)
    by_name["residuals"] = [spatial(factor // k) for k in spec.residual_scales]  # (each skip's own size)
    return tuple(by_name.get(name, {0: batch}) for name in input_names(spec, residuals))


def _traceable(model: nn.Module, spec: ResolvedSpec, residuals: bool = False) -> nn.Module:
    """A forward taking exactly the inputs the model has, by name: torch.export and ONNX trace
    tensors, not Optionals, and read the parameter names (ONNX's input names, dynamic shapes)."""
    return _Traceable(model, input_names(spec, residuals)).eval()


class _Traceable(nn.Module):
    """forward(<the model's inputs, in input_names' order>) -> model(x, t, y, context, cond[, hint])
    with None for the inputs the model does not have. The signature is stated (`__signature__`) rather
    than *args: torch.export binds the example inputs and the dynamic shapes by parameter name."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model = model
        self.names = tuple(names)
        call = self._call
        signature = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in self.names])

        def forward(*args: Any, **kwargs: Any) -> Any:
            return call(*signature.bind(*args, **kwargs).args)  # (by position or name, as the signature says)

        forward.__signature__ = signature  # type: ignore[attr-defined]
        self.forward = forward

    def _call(self, *args: Any) -> Any:
        given = dict(zip(self.names, args, strict=True))
        last = {n: given[n] for n in ("hint", "residuals") if n in given}
        return self.model(*(given.get(n) for n in ("x", "t", "y", "context", "cond")), **last)


def _trace_inputs(spec: ResolvedSpec, inputs: SampleInputs) -> SampleInputs:
    # torch.export specialises sizes of 0/1: trace where every free factor is at least 2
    factor = spec.downsampling_factor
    least = max(2, spec.smallest_multiple)
    if all(s // factor >= least for s in inputs.x.shape[2:]):
        return inputs
    return sample_inputs(spec, batch=2, size=[least * factor] * spec.dims, device=inputs.x.device, dtype=inputs.x.dtype,
                         residuals=inputs.residuals is not None)


def _write_export(model: nn.Module, inputs: SampleInputs, path: Path, meta: dict[str, str],
                  options: dict[str, Any]) -> None:
    spec: ResolvedSpec = model.spec  # type: ignore[assignment]
    args = call_args(_trace_inputs(spec, inputs))
    res = inputs.residuals is not None
    program = torch.export.export(_traceable(model, spec, res), args, dynamic_shapes=_dynamic_shapes(spec, args, res))
    torch.export.save(program, str(path), extra_files=meta)


def _load_export(path: Path, device: torch.device) -> Runner:
    module = torch.export.load(str(path)).module()
    return lambda inp: module(*call_args(inp))


def _write_aoti(model: nn.Module, inputs: SampleInputs, path: Path, meta: dict[str, str],
                options: dict[str, Any]) -> None:
    """torch.export (dynamic sizes, as the export format), then AOTInductor: the graph compiled
    to C++ kernels for this machine's device and ISA, packaged with its weights (frozen:
    constants to the compiler; on the CPU, convolution weights larger than 1x1 packed for oneDNN
    at compile time, as eager's Conv2d packs them: `aoti_packing`, since inductor itself packs
    only for static sizes). The provenance
    goes in twice: compiled in (`get_metadata()`, for C++ loaders) and as the archive's extra
    files (for `unetdsl inspect`, which never loads the compiled code)."""
    if shutil.which("g++") is None and shutil.which("c++") is None:
        raise ExportError("the aoti format compiles C++: install g++ (or put a c++ compiler on PATH)")
    spec: ResolvedSpec = model.spec  # type: ignore[assignment]
    args = call_args(_trace_inputs(spec, inputs))
    res = inputs.residuals is not None
    program = torch.export.export(_traceable(model, spec, res), args, dynamic_shapes=_dynamic_shapes(spec, args, res))
    # no_grad: inductor freezes only with grad disabled (compile_fx), and silently does not otherwise
    with torch.no_grad(), warnings.catch_warnings(), aoti_packing.packing(options.get("prepack", True)) as packed:
        warnings.simplefilter("ignore", UserWarning)  # inductor's notices on its cache; the check after writing is ours
        # freezing: the weights become constants, folded and (CPU) packed for oneDNN at compile time
        torch._inductor.aoti_compile_and_package(program, package_path=str(path),
                                                 inductor_configs={"aot_inductor.metadata": dict(meta), "freezing": True})
    how = (f"frozen; {packed[0]} convolution weights packed for oneDNN at compile time" if packed[0]
           else "frozen (weights are constants of the compiled code)")
    with zipfile.ZipFile(path, "a") as archive:  # the PT2 archive's extra files: <root>/extra/<name>
        root = archive.namelist()[0].split("/", 1)[0]
        for key, value in {**meta, AOTI_KEY: how}.items():  # AOTI_KEY: known after compiling, so not compiled in
            archive.writestr(f"{root}/extra/{key}", value)


def _load_aoti(path: Path, device: torch.device) -> Runner:
    compiled = torch._inductor.aoti_load_package(str(path))
    return lambda inp: compiled(*call_args(inp))


def _write_onnx(model: nn.Module, inputs: SampleInputs, path: Path, meta: dict[str, str],
                options: dict[str, Any]) -> None:
    onnx = _require("onnx")
    _require("onnxscript")
    spec: ResolvedSpec = model.spec  # type: ignore[assignment]
    args = call_args(_trace_inputs(spec, inputs))
    res = inputs.residuals is not None
    names = flat_input_names(spec, res)
    # torch.onnx.export takes a trailing dict in `args` for keyword arguments: `cond` (and what follows
    # it) goes by name
    shapes = dict(zip(input_names(spec, res), _dynamic_shapes(spec, args, res), strict=True))
    given = list(zip(input_names(spec, res), args, strict=True))
    first = next((k for k, (n, _) in enumerate(given) if n == "cond"), len(given))
    positional, keywords = tuple(a for _, a in given[:first]), dict(given[first:])
    with warnings.catch_warnings():
        # the exporter's notes on its own bookkeeping: that axes with one constraint share one name (a
        # ControlNet's outputs, a U-Net's residuals), and torch's pytree deprecation inside it
        warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`", category=FutureWarning)
        program = torch.onnx.export(
            _traceable(model, spec, res), positional, kwargs=keywords, dynamo=True, input_names=names,
            output_names=output_names(spec), dynamic_shapes=shapes, opset_version=options.get("opset", 18),
            verbose=False,
        )
    if program is None:  # pragma: no cover - the dynamo exporter always returns a program
        raise ExportError("torch.onnx.export returned nothing")
    program.save(str(path))
    proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def onnx_providers(device: torch.device) -> list[str]:
    """The ONNX Runtime providers that run (and so check) a model made for `device`. A CUDA model
    needs the CUDA provider (the onnxruntime-gpu package): the CPU provider would check another
    program than the one deployed, and has no bfloat16 convolution at all."""
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    available = _require("onnxruntime").get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise ExportError("a CUDA model's ONNX file is checked on ONNX Runtime's CUDA provider, which this "
                          f"onnxruntime lacks (it has {', '.join(available)}): pip install onnxruntime-gpu "
                          "in place of onnxruntime, or export from --device cpu")
    return ["CUDAExecutionProvider"]


def _load_onnx(path: Path, device: torch.device) -> Runner:
    ort = _require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=onnx_providers(device))
    names = [i.name for i in session.get_inputs()]

    def run(inp: SampleInputs) -> Any:
        feed = {n: _to_numpy(a) for n, a in zip(names, flat_args(inp), strict=True)}
        outs = [torch.from_numpy(o).to(device) for o in session.run(None, feed)]
        return outs if len(outs) > 1 else outs[0]

    return run


def _to_numpy(t: torch.Tensor) -> Any:
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16; ONNX Runtime takes ml_dtypes' through onnx
        import ml_dtypes

        return t.detach().float().cpu().numpy().astype(ml_dtypes.bfloat16)
    return t.detach().cpu().numpy()


def _require(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ExportError(f"the onnx format needs the '{name}' package: pip install 'unetdsl[onnx]'") from None


@dataclass(frozen=True)
class Format:
    suffix: str
    write: Callable[[nn.Module, SampleInputs, Path, dict[str, str], dict[str, Any]], None]
    load: Callable[[Path, torch.device], Runner]
    loader_name: str


FORMATS: dict[str, Format] = {
    "torchscript": Format(".pt", _write_torchscript, _load_torchscript, "torch.jit.load"),
    "export": Format(".pt2", _write_export, _load_export, "torch.export.load"),
    "onnx": Format(".onnx", _write_onnx, _load_onnx, "onnxruntime"),
    "aoti": Format(".aoti.pt2", _write_aoti, _load_aoti, "torch._inductor.aoti_load_package"),
}


def default_path(spec: ResolvedSpec, fmt: str) -> Path:
    return Path(spec.name + FORMATS[fmt].suffix)


# the formats torch.export traces: it specialises a size of 1, so their programs take every spatial
# size from 2 x the downsampling factor (two positions at the deepest level) up
TRACED_BY_EXPORT = ("export", "aoti")


def check_request(spec: ResolvedSpec, format: str, target: Path, *, device: torch.device, dtype: torch.dtype,
                  freeze: bool = False, prepack: bool = True, residuals: bool = False) -> None:
    """Everything about an export request that can be refused before a model is built: the
    format and its options, the output's name, the dtype and device, the sizes the format's
    program can take. Raises ExportError; the CLI calls it before the build, export() again."""
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; known: {', '.join(FORMATS)}")
    if freeze and format != "torchscript":
        raise ExportError(f"freeze applies to the torchscript format only, not {format}"
                          + (" (an aoti package is always frozen)" if format == "aoti" else ""))
    if not prepack and not ((format == "torchscript" and freeze) or format == "aoti"):
        raise ExportError("prepack=False applies to frozen TorchScript (freeze=True) and to aoti packages only: "
                          "nothing else packs weights")
    if residuals and spec.model != "unet":
        raise ExportError(f"residuals: only a U-Net takes a ControlNet's residuals, not a {spec.model}")
    if residuals and format == "torchscript":
        raise ExportError("residuals applies to the traced formats (export, onnx, aoti): a TorchScript U-Net "
                          "always takes them, as unet(x, t, ..., residuals=[...])")
    if format == "aoti" and not target.name.endswith(".pt2"):
        raise ExportError(f"{target}: an AOTInductor package is a .pt2 file (torch._inductor.aoti_load_package "
                          f"reads no other name): name it e.g. {target.with_suffix('.aoti.pt2').name}")
    if dtype not in TOLERANCE:
        raise ExportError(f"cannot export a {dtype} model; use one of {', '.join(DTYPES)}")
    if format == "onnx" and dtype == torch.bfloat16 and device.type == "cpu":
        raise ExportError("ONNX Runtime's CPU provider has no bfloat16 convolution, so a bfloat16 ONNX file "
                          "cannot be checked here: use --dtype float16 or float32, or --device cuda")
    if format == "onnx":
        onnx_providers(device)  # refuses before minutes of exporting when the check could not run
    smallest = max(2, spec.smallest_multiple) * spec.downsampling_factor
    if format in TRACED_BY_EXPORT and min(spec.sample_size) < smallest:
        raise ExportError(
            f"the {format} format's program takes spatial sizes from {smallest} (torch.export specialises a size of "
            f"1, so the deepest level needs 2 positions), and this spec's sample size {list(spec.sample_size)} is "
            f"below it: set sample_size to at least {smallest}, or use --format torchscript or onnx, which take it")


def export(
    model: nn.Module,
    path: str | os.PathLike[str] | None = None,
    *,
    format: str = "torchscript",
    freeze: bool = False,
    prepack: bool = True,
    opset: int = 18,
    residuals: bool = False,
) -> ExportReport:
    """Write `model` (built by unetdsl, on the device and in the dtype to export for) as `format`,
    reload it, and compare it with the eager model. Raises ExportCheckError (nothing written) if
    any check input disagrees beyond the dtype's tolerance.

    `freeze` (TorchScript): torch.jit.freeze the module. A frozen float32 or bfloat16 module on the
    CPU also gets its convolution weights packed for oneDNN, packed again by every load, as eager
    packs them (`unetdsl.torchscript_packing`): the file then loads on the CPU only; `prepack=False`
    keeps the plain frozen graph. An `aoti` package is always frozen; on the CPU its convolution
    weights are packed when it is compiled (`unetdsl.aoti_packing`), unless `prepack=False`.
    `residuals` (export, onnx, aoti; a U-Net): the program also takes a ControlNet's residuals, a
    list of one tensor per skip and the middle's (ONNX: inputs residual_0, ...), and adds them as
    `unet(..., residuals=...)` does; a TorchScript U-Net always takes them.
    Either option given where it does nothing is refused."""
    spec: ResolvedSpec | None = getattr(model, "spec", None)
    if spec is None:
        raise ExportError("export needs a model made by unetdsl.build_model (it reads model.spec)")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    target = Path(path) if path is not None else default_path(spec, format) if format in FORMATS else Path(spec.name)
    check_request(spec, format, target, device=device, dtype=dtype, freeze=freeze, prepack=prepack,
                  residuals=residuals)
    fmt = FORMATS[format]
    target = check_output(target)
    # an artifact is an inference graph: export in eval mode, then give the model back as it came
    # (a training loop that exports a snapshot keeps training with dropout on)
    was_training = model.training
    model.eval()
    try:
        return _write_checked(model, spec, fmt, format, target, device, dtype,
                              options={"freeze": freeze, "prepack": prepack, "opset": opset, "residuals": residuals})
    finally:
        model.train(was_training)


def _outputs(out: Any) -> list[torch.Tensor]:
    """A model's output as a list: one tensor, or a ControlNet's residuals."""
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _shapes(outs: list[torch.Tensor]) -> Any:
    """How outputs' shapes are told: one shape, or a list of them."""
    return list(outs[0].shape) if len(outs) == 1 else [list(o.shape) for o in outs]


def _write_checked(model: nn.Module, spec: ResolvedSpec, fmt: Format, format: str, target: Path,
                   device: torch.device, dtype: torch.dtype, *, options: dict[str, Any]) -> ExportReport:
    remove_stale_temporaries(target)
    residuals = bool(options.get("residuals"))
    checks = check_inputs(spec, device, dtype, residuals)
    with torch.inference_mode(), prepacking_off(model):  # the plain convolutions: no packed copies to hold
        expected = [model(*c.args()) for c in checks]
    atol, rtol = TOLERANCE[dtype]
    report = ExportReport(target, format)
    with atomic_path(target) as tmp:
        try:
            fmt.write(model, checks[0], tmp, metadata(spec, dtype, device, format, residuals), options)
        except ExportError:
            raise
        except Exception as exc:  # the exporter refused a model unetdsl built: a bug here or upstream
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"{format} export failed ({type(exc).__name__}: {first}); this is a bug in "
                              f"unetdsl {__version__} or torch {torch.__version__}, please report it") from exc
        try:
            runner = fmt.load(tmp, device)
        except Exception as exc:  # the file was written but its own runtime refuses it
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportCheckError(f"{fmt.loader_name} cannot load the written file ({type(exc).__name__}: "
                                   f"{first}); {target} was not written") from exc
        for inputs, want in zip(checks, expected, strict=True):
            try:
                with torch.inference_mode():
                    got = runner(inputs)
            except Exception as exc:  # the written program refuses an input the eager model takes
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ExportCheckError(f"{fmt.loader_name} of the written file cannot run input {list(inputs.x.shape)}, "
                                       f"which the eager model takes ({type(exc).__name__}: {first}); "
                                       f"{target} was not written") from exc
            gots, wants = _outputs(got), _outputs(want)
            if _shapes(gots) != _shapes(wants):
                raise ExportCheckError(f"{fmt.loader_name} of the written file gives shape {_shapes(gots)} for input "
                                       f"{list(inputs.x.shape)}; the eager model gives {_shapes(wants)}; "
                                       f"{target} was not written")
            worst = 0.0
            for g, w in zip(gots, wants, strict=True):
                diff = (g.float() - w.float()).abs()
                worst = max(worst, diff.max().item()) if diff.numel() else worst
                allowed = atol + rtol * w.float().abs()
                if not bool((diff <= allowed).all()):  # also catches NaN
                    raise ExportCheckError(
                        f"{fmt.loader_name} of the written file disagrees with the eager model on input "
                        f"{list(inputs.x.shape)}: max |diff| {diff.max().item():.3g} (allowed {atol:g} + {rtol:g}*|out| "
                        f"for {dtype}); {target} was not written")
            report.checks.append((list(inputs.x.shape), worst))
    return report
