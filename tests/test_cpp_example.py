"""examples/cpp: a C++ program built against the libtorch inside the torch wheel runs an
exported TorchScript file and gives Python's numbers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unetdsl import build_model, export
from unetdsl.nn.layers import Conv2d, packs_for_any_shape
from unetdsl.torchscript import load

from .conftest import ROOT, TEXT_TINY, TINY

MISSING = [tool for tool in ("cmake", "g++") if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"no C++ toolchain here ({', '.join(MISSING)} missing)")


def documented_build() -> list[str]:
    """The build commands docs/deployment.md gives (its console block of `$ cmake` lines): the test
    builds with exactly those, so the documented recipe cannot drift."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    lines = [line[2:] for line in text.splitlines() if line.startswith("$ cmake ")]
    assert len(lines) == 2 and "-S examples/cpp" in lines[0] and "--build" in lines[1], lines
    return lines


@pytest.fixture(scope="module")
def run_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("cpp-build")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in documented_build():
        command = command.replace("build/cpp", str(build)).replace(".venv/bin/python", sys.executable)
        subprocess.run(command, shell=True, executable="/bin/bash", cwd=ROOT, env=env, check=True, capture_output=True)
    return build / "run_model"


@pytest.mark.parametrize(("conditional", "freeze"), [(False, False), (True, False), (True, True)],
                         ids=["unconditional", "class-conditional", "frozen"])
def test_cpp_program_matches_python(run_model: Path, tmp_path: Path, conditional: bool, freeze: bool) -> None:
    spec = TINY + ("classes: 4\n" if conditional else "")
    model = build_model(spec)
    # frozen on the CPU: libtorch's load runs the file's __setstate__, which packs the weights for oneDNN
    export(model, tmp_path / "m.pt", freeze=freeze)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 24, 16)).astype(np.float32)  # not the sample size: the file is dynamic
    t = np.array([3.0, 811.0], dtype=np.float32)
    y = np.array([1, 3], dtype=np.int64)
    x.tofile(tmp_path / "x.bin")
    t.tofile(tmp_path / "t.bin")
    y.tofile(tmp_path / "y.bin")
    args = [str(run_model), str(tmp_path / "m.pt"), str(tmp_path / "out.bin"), str(tmp_path / "x.bin"), "2,3,24,16",
            str(tmp_path / "t.bin")] + ([str(tmp_path / "y.bin")] if conditional else [])
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2,3,24,16"
    out = np.fromfile(tmp_path / "out.bin", dtype=np.float32).reshape(2, 3, 24, 16)
    scripted = load(tmp_path / "m.pt")
    with torch.inference_mode():
        ref = scripted(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(y) if conditional else None)
    np.testing.assert_allclose(out, ref.numpy(), rtol=0, atol=1e-6)


def test_cpp_program_feeds_a_text_context(run_model: Path, tmp_path: Path) -> None:
    model = build_model(TEXT_TINY)
    export(model, tmp_path / "m.pt")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 16, 8)).astype(np.float32)
    t = np.array([5.0, 900.0], dtype=np.float32)
    context = rng.standard_normal((2, 11, 16)).astype(np.float32)  # 11 tokens: not the sample's 8
    for name, a in {"x": x, "t": t, "c": context}.items():
        a.tofile(tmp_path / f"{name}.bin")
    proc = subprocess.run([str(run_model), str(tmp_path / "m.pt"), str(tmp_path / "out.bin"), str(tmp_path / "x.bin"),
                           "2,4,16,8", str(tmp_path / "t.bin"), "--context", str(tmp_path / "c.bin"), "11,16"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    out = np.fromfile(tmp_path / "out.bin", dtype=np.float32).reshape(2, 4, 16, 8)
    with torch.inference_mode():
        ref = load(tmp_path / "m.pt")(torch.from_numpy(x), torch.from_numpy(t), None, torch.from_numpy(context))
    np.testing.assert_allclose(out, ref.numpy(), rtol=0, atol=1e-6)
    # a missing context is the model's own clear error, through libtorch
    proc = subprocess.run([str(run_model), str(tmp_path / "m.pt"), str(tmp_path / "out.bin"), str(tmp_path / "x.bin"),
                           "2,4,16,8", str(tmp_path / "t.bin")], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "attends to a context of shape (B, tokens, 16)" in proc.stderr


def test_cpp_program_reports_errors(run_model: Path, tmp_path: Path) -> None:
    proc = subprocess.run([str(run_model), str(tmp_path / "absent.pt"), "o", "x", "1,3,16,16"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "run_model:" in proc.stderr
    assert subprocess.run([str(run_model)], capture_output=True, check=False).returncode == 2


# --- AOTInductor: compiled once for the module (about a minute on 2 cores) ---------------------


@pytest.fixture(scope="module")
def aoti_package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    model = build_model(TINY + "classes: 4\n", seed=7)
    path = tmp_path_factory.mktemp("aoti") / "m.aoti.pt2"
    report = export(model, path, format="aoti")
    # export checked the reloaded package at the sample size and at a second batch and size
    assert [shape for shape, _ in report.checks] == [[2, 3, 16, 16], [3, 3, 4, 4]]
    assert report.max_abs_diff < 1e-4
    return path, model.eval()


@pytest.mark.slow
def test_cpp_program_runs_an_aoti_package(run_model: Path, aoti_package: tuple[Path, torch.nn.Module],
                                          tmp_path: Path) -> None:
    path, model = aoti_package
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 3, 24, 16)).astype(np.float32)  # another batch and size: the package is dynamic
    t = np.array([3.0, 811.0, 40.0], dtype=np.float32)  # cast to the int64 the package takes
    y = np.array([1, 3, 0], dtype=np.int64)
    for name, a in {"x": x, "t": t, "y": y}.items():
        a.tofile(tmp_path / f"{name}.bin")
    proc = subprocess.run([str(run_model), str(path), str(tmp_path / "out.bin"), str(tmp_path / "x.bin"), "3,3,24,16",
                           str(tmp_path / "t.bin"), str(tmp_path / "y.bin")], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "3,3,24,16"
    out = np.fromfile(tmp_path / "out.bin", dtype=np.float32).reshape(3, 3, 24, 16)
    with torch.inference_mode():
        eager = model(torch.from_numpy(x), torch.from_numpy(t).long(), torch.from_numpy(y))
        packaged = torch._inductor.aoti_load_package(str(path))(torch.from_numpy(x), torch.from_numpy(t).long(),
                                                                torch.from_numpy(y))
    np.testing.assert_allclose(out, packaged.numpy(), rtol=0, atol=1e-6)  # the same compiled code, from C++
    np.testing.assert_allclose(out, eager.numpy(), rtol=0, atol=1e-4)
    # a package takes exactly the inputs it was exported with, and says which
    proc = subprocess.run([str(run_model), str(path), str(tmp_path / "out.bin"), str(tmp_path / "x.bin"), "3,3,24,16",
                           str(tmp_path / "t.bin")], capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "this package's inputs are: x: float32 (B, 3, H, W); t: int64 (B,); y: int64 (B,)" \
        in proc.stderr


@pytest.mark.slow
def test_aoti_package_provenance_is_read_without_loading_it(aoti_package: tuple[Path, torch.nn.Module],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from unetdsl.cli import main

    path, model = aoti_package
    assert main(["inspect", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "format: aoti" in shown and f"spec_id: {model.spec.spec_id}" in shown  # type: ignore[union-attr]
    assert "compiled_for: linux x86_64 cpu, CPU ISA " in shown  # the package runs on such machines only
    assert "forward: forward(x, t, y)" in shown
    # the package takes any size, and still its weights larger than 1x1 were packed when compiled
    # (inductor packs only for static sizes: unetdsl.aoti_packing), as eager packs them
    larger = sum(isinstance(m, Conv2d) and packs_for_any_shape(m.kernel_size) for m in model.modules())
    assert larger > 0 and f"aoti: frozen; {larger} convolution weights packed for oneDNN at compile time" in shown
    # compiled in too, for C++ loaders (AOTIModelPackageLoader::get_metadata)
    compiled = torch._inductor.aoti_load_package(str(path)).get_metadata()
    assert compiled["unetdsl/spec_id"] == model.spec.spec_id  # type: ignore[union-attr]
    assert compiled["unetdsl/format"] == "aoti"
