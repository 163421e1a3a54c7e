"""`unetdsl diagram`: a valid SVG whose text states each part's figures, rendered to pixels by
cairosvg (what a browser or a README shows), for every example spec."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import unetdsl
from unetdsl.cli import main
from unetdsl.diagram import ATTENTION, FILL, render_svg
from unetdsl.estimate import estimate

from .conftest import ROOT, SPECS

SVG = "{http://www.w3.org/2000/svg}"


def _svg(spec_source) -> tuple[unetdsl.ResolvedSpec, str]:
    spec, _ = unetdsl.resolve_spec(spec_source)
    return spec, render_svg(spec, estimate(spec, training=False))


def _texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_example_spec_draws_and_renders(path: Path) -> None:
    cairosvg = pytest.importorskip("cairosvg")
    from PIL import Image

    spec, text = _svg(path)
    root = ET.fromstring(text)
    assert root.tag == f"{SVG}svg"
    texts = _texts(root)
    est = estimate(spec, training=False)
    for part in est.parts:
        if part.part not in ("time", "stem"):
            assert part.part in texts  # every level, the middle and the head, by name
        if part.resolution is not None and part.part not in ("stem", "head"):
            size = "×".join(map(str, part.resolution))
            assert f"{size} · {part.channels} ch" in texts, part.part
    attention = [p for p in est.parts if p.attention]
    assert sum(t.startswith("attention ") and "h×d" not in t for t in texts) == len(attention)
    skips = [t for t in texts if t.startswith("skip × ")]
    assert len(skips) == (len(spec.decoder) if spec.model == "unet" else 0)
    if spec.model == "unet":
        assert skips[-1] == f"skip × {len(spec.decoder[-1].blocks)}"
    resampling = [t for t in texts if t.endswith(("↓2", "↑2"))]
    assert len(resampling) == sum(lv.downsample is not None for lv in spec.encoder) + \
        sum(lv.upsample is not None for lv in spec.decoder)
    if spec.time is not None:
        assert any(t.startswith(f"time: {spec.time.embedding}") for t in texts)

    png = cairosvg.svg2png(bytestring=text.encode())
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (int(float(root.get("width", 0))), int(float(root.get("height", 0))))
    colors = image.getcolors(maxcolors=1 << 20)
    assert colors is not None
    counts = {rgb: n for n, rgb in colors}
    white = counts.get((255, 255, 255), 0) / (image.size[0] * image.size[1])
    assert 0.5 < white < 0.97  # drawn on, not a blank page nor a blot
    def rgb(hex_: str) -> tuple[int, int, int]:
        return tuple(int(hex_[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
    kinds = {p.part.split()[0] for p in est.parts} - {"time"}
    for kind in kinds:
        assert counts.get(rgb(FILL[kind]), 0) > 1000, kind  # each kind's boxes are filled with its colour
    if attention:
        assert sum(n for c, n in counts.items() if c == rgb(ATTENTION)) > 20  # red attention labels


def test_text_is_escaped() -> None:
    """Spec names are restricted to [A-Za-z0-9._-], but every text goes through XML escaping anyway."""
    from unetdsl.diagram import _text

    element = ET.fromstring(_text(0, 0, "<b>&x</b>"))
    assert element.text == "<b>&x</b>"


def test_cli_writes_atomically_and_never_onto_its_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text((ROOT / "specs" / "tiny.yaml").read_text())
    out = tmp_path / "arch.svg"
    assert main(["diagram", str(spec), "-o", str(out)]) == 0
    ET.parse(out)
    assert [p.name for p in tmp_path.iterdir()] == sorted(["arch.svg", "tiny.yaml"]) or \
        sorted(p.name for p in tmp_path.iterdir()) == ["arch.svg", "tiny.yaml"]
    before = spec.read_bytes()
    assert main(["diagram", str(spec), "-o", str(spec)]) == 1
    assert spec.read_bytes() == before
    assert "error:" in capsys.readouterr().err


def test_readme_diagram_is_current() -> None:
    """docs/ddpm-cifar10.svg (shown in docs/analysis.md) is what `unetdsl diagram` draws today."""
    _, text = _svg(ROOT / "specs" / "ddpm-cifar10.yaml")
    assert (ROOT / "docs" / "ddpm-cifar10.svg").read_text(encoding="utf-8") == text
