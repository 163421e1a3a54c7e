"""Refuse builds the machine cannot do, before they start: a spec can validate and still ask for
hundreds of GB of weights, a 8192^3 activation, an hour of convolutions, tens of thousands of
layers to compile or attention whose score matrices are all the work. The figures come from the
one estimator (`estimate.py`) and are compared with what the machine has now; the message gives
both, and how to go ahead anyway (`--no-resource-check`, `check_resources=False`).

What a build costs, per format (FORMAT_COSTS, measured on this project's 2-core machine, the
grid in tests/test_resources.py holds the estimate within 2x of measured builds):

  time    modules x the format's seconds per module (construct, script or trace, save, reload)
          + CHECK_FORWARDS x (convolution FLOPs / this machine's convolution speed
                              + attention score elements / this machine's score speed)
  memory  weights as built (float32) + the artifact's weights x (1 + the exporter's extra copies)
          + the check forward's activations x (1 + the runtime's extra copies)
          + modules x the format's bytes per module

Before the estimator runs (its fake forward costs ~1.5 ms a module), `check_structure` refuses a
spec whose layers alone are past the time bound, counted from the resolved spec in microseconds."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UnetdslError
from .estimate import Estimate
from .spec.resolved import ResolvedSpec
from .summary import human_bytes, human_flops

# the check forwards a build runs at the sample input: the printed sample, then the eager model
# and the reloaded artifact compared (the second, smaller check size is left out of the bound)
CHECK_FORWARDS = 3
# a build whose convolutions alone would run longer than this is refused; past NOTICE_S it is announced
REFUSE_S = 30 * 60
NOTICE_S = 60
# below this much work the machine's speed is not even measured (a few seconds on any machine)
MEASURE_ABOVE_FLOPS = 1e12
MEASURE_ABOVE_SCORES = 1e9
MEASURE_ABOVE_BYTES = 1e9
# the estimator's own fake forward, per module (measured: 13.7 s for 9,159 modules)
ESTIMATE_SECONDS_PER_MODULE = 0.0015

OVERRIDE_CLI = "pass --no-resource-check to build anyway"
OVERRIDE_API = "pass check_resources=False to build anyway"


@dataclass(frozen=True)
class FormatCost:
    """What building an artifact of one format costs beyond the model itself (measured, see above)."""

    seconds_per_module: float  # construct + script/trace + save + reload + the checks' dispatch
    bytes_per_module: int  # the compiled or traced graph's share of one module, held at the peak
    weight_copies: float  # copies of the weights the exporter and its runtime hold beyond the artifact's
    activation_copies: float  # copies of the check forward's activations the runtime holds (arenas)
    score_copies: float = 0.0  # score matrices of the largest attention call held at once (a math kernel)
    score_time: float = 1.0  # time per score relative to this machine's SDPA (the runtime's own kernel)
    overhead: int = 48 << 20  # the compiler's and runtime's own memory, whatever the model


# measured with torch 2.13 on 2 cores (tests/test_resources.py::test_the_guard_is_within_2x_of_real_builds):
# TorchScript ~5.5 ms and ~75 KiB a module; torch.export traces, saves and reloads at ~6x that; the ONNX
# exporter (dynamo) at ~40x, and ONNX Runtime holds its own weights and an activation arena; AOTInductor
# compiles C++ per kernel (minutes for a U-Net), the largest per module (measured on the grid: 479 modules
# in 169 s, 159 in 63 s, 147 in 74 s; peak 289, 263 and 161 MB over the process)
FORMAT_COSTS: dict[str, FormatCost] = {
    "torchscript": FormatCost(0.0065, 100 << 10, 0.0, 0.0),
    "export": FormatCost(0.038, 150 << 10, 1.0, 0.0),
    # ONNX Runtime's CPU attention is the math path: score matrices materialised (scores, softmax, a
    # temporary: 7 GB at one channel per head on 64x64, where flash holds O(tokens)), and ~4x slower per score
    "onnx": FormatCost(0.1, 200 << 10, 2.0, 1.0, score_copies=3.0, score_time=4.0, overhead=64 << 20),
    "aoti": FormatCost(0.5, 200 << 10, 2.0, 1.0, overhead=128 << 20),
}
# building the modules (construct + initialise) and the estimator's fake forward, per module
BUILD_SECONDS_PER_MODULE = 0.0002
# the fewest modules a transformer layer and a ResBlock compile to (norms, projections, attention, MLP)
MODULES_PER_TRANSFORMER_LAYER = 14
MODULES_PER_BLOCK = 6


class ResourceError(UnetdslError):
    """A build needs more memory, disk or time than this machine has."""


@dataclass(frozen=True)
class Available:
    bytes: int
    what: str  # where the figure comes from, for the message


def host_memory() -> Available | None:
    """Memory a new allocation can get without swapping: MemAvailable, capped by the cgroup's
    limit (containers), or None where the system does not say (the check is then skipped)."""
    figures: list[Available] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    figures.append(Available(int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"))
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            cap = Path(limit).read_text().strip()
            if cap != "max" and int(cap) < 2**60:
                figures.append(Available(int(cap) - int(Path(usage).read_text()), f"the cgroup limit {limit}"))
                break
        except (OSError, ValueError):
            continue
    if not figures and hasattr(os, "sysconf"):
        with contextlib.suppress(OSError, ValueError):
            figures.append(Available(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"), "free physical pages"))
    return min(figures, key=lambda a: a.bytes) if figures else None


def device_memory(device: torch.device) -> Available | None:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return Available(free, f"free memory on {torch.cuda.get_device_name(device)}")
    if device.type == "cpu":
        return host_memory()
    return None  # meta and others: nothing is allocated, or nothing we can ask


def attention_scores_per_second(device: torch.device) -> float:
    """This machine's speed at attention's per-score work (scale, softmax, exp): SDPA over 16
    heads of 1,024 tokens with one channel per head, where the scores are all the work (best of
    three after a warm-up)."""
    import torch.nn.functional as F

    q = torch.randn(1, 16, 1024, 1, device=device)
    best = float("inf")
    with torch.inference_mode():
        for i in range(4):
            start = time.perf_counter()
            F.scaled_dot_product_attention(q, q, q)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:
                best = min(best, time.perf_counter() - start)
    return 16 * 1024 * 1024 / best


def elementwise_bytes_per_second(device: torch.device) -> float:
    """This machine's speed at the memory-bound half of a forward (GroupNorm, SiLU, residual adds):
    bytes written per second by group_norm + silu on a (2, 64, 128, 128) activation."""
    import torch.nn.functional as F

    x = torch.randn(2, 64, 128, 128, device=device)
    best = float("inf")
    with torch.inference_mode():
        for i in range(4):
            start = time.perf_counter()
            F.silu(F.group_norm(x, 32))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:
                best = min(best, time.perf_counter() - start)
    return 2 * x.nbytes / best


def modules_at_least(spec: ResolvedSpec) -> int:
    """A lower bound of the modules `spec` compiles to, from the resolved spec alone (no model is
    made): every ResBlock, and every transformer layer of every attention block."""
    total = 0
    places = [(len(lv.blocks), lv.attention, len(lv.blocks)) for lv in (*spec.encoder, *spec.decoder)]
    places.append((spec.middle.blocks, spec.middle.attention, 1))  # the middle: at least one attention block
    for blocks, att, attended in places:
        layers = 0 if att is None else (att.transformer.depth if att.transformer is not None else 1)
        total += blocks * MODULES_PER_BLOCK + attended * layers * MODULES_PER_TRANSFORMER_LAYER
    return total


def check_structure(spec: ResolvedSpec, *, format: str = "torchscript", device: torch.device | None = None) -> None:
    """Refuse, before anything is estimated or built, a spec whose modules alone take longer or
    hold more than a build may: the estimator's fake forward, the format's compile and the graphs
    it holds all grow with them (the fuller check_build runs after the estimate)."""
    modules = modules_at_least(spec)
    cost = FORMAT_COSTS[format]
    per_module = cost.seconds_per_module + BUILD_SECONDS_PER_MODULE + ESTIMATE_SECONDS_PER_MODULE
    seconds = modules * per_module
    problems = []
    if seconds > REFUSE_S:
        problems.append(f"time: at least {modules:,} modules to estimate, build and export as {format} at about "
                        f"{per_module * 1000:.1f} ms each: "
                        f"{_duration(seconds)}, more than the {REFUSE_S // 60} minutes a build may take")
    have = device_memory(device or torch.device("cpu"))
    graphs = modules * cost.bytes_per_module
    if have is not None and graphs > have.bytes:
        problems.append(f"memory: at least {modules:,} modules whose {format} graphs hold about {human_bytes(graphs)}; "
                        f"{human_bytes(have.bytes)} available ({have.what})")
    if problems:
        raise ResourceError("this build cannot run on this machine:\n" + "\n".join(f"  {p}" for p in problems)
                            + f"\n  shrink the spec (attention depth, blocks, levels), or {OVERRIDE_CLI}")


def conv_flops_per_second(device: torch.device) -> float:
    """This machine's speed at the model's bread and butter: a 3x3 convolution, 128 -> 128
    channels on 64x64, channels-last, float32 (best of three after a warm-up)."""
    conv = torch.nn.Conv2d(128, 128, 3, padding=1).to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    x = torch.randn(1, 128, 64, 64, device=device).contiguous(memory_format=torch.channels_last)
    flops = 2 * 128 * 128 * 9 * 64 * 64
    best = float("inf")
    with torch.inference_mode():
        for i in range(4):
            start = time.perf_counter()
            conv(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:
                best = min(best, time.perf_counter() - start)
    return flops / best


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"about {seconds / size:,.0f} {unit}"
    return f"about {seconds:.0f} seconds"


def check_parameters(parameters: int, *, dtype: torch.dtype, device: torch.device) -> None:
    """`build_model`'s guard: the weights alone (built in float32, then cast) must fit."""
    need = parameters * 4 + (parameters * dtype.itemsize if dtype != torch.float32 else 0)
    have = device_memory(device)
    if have is not None and need > have.bytes:
        raise ResourceError(
            f"the model's weights need {human_bytes(need)} ({parameters:,} parameters) but {device} has "
            f"{human_bytes(have.bytes)} available ({have.what}); shrink the spec (channels, blocks, levels), "
            f"or {OVERRIDE_API}")


def build_cost(e: Estimate, *, device: torch.device, format: str = "torchscript",
               measure: bool = True) -> tuple[int, float, list[str]]:
    """(bytes, seconds, the terms in words) a build of `format` from estimate `e` takes on
    `device`: the model above. `measure`: time this machine's convolution and attention speed
    when there is enough of either to matter (else the work is taken as free)."""
    cost = FORMAT_COSTS[format]
    weights = e.parameters * 4  # built in float32 before any cast
    artifact = e.parameter_bytes
    graph = e.modules * cost.bytes_per_module
    element = e.parameter_bytes // max(e.parameters, 1) or 4  # the dtype's bytes
    scores = int(e.attention_largest * element * cost.score_copies)
    need = int(weights + artifact * (1 + cost.weight_copies) + e.inference_bytes * (1 + cost.activation_copies)
               + graph + scores + cost.overhead)
    terms = [f"weights {human_bytes(weights)} (float32, as built)",
             f"the artifact's weights {human_bytes(artifact)}"
             + (f" x {1 + cost.weight_copies:g} (the {format} exporter and runtime hold copies)" if cost.weight_copies else ""),
             f"activations {human_bytes(e.inference_bytes)}"
             + (f" x {1 + cost.activation_copies:g} (the runtime's arena)" if cost.activation_copies else ""),
             f"{e.modules:,} modules' graphs {human_bytes(graph)}", f"the {format} runtime {human_bytes(cost.overhead)}"]
    if scores:
        terms.append(f"the largest attention's score matrices {human_bytes(scores)} (the {format} runtime holds them)")
    seconds = e.modules * (cost.seconds_per_module + BUILD_SECONDS_PER_MODULE)
    if measure and device.type != "meta":
        if CHECK_FORWARDS * e.flops > MEASURE_ABOVE_FLOPS:
            seconds += CHECK_FORWARDS * e.flops / conv_flops_per_second(device)
        if CHECK_FORWARDS * e.written_bytes > MEASURE_ABOVE_BYTES:  # norms, activations, adds: memory-bound
            seconds += CHECK_FORWARDS * e.written_bytes / elementwise_bytes_per_second(device)
        if CHECK_FORWARDS * e.attention_scores > MEASURE_ABOVE_SCORES:
            seconds += CHECK_FORWARDS * e.attention_scores * cost.score_time / attention_scores_per_second(device)
    return need, seconds, terms


def check_build(e: Estimate, *, device: torch.device, output_dir: Path | None = None,
                format: str = "torchscript") -> list[str]:
    """`unetdsl build`'s guard, from the estimate of the check forward (batch 2, sample size,
    the target dtype). Raises ResourceError; returns notices worth printing (a long build)."""
    problems = []
    need, seconds, terms = build_cost(e, device=device, format=format)
    artifact = e.parameter_bytes
    size = "x".join(str(s) for s in e.sample_size)
    have = device_memory(device)
    if have is not None and need > have.bytes:
        problems.append(f"memory: at least {human_bytes(need)} = {' + '.join(terms)} (the check forward at batch "
                        f"{e.batch}, {size}, exported as {format}); {device} has {human_bytes(have.bytes)} available "
                        f"({have.what})")
    if output_dir is not None:
        try:
            free = os.statvfs(output_dir)
            free_bytes = free.f_bavail * free.f_frsize
        except (OSError, AttributeError):
            free_bytes = None
        if free_bytes is not None and artifact > free_bytes:
            problems.append(f"disk: the artifact holds {human_bytes(artifact)} of weights; {output_dir} has "
                            f"{human_bytes(free_bytes)} free")
    notices = []
    figure = (f"{e.modules:,} modules to build and export as {format}, {CHECK_FORWARDS} check forwards of "
              f"{human_flops(e.flops)} and {e.attention_scores:,} attention scores each: {_duration(seconds)}")
    if seconds > REFUSE_S:
        problems.append(f"time: {figure}, more than the {REFUSE_S // 60} minutes a build may take")
    elif seconds > NOTICE_S:
        notices.append(f"note: this build takes {figure}")
    if problems:
        raise ResourceError(
            "this build cannot run on this machine:\n" + "\n".join(f"  {p}" for p in problems)
            + f"\n  shrink the spec (sample_size for activations and time; channels, blocks and levels for "
              f"weights; attention depth and heads for time), or {OVERRIDE_CLI}")
    return notices
