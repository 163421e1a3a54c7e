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


# --- conditions, a ControlNet, and the pair ------------------------------------------------------
SDXL_TWIN = ROOT / "tests" / "fixtures" / "twins" / "sdxl-base-unet.yaml"


def write(tmp_path: Path, arrays: dict[str, np.ndarray]) -> dict[str, str]:
    for name, a in arrays.items():
        a.tofile(tmp_path / f"{name}.bin")
    return {name: str(tmp_path / f"{name}.bin") for name in arrays}


def test_cpp_program_feeds_named_conditions_to_an_sdxl_shaped_unet(run_model: Path, tmp_path: Path) -> None:
    model = build_model(SDXL_TWIN, seed=3)
    export(model, tmp_path / "m.pt")
    rng = np.random.default_rng(4)
    a = {"x": rng.standard_normal((2, 4, 16, 24)).astype(np.float32), "t": np.array([7.0, 640.0], dtype=np.float32),
         "c": rng.standard_normal((2, 9, 32)).astype(np.float32),
         "text": rng.standard_normal((2, 16)).astype(np.float32),
         "ids": np.array([[512, 512, 0, 0, 512, 512], [768, 1024, 64, 0, 1024, 1024]], dtype=np.float32)}
    f = write(tmp_path, a)
    # the conditions in another order than the spec's: by name
    command = [str(run_model), str(tmp_path / "m.pt"), str(tmp_path / "out.bin"), f["x"], "2,4,16,24", f["t"],
               "--context", f["c"], "9,32", "--cond", "time_ids", f["ids"], "6", "--cond", "text_embeds", f["text"], "16"]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    out = np.fromfile(tmp_path / "out.bin", dtype=np.float32).reshape(2, 4, 16, 24)
    with torch.no_grad():
        ref = load(tmp_path / "m.pt")(torch.from_numpy(a["x"]), torch.from_numpy(a["t"]), None, torch.from_numpy(a["c"]),
                                     {"text_embeds": torch.from_numpy(a["text"]), "time_ids": torch.from_numpy(a["ids"])})
    np.testing.assert_allclose(out, ref.numpy(), rtol=0, atol=1e-5)
    # a missing condition is the model's own clear error, through libtorch
    proc = subprocess.run(command[:-4], capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "time_ids" in proc.stderr and "text_embeds" in proc.stderr


def controlnet_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    from .test_controlnet import CONTROLNET, perturbed

    spec = {**CONTROLNET, "conditions": [{"inputs": [{"name": "pooled", "width": 5}]}]}
    cn = perturbed(build_model(spec, seed=0))
    unet = perturbed(build_model(cn.spec.controlled(), seed=1), seed=1)  # type: ignore[union-attr,operator]
    return cn, unet


def pair_inputs(tmp_path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    rng = np.random.default_rng(5)
    a = {"x": rng.standard_normal((3, 4, 16, 8)).astype(np.float32), "t": np.array([1.0, 50.0, 999.0], np.float32),
         "c": rng.standard_normal((3, 6, 16)).astype(np.float32), "p": rng.standard_normal((3, 5)).astype(np.float32),
         "h": rng.uniform(-1, 1, (3, 3, 32, 16)).astype(np.float32)}
    return a, write(tmp_path, a)


def test_cpp_program_runs_a_controlnet_and_the_pair(run_model: Path, tmp_path: Path) -> None:
    cn, unet = controlnet_pair()
    export(cn, tmp_path / "cn.pt")
    export(unet, tmp_path / "unet.pt")
    a, f = pair_inputs(tmp_path)
    common = [f["x"], "3,4,16,8", f["t"], "--context", f["c"], "6,16", "--cond", "pooled", f["p"], "5",
              "--hint", f["h"], "3,32,16", "--scale", "0.5"]
    x, t, c, p, h = (torch.from_numpy(a[k]) for k in "xtcph")
    with torch.no_grad():
        residuals = cn(x, t, context=c, cond={"pooled": p}, hint=h, scale=0.5)
        want = unet(x, t, context=c, cond={"pooled": p}, residuals=residuals)
    # the ControlNet alone: its residuals one after another, each shape on a line
    proc = subprocess.run([str(run_model), str(tmp_path / "cn.pt"), str(tmp_path / "res.bin"), *common],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    shapes = [list(map(int, line.split(","))) for line in proc.stdout.split()]
    assert shapes == [list(r.shape) for r in residuals]
    flat = np.fromfile(tmp_path / "res.bin", dtype=np.float32)
    np.testing.assert_allclose(flat, torch.cat([r.reshape(-1) for r in residuals]).numpy(), rtol=0, atol=1e-5)
    # the pair: the ControlNet's residuals into the U-Net, in C++
    proc = subprocess.run([str(run_model), str(tmp_path / "unet.pt"), str(tmp_path / "out.bin"), *common,
                           "--controlnet", str(tmp_path / "cn.pt")], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    out = np.fromfile(tmp_path / "out.bin", dtype=np.float32).reshape(3, 4, 16, 8)
    np.testing.assert_allclose(out, want.numpy(), rtol=0, atol=1e-5)
    with torch.no_grad():
        assert (want - unet(x, t, context=c, cond={"pooled": p})).abs().max() > 1e-3  # the residuals count
    # the residuals from a file instead: the ControlNet run's output, with its shapes
    spec = ";".join(",".join(map(str, r.shape[1:])) for r in residuals)
    proc = subprocess.run([str(run_model), str(tmp_path / "unet.pt"), str(tmp_path / "out2.bin"), *common[:10],
                           "--residuals", str(tmp_path / "res.bin"), spec], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.fromfile(tmp_path / "out2.bin", dtype=np.float32).reshape(3, 4, 16, 8), want.numpy(),
                               rtol=0, atol=1e-5)
    proc = subprocess.run([str(run_model), str(tmp_path / "unet.pt"), str(tmp_path / "out2.bin"), *common[:10],
                           "--residuals", str(tmp_path / "res.bin"), spec.rsplit(";", 1)[0]], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 1 and "longer than the residuals' shapes say" in proc.stderr
    # a hint given to a U-Net alone is refused, naming what the model takes
    proc = subprocess.run([str(run_model), str(tmp_path / "unet.pt"), str(tmp_path / "out.bin"), *common],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "--hint is a ControlNet's input" in proc.stderr


@pytest.mark.inductor
def test_cpp_program_runs_an_aoti_controlnet_pair(run_model: Path, tmp_path: Path) -> None:
    cn, unet = controlnet_pair()
    export(cn, tmp_path / "cn.aoti.pt2", format="aoti")
    export(unet, tmp_path / "unet.aoti.pt2", format="aoti", residuals=True)
    a, f = pair_inputs(tmp_path)
    x, t, c, p, h = (torch.from_numpy(a[k]) for k in "xtcph")
    with torch.no_grad():
        want = unet(x, t, context=c, cond={"pooled": p},
                    residuals=cn(x, t, context=c, cond={"pooled": p}, hint=h, scale=0.5))
    proc = subprocess.run([str(run_model), str(tmp_path / "unet.aoti.pt2"), str(tmp_path / "out.bin"), f["x"], "3,4,16,8",
                           f["t"], "--context", f["c"], "6,16", "--cond", "pooled", f["p"], "5", "--hint", f["h"],
                           "3,32,16", "--scale", "0.5", "--controlnet", str(tmp_path / "cn.aoti.pt2")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    out = np.fromfile(tmp_path / "out.bin", dtype=np.float32).reshape(3, 4, 16, 8)
    np.testing.assert_allclose(out, want.numpy(), rtol=0, atol=1e-4)
