"""A readable summary of a built model: per level resolution, channels, blocks, attention and
parameters, then totals. Reads parameter shapes only, so it works on `device="meta"` models."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .spec.resolved import ResolvedSpec


def count(module: object) -> int:
    return sum(p.numel() for p in module.parameters()) if isinstance(module, nn.Module) else 0


def part(model: nn.Module, name: str, index: int | None = None) -> nn.Module:
    module = getattr(model, name)
    if index is not None:
        module = module[index]
    assert isinstance(module, nn.Module)
    return module


@dataclass
class Row:
    part: str
    resolution: str
    channels: str
    blocks: str
    attention: str
    params: int


def rows(model: nn.Module, spec: ResolvedSpec) -> list[Row]:
    def res(size: list[int]) -> str:
        return "x".join(str(s) for s in size)

    def att(a: object) -> str:
        return f"{a.heads}x{a.head_dim}" if a is not None else "-"  # type: ignore[attr-defined]

    size = list(spec.sample_size)
    out = [Row("stem (conv_in)", res(size), f"{spec.in_channels}->{spec.stem_channels}", "-", "-", count(part(model, "conv_in")))]
    if spec.time is not None:
        te = part(model, "time_embedding")
        out.append(Row(f"time ({spec.time.embedding})", "-", f"{spec.time.features}->{spec.time.dim}", "-", "-", count(te)))
    for i, lv in enumerate(spec.encoder):
        down = f" +{lv.downsample}" if lv.downsample else ""
        out.append(Row(f"encoder {i}", res(size), str(lv.channels), f"{len(lv.blocks)}{down}", att(lv.attention),
                       count(part(model, "encoder", i))))
        if lv.downsample:
            size = [s // 2 for s in size]
    m = spec.middle
    out.append(Row("middle", res(size), str(m.channels), str(m.blocks), att(m.attention), count(part(model, "middle"))))
    for i, lv in enumerate(spec.decoder):
        up = f" +{lv.upsample}" if lv.upsample else ""
        out.append(Row(f"decoder {i}", res(size), str(lv.channels), f"{len(lv.blocks)}{up}", att(lv.attention),
                       count(part(model, "decoder", i))))
        if lv.upsample:
            size = [s * 2 for s in size]
    out.append(Row("head", res(size), f"{spec.head.in_channels}->{spec.out_channels}", "-", "-", count(part(model, "head"))))
    return out


def render(model: nn.Module, spec: ResolvedSpec) -> str:
    table = rows(model, spec)
    header = ("part", "resolution", "channels", "blocks", "attention", "parameters")
    cells = [header] + [(r.part, r.resolution, r.channels, r.blocks, r.attention, f"{r.params:,}") for r in table]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["  ".join(c[i].ljust(widths[i]) if i < 5 else c[i].rjust(widths[i]) for i in range(6)) for c in cells]
    total = count(model)
    assert total == sum(r.params for r in table), "summary rows do not add up to the model"
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"total parameters: {total:,}")
    return "\n".join(lines)
