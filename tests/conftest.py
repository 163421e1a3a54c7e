from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALL_SPECS = sorted((ROOT / "specs").glob("*.yaml"))
# the published full-size shapes (Stable Diffusion's U-Nets: 3.4 GB of float32 weights each; its VAE,
# whose checks would decode 512x512 images) are built on the meta device only in the suite; SPECS,
# which tests build and run for real, leaves them out
META_ONLY = {"sd15-unet", "sd2-unet", "sd-vae"}
SPECS = [p for p in ALL_SPECS if p.stem not in META_ONLY]
INVALID = sorted((ROOT / "tests" / "fixtures" / "invalid").glob("*.yaml"))

TINY = """\
unetdsl: 1
name: tiny
in_channels: 3
out_channels: 3
sample_size: 16
time: {embedding: sinusoidal, features: 8, dim: 16}
defaults:
  norm: {groups: 2}
encoder:
  asymmetric_padding: false
  levels:
    - {channels: 4, blocks: 1}
    - {channels: 8, blocks: 1, attention: {heads: 2}}
middle: {blocks: 2, attention: {heads: 2}}
"""

# a tiny text-conditioned U-Net (transformer attention, a (B, tokens, 16) context)
TEXT_TINY = (ROOT / "specs" / "text-tiny.yaml").read_text()


@pytest.fixture
def tiny_text() -> str:
    return TINY
