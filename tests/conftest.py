from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
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


@pytest.fixture
def tiny_text() -> str:
    return TINY
