from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# torch's own choice for this machine, before the workers below change it
DEFAULT_THREADS = torch.get_num_threads()


def pytest_configure(config: pytest.Config) -> None:
    # `make test` runs one xdist worker per core: each worker's torch takes its share of the cores.
    # Two workers of 2 OpenMP threads each on 2 cores spin against each other (a training step ran
    # 3.5x slower beside another worker than alone); one thread each runs both at full speed.
    # The processes a test starts (a CLI run, a docs block, torchrun, the C++ runner) take the
    # worker's share too, through OMP_NUM_THREADS, unless the test sets its own.
    torch.set_num_threads(share())
    if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
        os.environ.setdefault("OMP_NUM_THREADS", str(share()))


def share() -> int:
    """The threads a test process runs on: all of torch's default alone, its share under xdist."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    return max(1, DEFAULT_THREADS // int(workers)) if workers else DEFAULT_THREADS


@pytest.fixture(autouse=True)
def _threads_restored() -> object:
    """A test (or a module fixture it pulls in) that changes torch's thread count changes it for
    that test alone: left at 2 on a 2-worker run, every later test of the worker would spin
    against the other worker (the digits fixture once did, for the rest of its worker's run)."""
    yield
    torch.set_num_threads(share())


@pytest.fixture
def default_threads() -> object:
    """torch's default thread count for this machine for the test's duration, for claims made
    at it (oneDNN chooses kernels by thread count, so the last bits of a result can depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(DEFAULT_THREADS)
    yield DEFAULT_THREADS
    torch.set_num_threads(before)

ROOT = Path(__file__).resolve().parent.parent
ALL_SPECS = sorted((ROOT / "specs").glob("*.yaml"))
# the published full-size shapes (Stable Diffusion's U-Nets: 3.4 GB of float32 weights each; its VAE,
# whose checks would decode 512x512 images) are built on the meta device only in the suite; SPECS,
# which tests build and run for real, leaves them out
META_ONLY = {"sd15-unet", "sd2-unet", "sd-vae", "sdxl-base-unet", "controlnet-sd15", "if-stage1-shaped",
             "edm-ddpmpp-cifar10", "edm-ncsnpp-cifar10", "lucidrains-unet", "dance-diffusion"}
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
SLOWEST_FIRST = ["test_cpp_example.py", "test_campaign_slice.py", "test_docs.py", "test_export.py",
                 "test_train_digits.py", "test_training.py", "test_compiler.py", "test_estimate.py", "test_resources.py"]


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
