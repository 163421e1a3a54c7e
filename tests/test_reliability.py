"""Hostile inputs (issue 9): each class found by probing as an attacker gets a clear, located
answer — exit 1 with a message, never exit 3 with a trace. One test per class, several cases each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import unetdsl
from unetdsl import SpecError
from unetdsl.cli import main
from unetdsl.errors import describe
from unetdsl.frontend import resolve_spec

from .conftest import ROOT, TINY

HUGE = "9" * 5000


def problems(source: Any, overrides: Any = ()) -> list[Any]:
    with pytest.raises(SpecError) as info:
        resolve_spec(source, overrides)
    return info.value.problems


# --- 1. numbers past Python's 4,300-digit int limit ----------------------------------------------
@pytest.mark.parametrize("number", [HUGE, "0" + HUGE, "0x" + "f" * 5000, "0o" + "7" * 5000, "-" + HUGE, "1_" + HUGE])
def test_huge_numbers_in_a_file_are_located_refusals(number: str, tmp_path: Path) -> None:
    text = TINY.replace("in_channels: 3", f"in_channels: {number}")
    (p,) = problems(text)
    assert p.path == ("in_channels",) and p.location.line == 3 and p.location.col == 14
    assert "far larger than any setting allows" in p.message
    assert len(p.render()) < 1000  # the value is not echoed in full


def test_huge_numbers_through_every_door(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (p,) = problems(TINY, [f"in_channels={HUGE}"])
    assert str(p.location) == "--set:1:13"
    data = yaml.safe_load(TINY)
    data["in_channels"] = 10**5000  # a Python int of any size, through the API
    (p,) = problems(data)
    assert p.path == ("in_channels",) and "about 5001 digits" in (p.found or "")
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    with pytest.raises(SystemExit) as exit_info:
        main(["build", str(spec), "--seed", HUGE])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--seed: expected a whole number from 0 to 2^64-1" in err and HUGE[:100] not in err
    assert describe(-(10**40)) == "a whole number of about 41 digits"


# --- 2. limits that contradict each other ----------------------------------------------------------
def test_values_at_every_bound_resolve_and_round_trip() -> None:
    """A mirrored decoder level has encoder blocks + 1; a fourier default is 2 x the first channels:
    what the resolver derives from values at their maximum must pass the language's own bounds,
    and the resolved form, written out, must read back to the same spec."""
    text = """\
unetdsl: 1
name: bounds
in_channels: 1
out_channels: 1
sample_size: 16
time: {embedding: fourier}
defaults: {norm: {groups: auto}}
encoder: {levels: [{channels: 8192, blocks: 16}, {channels: 8192, blocks: 16, attention: {heads: 1024}}]}
middle: {blocks: 16}
"""
    resolved, _ = resolve_spec(text)
    assert [len(lv.blocks) for lv in resolved.decoder] == [17, 17]
    assert resolved.time is not None and resolved.time.features == 16384
    again, _ = resolve_spec(resolved.view())
    assert again.spec_id == resolved.spec_id
    model = unetdsl.build_model(text, device="meta")
    assert sum(p.numel() for p in model.parameters()) > 1e10


# --- 7. locations --------------------------------------------------------------------------------
def test_nul_bytes_and_bad_utf8_are_reported_where_they_are(tmp_path: Path) -> None:
    (p,) = problems(TINY.replace("out_channels: 3", "out_channels: 3\x00"))
    assert (p.location.line, p.location.col) == (4, 16) and "U+0000" in p.message
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(TINY.replace("name: tiny", "name: ti\xffny").encode("latin-1"))
    (p,) = problems(str(bad))
    assert (p.location.line, p.location.col) == (2, 9) and "0xff" in p.message


def test_override_problems_point_at_the_override() -> None:
    (p,) = problems(TINY, ["nosuch.path=3"])
    assert str(p.location) == "--set:1:1" and "unknown key 'nosuch'" in p.message
    (p,) = problems(TINY, ["encoder.levels.0.chanels=4"])
    assert str(p.location) == "--set:1:18" and p.hint == "did you mean 'channels'?"
    (p,) = problems(TINY, ["x=null"])
    assert str(p.location) == "--set:1:1" and "unknown key 'x'" in p.message
    (p,) = problems(TINY, ["in_channels=null"])
    assert str(p.location) == "--set:1:13" and p.found == "null"


def test_quotes_advice_only_where_unquoted_text_is_a_number() -> None:
    for text, advice in [("'3'", True), ("'３'", False), ("'1_0'", False), ("'0x10'", True), ("'x'", False)]:
        (p,) = problems(TINY.replace("in_channels: 3", f"in_channels: {text}"))
        assert (p.hint is not None and p.hint.startswith("remove the quotes")) is advice, text


# --- 8. smaller ----------------------------------------------------------------------------------
def test_a_long_value_is_echoed_briefly() -> None:
    long = "x" * 900_000
    (p,) = problems(TINY.replace("name: tiny", f"name: {long}"))
    rendered = p.render()
    assert len(rendered) < 1500 and "(900000 characters)" in rendered


def test_api_overrides_as_one_string() -> None:
    resolved, _ = resolve_spec(TINY, "in_channels=5")  # type: ignore[arg-type]
    assert resolved.in_channels == 5
    (p,) = problems(TINY, [5])
    assert "PATH=VALUE" in p.message


def test_validate_to_a_full_disk_is_an_error_not_a_trace(capfd: pytest.CaptureFixture[str]) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "unetdsl.cli", "validate", str(ROOT / "specs" / "tiny.yaml")]
    with open("/dev/full", "w") as full:
        proc = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: No space left on device (standard output)"


def test_describe_is_short_and_safe() -> None:
    assert describe("a\x1b[31mred") == "the string 'a\\x1b[31mred'"
    assert describe([1, 2]) == "a list of 2" and describe({"a": 1}) == "a mapping" and describe(None) == "null"
    assert json.loads(json.dumps(describe(float("nan")))) == "nan"


# --- 3. files unetdsl reads are data, not trusted -------------------------------------------------
def _tampered_pt(tmp_path: Path, replace: dict[str, bytes]) -> Path:
    import zipfile

    good = tmp_path / "good.pt"
    unetdsl.export(unetdsl.build_model(TINY, seed=0), good)
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as out:
        for info in src.infolist():
            key = info.filename.rsplit("/extra/", 1)[-1] if "/extra/" in info.filename else None
            out.writestr(info, replace.get(key, src.read(info.filename)) if key else src.read(info.filename))
    return bad


@pytest.mark.parametrize("stored,why", [(b"not json", "not JSON"), (b"7", "a JSON int"), (b'"/etc/passwd"', "a JSON str"),
                                        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
                                        (b'{"a":' * 40 + b"1" + b"}" * 40, "nests deeper")])
def test_inspect_refuses_a_stored_spec_that_is_not_a_mapping(stored: bytes, why: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = _tampered_pt(tmp_path, {"unetdsl/spec.json": stored})
    assert main(["inspect", str(bad)]) == 1
    assert why in capsys.readouterr().err


def test_inspect_escapes_terminal_control_sequences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _tampered_pt(tmp_path, {"unetdsl/version": b"\x1b]0;pwned\x07\x1b[31mred"})
    assert main(["inspect", str(bad)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "version: \\x1b]0;pwned\\x07\\x1b[31mred" in out


def test_inspect_reads_a_bounded_amount(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _tampered_pt(tmp_path, {"unetdsl/version": b"0" * (3 * 2**20)})  # a member larger than any we write
    assert main(["inspect", str(bad)]) == 1
    assert "not a file unetdsl wrote" in capsys.readouterr().err
    # ONNX: the graph is skipped on the wire, never decoded; a file of another kind is refused cleanly
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff" * 64)
    assert main(["inspect", str(junk)]) == 1
    folder = tmp_path / "d.pt"
    folder.mkdir()
    assert main(["inspect", str(folder)]) == 1
    assert "not a regular file" in capsys.readouterr().err


def test_inspect_reads_onnx_metadata_without_decoding_the_graph(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    import onnx
    from onnx import helper

    from unetdsl.inspect import _from_onnx

    graph = helper.make_graph([], "g", [], [])
    model = helper.make_model(graph)
    for k, v in {"unetdsl/spec_id": "sha256:x", "other": "y", "unetdsl/dtype": "float32"}.items():
        model.metadata_props.add(key=k, value=v)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert _from_onnx(path) == {"unetdsl/spec_id": "sha256:x", "unetdsl/dtype": "float32"}


def _saved(tmp_path: Path, metadata: dict[str, str] | None = None, **overrides: Any) -> Path:
    from safetensors.torch import save_file

    model = unetdsl.build_model(TINY, seed=0)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state.update(overrides)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize("stored,why", [("not json", "not JSON"), ('"/etc/passwd"', "a JSON str"), ("[1]", "a JSON list"),
                                        ('{"unetdsl": 1}', "stored spec id 'x' is not its spec's id sha256:5a6fd35ef9adbeaa"),
                                        ('{"resolved": 2, "unetdsl": 1}', "not a resolved spec: 'name': Field required")])
def test_load_treats_a_stored_spec_as_data(stored: str, why: str, tmp_path: Path) -> None:
    from unetdsl.weights import WeightsError

    with pytest.raises(WeightsError, match=why):
        unetdsl.load(_saved(tmp_path, {"unetdsl/spec.json": stored, "unetdsl/spec_id": "x"}))


def test_weights_headers_are_checked_before_any_data_is_read(tmp_path: Path) -> None:
    import struct

    import torch

    from unetdsl.weights import WeightsError, load_weights, read_header

    model = unetdsl.build_model(TINY, seed=0)
    f8 = _saved(tmp_path, **{k: v.to(torch.float8_e4m3fn) for k, v in model.state_dict().items() if v.is_floating_point()})
    with pytest.raises(WeightsError, match="has dtype 'F8_E4M3'"):
        load_weights(model, f8)
    # duplicate names: the JSON header names one tensor twice
    raw = _saved(tmp_path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = raw[8:8 + n].decode()
    first = header.index('"conv_in.bias"')
    entry_end = header.index("}", first) + 1
    dup = header[:entry_end] + "," + header[first:entry_end] + header[entry_end:]
    path = tmp_path / "dup.safetensors"
    path.write_bytes(struct.pack("<Q", len(dup)) + dup.encode() + raw[8 + n:])
    with pytest.raises(WeightsError, match=r"names tensor 'conv_in\.bias' twice"):
        read_header(path)
    # a sparse file declaring a 4 GB tensor under a name the model lacks: refused from the header
    sparse = tmp_path / "sparse.safetensors"
    meta = json.dumps({"huge": {"dtype": "F32", "shape": [2**30], "data_offsets": [0, 2**32]}}).encode()
    with open(sparse, "wb") as fh:
        fh.write(struct.pack("<Q", len(meta)) + meta)
        fh.truncate(8 + len(meta) + 2**32)
    with pytest.raises(WeightsError, match="unexpected tensor"):
        load_weights(model, sparse)


# --- 4. output paths --------------------------------------------------------------------------------
def test_outputs_never_replace_inputs_or_protected_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    weights = tmp_path / "w.safetensors"
    unetdsl.save(unetdsl.build_model(TINY, seed=0), weights)
    before = {p: p.read_bytes() for p in (spec, weights)}
    assert main(["build", str(spec), "-o", str(spec)]) == 1
    assert main(["build", str(spec), "--weights", str(weights), "-o", str(weights)]) == 1
    assert "would destroy it" in capsys.readouterr().err
    assert all(p.read_bytes() == b for p, b in before.items())
    protected = tmp_path / "ro.pt"
    protected.write_bytes(b"keep")
    os.chmod(protected, 0o444)
    assert main(["build", str(spec), "-o", str(protected)]) == 1
    assert protected.read_bytes() == b"keep"
    assert main(["build", str(spec), "-o", str(tmp_path)]) == 1
    assert main(["build", str(spec), "-o", "/dev/null"]) == 1
    err = capsys.readouterr().err
    assert "read-only" in err and "is a directory" in err and "not a regular file" in err
    with pytest.raises(unetdsl.UnetdslError, match="is a directory"):
        unetdsl.save(unetdsl.build_model(TINY), tmp_path)
    with pytest.raises(unetdsl.UnetdslError, match="is a directory"):
        unetdsl.export(unetdsl.build_model(TINY), tmp_path)


def test_convert_refuses_to_overwrite_its_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    diffusers = pytest.importorskip("diffusers")
    folder = tmp_path / "unet"
    unet = diffusers.UNet2DModel(sample_size=8, block_out_channels=(4, 8), norm_num_groups=2,
                                 down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    unet.save_pretrained(folder)
    config = (folder / "config.json").read_bytes()
    assert main(["convert", "diffusers", str(folder), "-o", str(folder / "config.json")]) == 1
    assert (folder / "config.json").read_bytes() == config
    assert main(["convert", "diffusers", str(folder), "-o", str(tmp_path / "s.yaml"), "--weights", str(tmp_path)]) == 1
    assert not (tmp_path / "s.yaml").exists()  # nothing half-written
    assert "is a directory" in capsys.readouterr().err


def test_a_live_writers_temporary_is_not_removed(tmp_path: Path) -> None:
    import subprocess
    import sys

    from unetdsl.fsutil import TMP_PREFIX, remove_stale_temporaries

    target = tmp_path / "m.pt"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = tmp_path / f"{TMP_PREFIX}m.pt.{sleeper.pid}.abc.pt"
        live.write_bytes(b"partial")
        dead = tmp_path / f"{TMP_PREFIX}m.pt.{2**22 + 12345}.abc.pt"  # above pid_max: no such process
        dead.write_bytes(b"stale")
        assert remove_stale_temporaries(target) == [dead]
        assert live.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


# --- 5. convert diffusers: wrong-typed configs, located in the config ------------------------------
@pytest.mark.parametrize("config,path,where,found", [
    ("[1, 2]", (), (1, 1), "a list of 2"),
    ('{"block_out_channels": null}', ("block_out_channels",), (1, 24), "null"),
    ('{\n  "in_channels": "3"}', ("in_channels",), (2, 18), "the string '3'"),
    ('{"block_out_channels": [[1]]}', ("block_out_channels",), (1, 24), "a list of 1"),
    ('{"down_block_types": 5}', ("down_block_types",), (1, 22), "5"),
    ('{"norm_eps": {"a": 1}}', ("norm_eps",), (1, 14), "a mapping"),
    ('{"in_channels": ' + "9" * 5000 + "}", ("in_channels",), (1, 17), None),
    ("[" * 5000 + "]" * 5000, (), (1, 33), None),
])
def test_convert_refuses_wrong_typed_configs_where_they_stand(config: str, path: tuple[Any, ...], where: tuple[int, int],
                                                               found: str | None, tmp_path: Path) -> None:
    from unetdsl.interop.diffusers import spec_from_diffusers

    (tmp_path / "config.json").write_text(config)
    with pytest.raises(SpecError) as info:
        spec_from_diffusers(tmp_path)
    (p,) = info.value.problems
    assert p.path == path and (p.location.line, p.location.col) == where
    assert p.location.source == str(tmp_path / "config.json")
    if found is not None:
        assert p.found == found


def test_convert_reports_cross_field_problems_at_the_config_key(tmp_path: Path) -> None:
    from unetdsl.interop.diffusers import spec_from_diffusers

    config = {"block_out_channels": [32, 64], "down_block_types": ["DownBlock2D", "DownBlock2D"],
              "up_block_types": ["UpBlock2D", "UpBlock2D"], "norm_num_groups": 24}
    (tmp_path / "config.json").write_text(json.dumps(config, indent=2))
    with pytest.raises(SpecError) as info:
        spec_from_diffusers(tmp_path)
    (p,) = info.value.problems
    assert p.path == ("norm_num_groups",) and p.location.line == 14  # in config.json, not in a generated YAML
    assert "does not divide" in p.message and "defaults.norm.groups" in p.message
    (tmp_path / "config.json").write_bytes(b'{"in_channels": \xff}')
    with pytest.raises(SpecError, match="not UTF-8"):
        spec_from_diffusers(tmp_path)


# --- 9. the dtype each exported input takes is stated ----------------------------------------------
def test_artifacts_state_their_input_dtypes(tmp_path: Path) -> None:
    import torch

    from unetdsl.inspect import read_metadata

    model = unetdsl.build_model(TINY, seed=0).eval()
    unetdsl.export(model, tmp_path / "m.pt")
    assert read_metadata(tmp_path / "m.pt")["unetdsl/inputs"] == \
        "x: float32 (B, 3, H, W); t: any integer or float dtype, () or (B,)"
    unetdsl.export(model, tmp_path / "m.pt2", format="export")
    assert read_metadata(tmp_path / "m.pt2")["unetdsl/inputs"] == "x: float32 (B, 3, H, W); t: int64 (B,)"
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(program(x, torch.tensor([1, 2])), model(x, torch.tensor([1, 2])), atol=1e-5)
    fourier = unetdsl.build_model(TINY.replace("embedding: sinusoidal", "embedding: fourier"), seed=0).eval()
    unetdsl.export(fourier, tmp_path / "f.pt2", format="export")
    assert read_metadata(tmp_path / "f.pt2")["unetdsl/inputs"] == "x: float32 (B, 3, H, W); t: float32 (B,)"


def test_saved_files_follow_the_umask(tmp_path: Path) -> None:
    import os

    model = unetdsl.build_model(TINY, seed=0)
    old = os.umask(0o022)
    try:
        unetdsl.save(model, tmp_path / "a.safetensors")
        os.umask(0o077)
        unetdsl.save(model, tmp_path / "b.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "a.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.safetensors").stat().st_mode & 0o777 == 0o600
