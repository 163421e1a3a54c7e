"""The front end never imports torch: `unetdsl validate` answers in a fraction of a second.
The figure lives in benchmarks/validate_vs_torch_import.py."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT


def test_validation_does_not_import_torch() -> None:
    code = (
        "import sys, unetdsl\n"
        "from unetdsl.cli import main\n"
        "from pathlib import Path\n"
        f"specs = sorted(str(p) for p in Path({str(ROOT / 'specs')!r}).glob('*.yaml'))\n"
        "for s in specs: unetdsl.resolve_spec(s)\n"
        "assert main(['validate', *specs]) == 0\n"
        "main(['schema'])\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'safetensors') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
