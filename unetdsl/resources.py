"""Refuse builds the machine cannot do, before they start: a spec can validate and still ask for
hundreds of GB of weights, a 8192^3 activation or an hour of convolutions. The figures come from
the one estimator (`estimate.py`) and are compared with what the machine has now; the message
gives both, and how to go ahead anyway (`--no-resource-check`, `check_resources=False`).

Estimates are lower bounds of what a build holds (weights once as built, once as the reloaded
artifact, and the check forward's activations), so a refusal is never a false alarm of the
estimate's making; the machine's own figure can still be wrong (swap, other processes)."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UnetdslError
from .estimate import Estimate
from .summary import human_bytes, human_flops

# the check forwards a build runs at the sample input: the printed sample, then the eager model
# and the reloaded artifact compared (the second, smaller check size is left out of the bound)
CHECK_FORWARDS = 3
# a build whose convolutions alone would run longer than this is refused; past NOTICE_S it is announced
REFUSE_S = 30 * 60
NOTICE_S = 60
# below this much work the machine's speed is not even measured (a few seconds on any machine)
MEASURE_ABOVE_FLOPS = 1e12

OVERRIDE_CLI = "pass --no-resource-check to build anyway"
OVERRIDE_API = "pass check_resources=False to build anyway"


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


def check_build(e: Estimate, *, device: torch.device, output_dir: Path | None = None) -> list[str]:
    """`unetdsl build`'s guard, from the estimate of the check forward (batch 2, sample size,
    the target dtype). Raises ResourceError; returns notices worth printing (a long build)."""
    problems = []
    weights = e.parameters * 4  # built in float32 before any cast
    artifact = e.parameter_bytes
    need = weights + artifact + e.inference_bytes
    size = "x".join(str(s) for s in e.sample_size)
    have = device_memory(device)
    if have is not None and need > have.bytes:
        problems.append(
            f"memory: at least {human_bytes(need)} = weights {human_bytes(weights)} (float32, as built) + the reloaded artifact "
            f"{human_bytes(artifact)} + activations {human_bytes(e.inference_bytes)} (the check forward at batch {e.batch}, "
            f"{size}); {device} has {human_bytes(have.bytes)} available ({have.what})")
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
    work = CHECK_FORWARDS * e.flops
    if work > MEASURE_ABOVE_FLOPS and device.type != "meta":
        rate = conv_flops_per_second(device)
        seconds = work / rate
        figure = (f"{CHECK_FORWARDS} check forwards of {human_flops(e.flops)} each at about {rate / 1e9:.0f} GFLOP/s "
                  f"(this machine's 3x3 convolution speed): {_duration(seconds)}")
        if seconds > REFUSE_S:
            problems.append(f"time: {figure}, more than the {REFUSE_S // 60} minutes a build may take")
        elif seconds > NOTICE_S:
            notices.append(f"note: this build runs {figure}")
    if problems:
        raise ResourceError(
            "this build cannot run on this machine:\n" + "\n".join(f"  {p}" for p in problems)
            + f"\n  shrink the spec (sample_size for activations and time; channels, blocks and levels for "
              f"weights), or {OVERRIDE_CLI}")
    return notices
