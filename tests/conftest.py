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
# the mechanics tests (build, run, backward, script, export) take a spec's miniature twin where it
# has one (tests/fixtures/twins/: the same topology at a fraction of the widths, by `extends`); the
# full size is counted on meta and runs whole in `make test-heavy`
TWINS = ROOT / "tests" / "fixtures" / "twins"
MECHANICS = [TWINS / p.name if (TWINS / p.name).exists() else p for p in SPECS]


def label(path: Path) -> str:
    """A spec's test id: its name, marked when it is a twin."""
    return f"{path.stem}-twin" if path.parent == TWINS else path.stem
# files whose tests take longest go to the workers first (make test runs a file per worker), so the
# run does not end waiting on one of them: longest first, the classic rule for balancing
SLOWEST_FIRST = ["test_train_digits.py", "test_export.py", "test_campaign_slice.py", "test_docs.py", "test_training.py",
                 "test_cpp_example.py", "test_compiler.py", "test_estimate.py", "test_resources.py"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order

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
