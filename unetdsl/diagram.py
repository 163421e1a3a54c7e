"""`unetdsl diagram`: the architecture as an SVG picture, drawn from the resolved spec and its
estimate (the same rows `summary` prints), with no external service and text as real SVG text.

The U: parts left to right in forward order (stem, encoder levels, middle, decoder levels, head),
each at a height given by its resolution (one row per halving), the middle one row below the
deepest level; skip connections as dashed lines across between levels of the same resolution;
resampling methods on the arrows; time and class conditioning in a box above, feeding every
ResBlock. A standalone encoder or decoder is the matching half."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from xml.sax.saxutils import escape

from .estimate import Estimate, PartEstimate
from .spec.resolved import ResolvedSpec
from .summary import human_flops

# geometry (px)
BOX_W, BOX_H = 150, 84
COL, ROW = 178, 112  # distance between box origins
MARGIN = 24
TOP, TOP_CONDITIONED = 80, 150  # room for the title (and the conditioning box)
LINE = 15  # text line height

FILL = {"stem": "#ececec", "head": "#ececec", "encoder": "#d9e8f5", "middle": "#e6dbf2", "decoder": "#fbe3cf"}
STROKE = {"stem": "#777777", "head": "#777777", "encoder": "#3f78b5", "middle": "#7a4fa8", "decoder": "#c76b1f"}
ATTENTION = "#c0392b"
SKIP = "#8a8a8a"
TIME, TIME_STROKE = "#f4f4e8", "#9a9a5a"


@dataclass
class _Box:
    part: PartEstimate
    kind: str  # a FILL key
    x: float
    y: float

    @property
    def cx(self) -> float:
        return self.x + BOX_W / 2

    @property
    def cy(self) -> float:
        return self.y + BOX_H / 2


def _params(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit} params"
    return f"{n} params"


def _text(x: float, y: float, s: str, *, size: int = 12, weight: str = "normal", anchor: str = "middle",
          fill: str = "#222222", style: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" font-weight="{weight}" font-style="{style}" '
            f'text-anchor="{anchor}" fill="{fill}">{escape(s)}</text>')


def _arrow(x1: float, y1: float, x2: float, y2: float, *, color: str = "#444444", dash: str | None = None,
           marker: str = "arrow") -> str:
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    return (f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" stroke-width="1.6"'
            f'{dashes} marker-end="url(#{marker})"/>')


def _lines(p: PartEstimate) -> list[str]:
    size = "×".join(str(s) for s in p.resolution) if p.resolution else ""
    if p.part == "stem":
        return ["stem (conv_in)", size, f"{p.channels.replace('->', ' → ')} ch", _params(p.parameters)]
    if p.part == "head":
        return ["head", size, f"{p.channels.replace('->', ' → ')} ch", _params(p.parameters)]
    if p.part == "residuals":  # a ControlNet's outputs
        return ["residuals", p.channels, "to the U-Net", _params(p.parameters)]
    blocks = f"{p.blocks} ResBlock{'s' if p.blocks != 1 else ''}"
    return [p.part, f"{size} · {p.channels} ch", blocks, _params(p.parameters)]


def render_svg(spec: ResolvedSpec, e: Estimate) -> str:
    """The SVG document (UTF-8 text) for `spec`, labelled with the figures of `e`."""
    parts = [p for p in e.parts if p.part not in ("time", "hint")]  # (a ControlNet's hint: a line of its own)
    largest = max(max(p.resolution) for p in parts if p.resolution)

    def depth(p: PartEstimate) -> int:
        return round(math.log2(largest / max(p.resolution))) if p.resolution else 0

    deepest = max(depth(p) for p in parts)
    top = TOP_CONDITIONED if spec.time is not None else TOP
    boxes = []
    for i, p in enumerate(parts):
        kind = {"residuals": "head"}.get(p.part.split()[0], p.part.split()[0])
        row = deepest + 1 if kind == "middle" else depth(p)
        boxes.append(_Box(p, kind, MARGIN + i * COL, top + row * ROW))
    width = MARGIN * 2 + (len(boxes) - 1) * COL + BOX_W
    rows_bottom = max(b.y for b in boxes) + BOX_H
    height = rows_bottom + 70  # legend

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
           "<title>" + escape(f"{spec.name}: {spec.model}, {spec.dims}D") + "</title>",
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#444444"/></marker>'
           f'<marker id="skip" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           f'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{SKIP}"/></marker></defs>',
           f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>']

    # title
    out.append(_text(MARGIN, 30, spec.name, size=18, weight="bold", anchor="start"))
    out.append(_text(MARGIN, 50, f"{spec.model}, {spec.dims}D · {e.parameters:,} parameters · "
                     f"{human_flops(int(e.flops / e.batch))} per sample at "
                     f"{'×'.join(map(str, e.sample_size))} · {spec.in_channels} → {spec.out_channels} channels",
                     size=12, anchor="start", fill="#555555"))
    if spec.controlnet is not None:
        c = spec.controlnet
        hint = next(p for p in e.parts if p.part == "hint")
        out.append(_text(width - MARGIN, 30, f"hint {c.hint_channels}×{'×'.join(map(str, hint.resolution or []))} → "
                         f"{' → '.join(map(str, c.embedding))} → added to the stem · returns "
                         f"{len(spec.residual_channels)} residuals (each skip, the middle)", size=12, anchor="end",
                         fill="#555555"))

    # conditioning: one box above the U, feeding every ResBlock
    if spec.time is not None:
        t = spec.time
        noise = f"c_noise(σ), {spec.preconditioning.type} denoiser" if spec.preconditioning is not None else ""
        label = [f"time: {t.embedding} ({t.features}) → MLP → {t.dim}" + (f" · {noise}" if noise else ""),
                 f"into every ResBlock ({t.injection.replace('_', '-')})"]
        if spec.classes is not None:
            label.insert(1, f"+ class embedding ({spec.classes} classes)")
        if spec.conditions:  # (a fourth line still fits above the U: 64 + 18 + 4 x 15 < TOP_CONDITIONED)
            names = ", ".join([i.name for i in spec.condition_inputs]
                              + ["pooled context" for c in spec.conditions if c.pool_heads])
            label.insert(len(label) - 1, f"+ cond: {names[:40]}{'…' if len(names) > 40 else ''}")
        cw, ch = 300, 18 + LINE * len(label)
        cx = (width - cw) / 2
        out.append(f'<rect x="{cx:.1f}" y="64" width="{cw}" height="{ch}" rx="8" fill="{TIME}" stroke="{TIME_STROKE}"/>')
        for k, s in enumerate(label):
            out.append(_text(cx + cw / 2, 64 + 16 + k * LINE, s, size=12))

    # skip connections: an encoder level's outputs go to the decoder level at its resolution
    if spec.model == "unet":
        encoders = [b for b in boxes if b.kind in ("stem", "encoder")]
        decoders = [b for b in boxes if b.kind == "decoder"]
        for d in decoders:
            source = [b for b in encoders if b.part.resolution == d.part.resolution]
            if source:
                src = source[-1]
                y = d.y + BOX_H - 10
                out.append(_arrow(src.x + BOX_W, y, d.x, y, color=SKIP, dash="6 4", marker="skip"))
                out.append(_text((src.x + BOX_W + d.x) / 2, y - 4, f"skip × {d.part.blocks}", size=10, fill=SKIP))

    # the forward path, with resampling on the arrows
    for a, b in itertools.pairwise(boxes):
        going_down = b.y > a.y
        x1, y1 = (a.x + BOX_W, a.cy) if b.y == a.y else (a.cx + 20, a.y + BOX_H) if going_down else (a.cx + 20, a.y)
        x2, y2 = (b.x, b.cy) if b.y == a.y else (b.cx - 20, b.y) if going_down else (b.cx - 20, b.y + BOX_H)
        out.append(_arrow(x1, y1, x2, y2))
        resample = a.part.resample if a.kind in ("encoder", "decoder") else None
        if resample:
            sign = "↓2" if a.kind == "encoder" else "↑2"
            # an NCSN++ pyramid joins (encoder) or leaves a head (decoder) at each resampling
            pyramid = spec.input_pyramid if a.kind == "encoder" else spec.output_pyramid
            mark = f" + {pyramid} pyramid" if pyramid != "none" else ""
            out.append(_text((x1 + x2) / 2 + (8 if going_down else -8), (y1 + y2) / 2,
                             f"{resample} {sign}{mark}", size=11, weight="bold",
                             anchor="start" if going_down else "end", fill="#444444"))

    # the boxes
    for b in boxes:
        stroke = STROKE[b.kind]
        out.append(f'<rect x="{b.x:.1f}" y="{b.y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="8" '
                   f'fill="{FILL[b.kind]}" stroke="{stroke}" stroke-width="1.5"/>')
        lines = _lines(b.part)
        for k, line in enumerate(lines):
            out.append(_text(b.cx, b.y + 17 + k * LINE, line, size=12 if k else 13, weight="bold" if k == 0 else "normal"))
        att = b.part.attention
        if att is not None:
            kind = "linear attention" if att.get("linear") else "attention"
            out.append(_text(b.cx, b.y + 17 + len(lines) * LINE, f"{kind} {att['heads']}×{att['head_dim']}",
                             size=12, weight="bold", fill=ATTENTION))
        if spec.time is not None and b.kind in ("encoder", "middle", "decoder"):  # its ResBlocks read the time
            out.append(f'<rect x="{b.x + BOX_W - 19:.1f}" y="{b.y + 4:.1f}" width="15" height="15" rx="3" '
                       f'fill="{TIME}" stroke="{TIME_STROKE}"/>')
            out.append(_text(b.x + BOX_W - 11.5, b.y + 15.5, "t", size=11, weight="bold", fill="#6b6b3a"))

    # legend
    ly = rows_bottom + 40
    x = MARGIN
    present = {b.kind for b in boxes}
    for kind, name in (("encoder", "encoder level"), ("middle", "middle"), ("decoder", "decoder level"),
                       ("stem", "stem / head")):
        if kind not in present:
            continue
        out.append(f'<rect x="{x}" y="{ly - 11}" width="16" height="14" rx="3" fill="{FILL[kind]}" '
                   f'stroke="{STROKE[kind]}"/>')
        out.append(_text(x + 22, ly, name, size=11, anchor="start"))
        x += 130
    out.append(_text(x, ly, "attention h×d", size=11, weight="bold", anchor="start", fill=ATTENTION))
    out.append(_text(x + 96, ly, "= self-attention, heads × head dim", size=11, anchor="start"))
    x += 310
    if spec.time is not None:
        out.append(f'<rect x="{x}" y="{ly - 12}" width="15" height="15" rx="3" fill="{TIME}" stroke="{TIME_STROKE}"/>')
        out.append(_text(x + 7.5, ly - 1, "t", size=11, weight="bold", fill="#6b6b3a"))
        out.append(_text(x + 22, ly, "time-conditioned", size=11, anchor="start"))
        x += 140
    if spec.model == "unet":
        out.append(f'<line x1="{x}" y1="{ly - 4}" x2="{x + 26}" y2="{ly - 4}" stroke="{SKIP}" stroke-width="1.6" '
                   f'stroke-dasharray="6 4"/>')
        out.append(_text(x + 32, ly, "skip connection (concatenated)", size=11, anchor="start"))
    out.append("</svg>")
    return "\n".join(out) + "\n"
