"""The command line: exit codes, streams, --set, help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from unetdsl.cli import main

from .conftest import ALL_SPECS, ROOT, TINY


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors and --help
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_ok_prints_ids_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", *map(str, ALL_SPECS))
    assert code == 0 and err == ""
    assert len(out.splitlines()) == len(ALL_SPECS) and all("sha256:" in line for line in out.splitlines())


def test_validate_bad_spec_exits_1_with_located_errors_on_stderr(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("{channels: 4, blocks: 1}", "{channels: 4, blocks: 1, activation: swish}"))
    good = ROOT / "specs" / "tiny.yaml"
    code, out, err = run(capsys, "validate", str(bad), str(good))
    assert code == 1
    assert f"{bad}:12:44: encoder.levels.0.activation: not an allowed value" in err
    assert "allowed: silu, gelu, gelu_tanh, relu, leaky_relu, mish or elu" in err
    assert "^" in err and "Traceback" not in err
    assert out.startswith("ok  ") and "tiny" in out  # the good one is still checked


def test_validate_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "validate", "no/such/spec.yaml")
    assert code == 1 and "cannot read spec file" in err and "Traceback" not in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "frobnicate")[0] == 2
    assert run(capsys, "validate")[0] == 2
    assert run(capsys)[0] == 2


def test_help_reads_well(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for word in ("validate", "resolve", "schema", "Exit status"):
        assert word in out
    code, out, _ = run(capsys, "validate", "--help")
    assert code == 0 and "--set PATH=VALUE" in out


def test_resolve_prints_yaml_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(ROOT / "specs" / "tiny.yaml")
    code, out, _ = run(capsys, "resolve", spec)
    assert code == 0 and "spec id v2:sha256:" in out and "decoder:" in out
    code, out, _ = run(capsys, "resolve", "--json", spec, "--set", "encoder.levels.1.channels=16")
    data = json.loads(out)
    assert data["encoder"]["levels"][1]["channels"] == 16
    assert data["decoder"]["levels"][0]["channels"] == 16  # mirrored after the override


def test_set_errors_point_at_the_override(capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(ROOT / "specs" / "tiny.yaml")
    code, _, err = run(capsys, "validate", spec, "--set", "encoder.levels.1.channels=\"16\"")
    assert code == 1
    assert "--set:1:27: encoder.levels.1.channels: wrong type" in err
    assert 'encoder.levels.1.channels="16"' in err


def test_schema_command_prints_the_committed_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    assert code == 0 and out == (ROOT / "schemas" / "unetdsl.schema.json").read_text()


def test_console_script_runs_as_a_process() -> None:
    proc = subprocess.run([sys.executable, "-m", "unetdsl.cli", "validate", str(ROOT / "specs" / "tiny.yaml")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_a_directory_is_not_read_as_yaml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "validate", str(tmp_path))
    assert code == 1 and "cannot read spec file" in err
