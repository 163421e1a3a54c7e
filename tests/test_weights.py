"""Weights: strict safetensors loading with a message per kind of mismatch; save/load round trip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import unetdsl
from unetdsl import build_model
from unetdsl.cli import main
from unetdsl.weights import WeightsError, load_weights

from .conftest import ROOT, TINY


@pytest.fixture
def weights(tmp_path: Path) -> tuple[dict[str, torch.Tensor], Path]:
    model = build_model(TINY)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return state, tmp_path / "w.safetensors"


def test_round_trip_through_save_and_load(tmp_path: Path) -> None:
    model = build_model(TINY)
    unetdsl.save(model, tmp_path / "m.safetensors")
    again = unetdsl.load(tmp_path / "m.safetensors")
    assert again.spec == model.spec
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 9])
    with torch.inference_mode():
        assert torch.equal(again(x, t), model(x, t))


def test_load_weights_fills_every_tensor(weights: tuple[dict[str, torch.Tensor], Path]) -> None:
    state, path = weights
    save_file(state, str(path))
    fresh = build_model(TINY)
    assert load_weights(fresh, path) == torch.float32
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.pop("head.conv.weight"), "missing 1 tensor(s) the model needs: head.conv.weight"),
        (lambda s: s.__setitem__("extra.weight", torch.zeros(2)),
         "1 unexpected tensor(s) the model has no place for: extra.weight"),
        (lambda s: s.__setitem__("head.conv.bias", torch.zeros(4)), "wrong shape: head.conv.bias [4] (model: [3])"),
        (lambda s: s.__setitem__("conv_in.bias", torch.full((4,), float("nan"))), "NaN or Inf: conv_in.bias"),
        (lambda s: s.__setitem__("conv_in.bias", s["conv_in.bias"].half()), "mixed floating dtypes float16, float32"),
        (lambda s: s.__setitem__("conv_in.bias", s["conv_in.bias"].long()), "wrong kind: conv_in.bias int64 (model: float32)"),
    ],
    ids=["missing", "unexpected", "shape", "nan", "mixed-dtype", "kind"],
)
def test_each_mismatch_gets_its_message(  # type: ignore[no-untyped-def]
    weights: tuple[dict[str, torch.Tensor], Path], mutate, message: str
) -> None:
    state, path = weights
    mutate(state)
    save_file(state, str(path))
    fresh = build_model(TINY)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(WeightsError) as info:
        load_weights(fresh, path)
    assert message in str(info.value)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in before.items())  # nothing partially loaded


def test_truncated_and_pickled_files_are_refused(weights: tuple[dict[str, torch.Tensor], Path], tmp_path: Path) -> None:
    state, path = weights
    save_file(state, str(path))
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(WeightsError, match="lie outside the file; the file is truncated or corrupt"):
        load_weights(build_model(TINY), truncated)
    pickled = tmp_path / "w.pt"
    torch.save(state, pickled)
    with pytest.raises(WeightsError, match="never pickles"):
        load_weights(build_model(TINY), pickled)
    with pytest.raises(WeightsError, match="no such weights file"):
        load_weights(build_model(TINY), tmp_path / "absent.safetensors")


def test_half_precision_weights_keep_their_dtype(weights: tuple[dict[str, torch.Tensor], Path]) -> None:
    state, path = weights
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(path))
    fresh = build_model(TINY)
    assert load_weights(fresh, path) == torch.float16
    assert next(fresh.parameters()).dtype == torch.float16


def test_cli_build_with_weights(weights: tuple[dict[str, torch.Tensor], Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    state, path = weights
    save_file(state, str(path))
    out = tmp_path / "m.pt"
    assert main(["build", str(ROOT / "specs" / "tiny.yaml"), "--weights", str(path), "-o", str(out)]) == 0
    from unetdsl.torchscript import load

    loaded = load(out)
    assert torch.equal(loaded.state_dict()["head.conv.weight"], state["head.conv.weight"])
    state.pop("head.conv.weight")
    save_file(state, str(path))
    assert main(["build", str(ROOT / "specs" / "tiny.yaml"), "--weights", str(path), "-o", str(tmp_path / "n.pt")]) == 1
    assert "missing 1 tensor(s)" in capsys.readouterr().err
    assert not (tmp_path / "n.pt").exists()


def test_load_needs_a_spec_in_the_metadata(weights: tuple[dict[str, torch.Tensor], Path]) -> None:
    state, path = weights
    save_file(state, str(path))
    with pytest.raises(WeightsError, match="no unetdsl spec"):
        unetdsl.load(path)


# --- loading in place: no random init, no copy -------------------------------------------------


def test_save_aligns_and_load_reads_in_place(tmp_path: Path) -> None:
    """`save` pads the header and orders the tensors so that each whole-ALIGN-sized one starts
    aligned; `load` then reads the file into one buffer and every such parameter is a view of it."""
    import json
    import struct

    from safetensors import safe_open

    from unetdsl.weights import ALIGN

    model = build_model(TINY, seed=3)
    path = unetdsl.save(model, tmp_path / "m.safetensors")
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert (8 + n) % ALIGN == 0
    starts = {k: v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}
    state = model.state_dict()
    assert all(starts[k] % ALIGN == 0 for k, v in state.items() if v.nbytes % ALIGN == 0)
    with safe_open(str(path), framework="pt") as f:  # the reference reader agrees on every tensor
        assert all(torch.equal(f.get_tensor(k), v) for k, v in state.items())

    again = unetdsl.load(path)
    storages = {p.untyped_storage().data_ptr() for p in again.parameters()}
    in_place = [p for p in again.parameters() if p.untyped_storage().nbytes() == len(raw)]
    aligned = [v for v in state.values() if v.nbytes % ALIGN == 0]
    # 1x1 conv weights are re-strided (small copies); everything else aligned is the file's bytes
    one_by_one = sum(1 for m in again.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1))
    assert len(in_place) >= len(aligned) - one_by_one > 0
    assert len(storages) <= len(state) - len(in_place) + 1
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 9])
    with torch.inference_mode():
        assert torch.equal(again(x, t), model.eval()(x, t))
    with torch.no_grad():  # the buffer is the model's: training the loaded model never writes the file
        next(again.parameters()).add_(1.0)
    assert path.read_bytes() == raw


def test_build_model_with_weights_equals_load(tmp_path: Path) -> None:
    model = build_model(TINY, seed=4)
    path = unetdsl.save(model, tmp_path / "m.safetensors")
    built = build_model(TINY, weights=path)
    assert built.training  # build_model's contract: training mode
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), model.state_dict().values(), strict=True))
    half = build_model(TINY, weights=path, dtype=torch.float16)
    assert {p.dtype for p in half.parameters()} == {torch.float16}
    with pytest.raises(ValueError, match="weights or seed, not both"):
        build_model(TINY, weights=path, seed=1)
    with pytest.raises(WeightsError, match="missing"):  # strict as ever: another spec's file
        build_model(ROOT / "specs" / "ddpm-cifar10.yaml", weights=path)


def test_files_of_other_writers_load_too(weights: tuple[dict[str, torch.Tensor], Path]) -> None:
    """safetensors' own writer packs tensors by name, so most start unaligned: those are copied
    into aligned memory (same values, and the same results as the saved model to the last bit)."""
    state, path = weights
    save_file(state, str(path))
    built = build_model(TINY, weights=path)
    assert all(torch.equal(built.state_dict()[k], v) for k, v in state.items())
    assert all(p.data_ptr() % 64 == 0 for p in built.parameters())


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_non_finite_values_are_found_in_every_float_dtype(tmp_path: Path, bad: float, dtype: torch.dtype) -> None:
    model = build_model(TINY, seed=5).to(dtype)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["encoder.0.resnets.0.conv1.weight"].view(-1)[7] = bad
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(WeightsError, match=r"NaN or Inf: encoder\.0\.resnets\.0\.conv1\.weight"):
        build_model(TINY, weights=tmp_path / "w.safetensors")


def _raw_file(tmp_path: Path, header: dict, data: bytes) -> Path:
    import json
    import struct

    raw = json.dumps(header).encode()
    path = tmp_path / "odd.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize(
    ("offsets", "message"),
    [
        ([[0, 8], [4, 12]], "overlaps the tensor before it"),  # two tensors sharing bytes would alias
        ([[0, 8], [12, 20]], "leaves 4 bytes unused before it"),
        ([[0, 8], [8, 16]], "4 bytes after the last tensor"),
    ],
    ids=["overlap", "hole", "trailing"],
)
def test_tensors_must_tile_the_data(tmp_path: Path, offsets: list[list[int]], message: str) -> None:
    header = {name: {"dtype": "F32", "shape": [2], "data_offsets": o} for name, o in zip("ab", offsets, strict=True)}
    path = _raw_file(tmp_path, header, bytes(max(o[1] for o in offsets) + (4 if message.endswith("tensor") else 0)))
    with pytest.raises(WeightsError, match=message):
        unetdsl.weights.read_tensors(path)


# --- a loaded model owns its weights (issue 22, class 4): overwriting its file in place with another
# checkpoint, or truncating it, changes nothing in a model loaded by any of the three doors
DOORS = {
    "load": lambda path: unetdsl.load(path),
    "build_model(weights=)": lambda path: build_model(TINY, weights=path).eval(),
    "load_weights": lambda path: (lambda m: (unetdsl.load_weights(m, path), m.eval())[1])(build_model(TINY, seed=9)),
}


@pytest.mark.parametrize("door", list(DOORS))
def test_a_loaded_model_never_follows_its_file(door: str, tmp_path: Path) -> None:
    first, second = build_model(TINY, seed=1).eval(), build_model(TINY, seed=2).eval()
    path = unetdsl.save(first, tmp_path / "m.safetensors")
    other = unetdsl.save(second, tmp_path / "other.safetensors")
    assert path.stat().st_size == other.stat().st_size
    loaded = DOORS[door](path)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 9])
    with torch.inference_mode():
        want = first(x, t)
        assert torch.equal(loaded(x, t), want)
        with open(path, "r+b") as fh:  # in place: same inode, same size, the other checkpoint's bytes
            fh.write(other.read_bytes())
        assert torch.equal(loaded(x, t), want)
        with open(path, "r+b") as fh:
            fh.truncate(100)
        assert torch.equal(loaded(x, t), want)


def test_truncating_the_file_of_a_loaded_model_does_not_kill_the_process(tmp_path: Path) -> None:
    """A mapped file cut short under a live model made the next forward die with SIGBUS: run in a
    child process so that a regression fails this test instead of killing the suite."""
    import subprocess
    import sys

    code = f"""
import torch, unetdsl
model = unetdsl.build_model({TINY!r}, seed=1).eval()
path = unetdsl.save(model, {str(tmp_path / "m.safetensors")!r})
loaded = unetdsl.load(path)
open(path, "r+b").truncate(0)
x = torch.randn(1, 3, 16, 16)
with torch.inference_mode():
    print(float((loaded(x, torch.tensor([3])) - model(x, torch.tensor([3]))).abs().max()))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) == 0.0


def test_a_file_that_changes_size_while_read_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unetdsl import weights

    path = unetdsl.save(build_model(TINY, seed=1), tmp_path / "m.safetensors")
    real = weights._read_range

    def shrinking(fd, view, start, end):  # the file loses its tail after read_header checked it
        os.truncate(path, start + 10)
        real(fd, view, start, end)

    monkeypatch.setattr(weights, "_read_range", shrinking)
    with pytest.raises(weights.WeightsError, match="shrank while it was read"):
        unetdsl.load(path)


@pytest.mark.parametrize("objects", [2, 10])  # the bound, scaled down: at it, and far past it
def test_a_header_of_more_objects_than_tensors_is_refused_while_parsed(objects: int, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The class inspect closed (a safetensors header of `{}`s built into millions of dicts), on the
    load path: the object count is bounded as json parses, not after."""
    import json
    import struct

    from unetdsl import weights

    monkeypatch.setattr(weights, "MAX_TENSORS", 4)  # 4 tensors: at most 6 objects (tensors, header, metadata)
    entries = {f"t{i}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i in range(objects)}
    header = json.dumps(entries).encode()
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * (4 * objects))
    if objects + 1 <= 6:
        assert len(weights.read_header(path)[0]) == objects
        return
    with pytest.raises(weights.WeightsError, match="more than 6 JSON objects"):
        weights.read_header(path)
