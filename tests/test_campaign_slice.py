"""A bounded slice of the reliability campaign (issue 9), so CI keeps it true: the full runs are
`benchmarks/fuzz_campaign.py` and `benchmarks/kill_test.py`, with their figures in docs/reliability.md."""

from __future__ import annotations

import importlib.util
import random
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import ROOT

pytest.importorskip("hypothesis_jsonschema")


def bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_fuzz_slice_has_no_escapes() -> None:
    fuzz = bench("fuzz_campaign")
    counts: Counter[str] = Counter()
    failures: list[str] = []
    fuzz.scalars(counts, failures, specs=[ROOT / "specs" / "tiny.yaml", ROOT / "specs" / "ddpm-digits.yaml"],
                 run_every=6)  # every value validated; every sixth accepted spec run too (~2 s each)
    fuzz.mutations(100, random.Random(1), counts, failures)
    fuzz.from_schema(60, 1, counts, failures)
    assert failures == []
    assert counts["scalar replacements"] > 1000 and counts["byte mutations"] == 100 and counts["schema specs"] == 60
    assert counts["accepted"] > 50 and counts["refused"] > 1000  # both halves exercised
    assert counts["ran, back-propagated and scripted"] >= 4
    assert counts["estimated"] == counts["ran, back-propagated and scripted"]


def test_kill_slice_never_tears_the_target(tmp_path: Path) -> None:
    kill = bench("kill_test")
    kept, landed, kills, failures = kill.campaign("torchscript", 3, random.Random(0), tmp_path, concurrent_every=3)
    assert failures == [] and kept + landed == kills == 3


def test_surface_slice_has_no_escapes() -> None:
    """A slice of benchmarks/fuzz_surface.py: extends trees (every open watched), converter configs,
    damaged archives, the training example's flags."""
    surface = bench("fuzz_surface")
    counts: Counter[str] = Counter()
    failures: list[str] = []
    surface.extends_campaign(40, random.Random(1), counts, failures)
    surface.config_campaign(400, random.Random(1), counts, failures)
    surface.flags_campaign(300, random.Random(1), counts, failures)
    assert failures == []
    assert counts["extends refused"] > 0 and counts["extends resolved"] > 0
    assert counts["configs converted"] > 0 and counts["configs refused"] > 0
    assert counts["flag lines accepted"] > 0 and counts["flag lines refused"] > 0
