"""The summary table `unetdsl summary` and `unetdsl build` print: one row per part of the model
(resolution, channels, blocks, attention, parameters, forward FLOPs, activations kept for
backward), then the totals of memory and cost. It formats an `Estimate` and nothing else, so
what `build` prints and what `summary` prints cannot disagree."""

from __future__ import annotations

from .estimate import TRAINING_STATE_BYTES, Estimate, PartEstimate
from .spec.resolved import ResolvedSpec


def human_bytes(n: int) -> str:
    for unit, size in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def human_flops(n: int) -> str:
    for unit, size in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} FLOP"


def _size(size: list[int] | None) -> str:
    return "x".join(str(s) for s in size) if size is not None else "-"


def _label(spec: ResolvedSpec, p: PartEstimate) -> str:
    embedding = spec.time.embedding if spec.time is not None else ""
    return {"stem": "stem (conv_in)", "time": f"time ({embedding})"}.get(p.part, p.part)


def _blocks(p: PartEstimate) -> str:
    if p.blocks is None:
        return "-"
    return f"{p.blocks} +{p.resample}" if p.resample else str(p.blocks)


def _attention(p: PartEstimate) -> str:
    a = p.attention
    if a is None:
        return "-"
    kind = " linear" if a.get("linear") else ""  # (lucidrains' linear attention: cost linear in the tokens)
    memory = f"+{a['memory']}" if a.get("memory") else ""  # learned key/value slots beside the tokens
    return f"{a['heads']}x{a['head_dim']}{kind} @{a['tokens']}{memory}"


def table(spec: ResolvedSpec, e: Estimate) -> list[str]:
    """The per-part table with a totals row; the kept-activations column when training was estimated."""
    header = ["part", "resolution", "channels", "blocks", "attention", "parameters", "forward"]
    if e.training:
        header.append("kept (train)")
    cells = [header]
    for p in e.parts:
        row = [_label(spec, p), _size(p.resolution), p.channels, _blocks(p), _attention(p), f"{p.parameters:,}",
               human_flops(p.flops)]
        if e.training:
            row.append(human_bytes(p.kept_bytes))
        cells.append(row)
    total = ["total", "", "", "", "", f"{e.parameters:,}", human_flops(e.flops)]
    if e.training:
        total.append(human_bytes(e.training[0].kept_bytes))
    cells.append(total)
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["  ".join(c[i].ljust(widths[i]) if i < 5 else c[i].rjust(widths[i]) for i in range(len(header))).rstrip()
             for c in cells]
    rule = "-" * len(lines[0])
    return [lines[0], rule, *lines[1:-1], rule, lines[-1]]


def render(spec: ResolvedSpec, e: Estimate, device: str = "cpu") -> str:
    per_sample = e.flops / e.batch
    lines = [f"{spec.name}  {spec.spec_id}  ({spec.model}, {spec.dims}D; batch {e.batch} x {_size(e.sample_size)}, "
             f"{e.dtype} on {device})", *table(spec, e), ""]
    lines.append(f"parameters   {e.parameters:,} ({human_bytes(e.parameter_bytes)} in {e.dtype}, buffers included)")
    flops = f"forward {human_flops(e.flops)} ({human_flops(int(per_sample))} per sample)"
    if e.training_flops is not None:
        flops += f"; training step {human_flops(e.training_flops)}"
    lines.append(f"compute      {flops}")
    lines.append(f"inference    activations peak {human_bytes(e.inference_bytes)} (+ weights)")
    if e.training:
        state = e.training_state_bytes()
        lines.append(f"training     weights, gradients and AdamW moments {human_bytes(state)} "
                     f"({TRAINING_STATE_BYTES['adamw_fp32']} B per parameter; bf16 mixed precision with float32 "
                     f"master weights the same)")
        for t in e.training:
            how = "no checkpointing" if t.checkpointing is None else f"checkpointing per {t.checkpointing}"
            lines.append(f"  {how + ':':30} activations kept {human_bytes(t.kept_bytes):>10}, "
                         f"peak with gradients {human_bytes(t.peak_bytes):>10}, "
                         f"step total {human_bytes(e.step_bytes(t)):>10}")
    for i, group in enumerate(spec.conditions):  # (their weights are in the time row)
        joined = " + ".join(f"{c.name} ({c.width}" + (f" x sinusoid {c.sinusoid})" if c.sinusoid else ")")
                            for c in group.inputs)
        how = group.project
        if group.pool_heads:
            joined, how = "context (T tokens)", f"pooled by {group.pool_heads}-head attention -> linear"
        where = "the time embedding" if group.into == "time" else "the time features"
        lines.append(f"{'conditions' if i == 0 else '':12} {joined} = {group.joined_width} -> {how} -> "
                     f"added to {where} ({group.width})")
    pyramids = {"skip": "the image, resampled, joins after each downsample as h + conv1x1(image)",
                "residual": "the image joins after each downsample as (h + conv3x3-down(pyramid)) / sqrt(2), which "
                            "becomes the pyramid"}
    if spec.input_pyramid != "none":  # (their weights are in the encoder rows, the output heads' in the decoder rows)
        lines.append(f"{'pyramids':12} input {spec.input_pyramid}: {pyramids[spec.input_pyramid]}")
    if spec.output_pyramid != "none":
        lines.append(f"{'' if spec.input_pyramid != 'none' else 'pyramids':12} output {spec.output_pyramid}: a head at "
                     "every decoder level, upsampled and summed into the output")
    if spec.preconditioning is not None:
        p = spec.preconditioning.view()
        own = ", ".join(f"{k} {v}" for k, v in p.items() if k != "type")
        lines.append(f"{'denoiser':12} model(x, sigma) = c_skip x + c_out F(c_in x, c_noise): {p['type']}"
                     + (f" ({own})" if own else ""))
    seen = "attention before it sees the whole input" if e.global_attention else "no attention before it"
    lines.append(f"receptive field at the bottleneck: {e.receptive_field} positions per side by convolution; {seen}")
    return "\n".join(lines)
