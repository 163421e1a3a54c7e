"""Preconditioning (`preconditioning: {type: edm | vp | ve}`): the denoiser D(x, sigma) = c_skip x +
c_out F(c_in x, c_noise) around the raw network. EDM's EDMPrecond fixture reproduced through the
SongUNet mapping; each kind against the formulas of Karras et al. 2022 (table 1) written out here
around the same weights built without it; exports take float sigmas; rules where written."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

import unetdsl
from unetdsl import SpecError, build_model, controlnet_from_unet, resolve_spec
from unetdsl.inspect import read_metadata
from unetdsl.interop.edm import EdmWeightsError, map_edm
from unetdsl.provenance import INPUTS_KEY
from unetdsl.torchscript import script

from .conftest import ROOT

EDM = ROOT / "tests" / "fixtures" / "edm"


def test_the_edm_precond_fixture_is_reproduced() -> None:
    t = load_file(str(ROOT / "tests" / "fixtures" / "reference" / "edm-ddpmpp-precond.safetensors"))
    weights = {k: v for k, v in t.items() if not k.startswith(("input.", "output."))}
    model = build_model(EDM / "edm-ddpmpp-precond-tiny.yaml").eval()
    model.load_state_dict(map_edm(weights, model.spec), strict=True)  # type: ignore[arg-type]  # keys under 'model.'
    x, sigma = t["input.x"], t["input.sigma"]
    with torch.no_grad():
        d = model(x, sigma)
        # float32, as EDM runs it: measured 1.2e-7 of an output of 1.7
        assert (d - t["output.D_x"]).abs().max().item() <= 1e-5
        assert (script(model)(x, sigma) - t["output.D_x"]).abs().max().item() <= 1e-5
    raw, _ = resolve_spec(EDM / "edm-ddpmpp-tiny.yaml")
    with pytest.raises(EdmWeightsError, match=r"a preconditioned network's .* give the spec the same preconditioning"):
        map_edm(weights, raw)


def formulas(kind: str, sigma: torch.Tensor, **p: float) -> tuple[torch.Tensor, ...]:
    """(c_skip, c_out, c_in, c_noise) as Karras et al. 2022, table 1, write them."""
    if kind == "edm":
        sd = p["sigma_data"]
        return (sd**2 / (sigma**2 + sd**2), sigma * sd / (sigma**2 + sd**2) ** 0.5, 1 / (sd**2 + sigma**2) ** 0.5,
                torch.log(sigma) / 4)
    if kind == "vp":
        bd, bmin, m = p["beta_d"], p["beta_min"], p["timesteps"]
        t = ((bmin**2 + 2 * bd * torch.log(1 + sigma**2)) ** 0.5 - bmin) / bd
        return torch.ones_like(sigma), -sigma, 1 / (sigma**2 + 1) ** 0.5, (m - 1) * t
    return torch.ones_like(sigma), sigma, torch.ones_like(sigma), torch.log(0.5 * sigma)


KINDS = [("edm", {"sigma_data": 0.5}), ("edm", {"sigma_data": 1.3}), ("ve", {}),
         ("vp", {"beta_d": 19.9, "beta_min": 0.1, "timesteps": 1000}), ("vp", {"beta_d": 10.0, "beta_min": 0.5, "timesteps": 50})]


def small(dims: int = 2, **extra: Any) -> dict[str, Any]:
    return {"unetdsl": 1, "name": "den", "dims": dims, "in_channels": 2, "out_channels": 2, "sample_size": 8,
            "time": {"embedding": "fourier", "features": 8, "log": False}, "defaults": {"norm": {"groups": 4}},
            "encoder": {"levels": [{"channels": 8, "blocks": 1}, {"channels": 8, "blocks": 1}]}, **extra}


@pytest.mark.parametrize(("kind", "params"), KINDS)
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_each_kind_is_its_formula_around_the_raw_network(kind: str, params: dict[str, float], dims: int) -> None:
    raw = build_model(small(dims), seed=3, dtype=torch.float64).eval()
    den = build_model(small(dims, preconditioning={"type": kind, **params}), dtype=torch.float64).eval()
    den.load_state_dict(raw.state_dict())  # the same weights, the same names
    x = torch.randn(3, 2, *[8] * dims, dtype=torch.float64)
    sigma = torch.tensor([0.002, 0.7, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = (c.reshape(3, *[1] * (dims + 1)) for c in formulas(kind, sigma, **params))
    with torch.no_grad():
        want = c_skip * x + c_out * raw(c_in * x, c_noise.reshape(3))
        got = den(x, sigma)
        assert (got - want).abs().max().item() <= 1e-12 * max(1.0, want.abs().max().item())
        one = den(x, torch.tensor(0.7, dtype=torch.float64))  # one sigma for the batch
        assert (one - den(x, torch.full((3,), 0.7, dtype=torch.float64))).abs().max().item() == 0.0
        assert (script(den)(x, sigma) - got).abs().max().item() <= 1e-12 * max(1.0, want.abs().max().item())


def test_a_denoiser_is_called_with_sigma_and_says_so() -> None:
    den = build_model(small(preconditioning={"type": "edm"}), seed=0).eval()
    x = torch.randn(2, 2, 8, 8)
    for call, words in [(lambda: den(x), "a denoiser: call model\\(x, sigma\\)"),
                        (lambda: den(x, torch.ones(3)), "got 3 noise levels for a batch of 2"),
                        (lambda: den(x, torch.ones(2, dtype=torch.complex64)), "a real number")]:
        with pytest.raises(ValueError, match=words):
            call()
    scripted = script(den)
    with pytest.raises(Exception, match="a denoiser: call model"):
        scripted(x)
    with torch.no_grad():  # integers are noise levels too (cast to float)
        assert torch.allclose(den(x, torch.tensor([1, 2])), den(x, torch.tensor([1.0, 2.0])), rtol=0, atol=0)


def test_the_denoiser_exports_with_float_sigmas(tmp_path: Path) -> None:
    den = build_model(EDM / "edm-ddpmpp-precond-tiny.yaml", seed=0).eval()
    for fmt, name in (("torchscript", "d.pt"), ("export", "d.pt2"), ("onnx", "d.onnx")):
        report = unetdsl.export(den, tmp_path / name, format=fmt)  # checked against eager at two sizes
        assert report.max_abs_diff <= 1e-5, fmt
    signature = read_metadata(tmp_path / "d.pt2")[INPUTS_KEY]
    assert "; t: float32 (B,): the noise level sigma" in signature  # (what the C++ runner reads)
    program = torch.export.load(str(tmp_path / "d.pt2")).module()
    x = torch.randn(2, 3, 16, 16)
    sigma = torch.tensor([0.01, 30.0])
    with torch.no_grad():
        assert (program(x, sigma) - den(x, sigma)).abs().max().item() <= 1e-4


def test_a_controlnet_of_a_denoiser_sees_what_its_unet_sees() -> None:
    """The ControlNet's trunk takes c_in x and c_noise as the U-Net's: with its zero convs made identities
    and a zero hint, its residuals are the U-Net's own skips (caught on the way)."""
    unet = build_model(small(preconditioning={"type": "vp"}), seed=0).eval()
    cn = controlnet_from_unet(unet, hint_channels=3, embedding=(8,), seed=1)
    with torch.no_grad():
        for conv in cn.controlnet_down_blocks:
            conv.weight.copy_(torch.eye(8).reshape(8, 8, 1, 1))
    skips: list[torch.Tensor] = []
    unet.conv_in.register_forward_hook(lambda m, a, out: skips.append(out))
    for level in unet.encoder:
        level.register_forward_hook(lambda m, a, out: skips.extend(out[1]))
    x, sigma = torch.randn(2, 2, 8, 8), torch.tensor([0.3, 9.0])
    with torch.no_grad():
        unet(x, sigma)
        residuals = cn(x, sigma, hint=torch.zeros(2, 3, 8, 8))
    assert len(residuals) == len(skips) + 1
    for got, want in zip(residuals[:-1], skips, strict=True):
        assert (got - want).abs().max().item() <= 1e-6


@pytest.mark.parametrize(("change", "path", "words"), [
    ({"model": "encoder", "out_channels": 8}, ("preconditioning",), "a model of kind 'encoder' has none"),
    ({"out_channels": 3}, ("preconditioning",), "its 3 output channels must be the 2 input channels"),
    ({"head": {"divide_by_timestep": True}}, ("head", "divide_by_timestep"), "c_out already scales the output"),
    ({"time": {"embedding": "fourier"}}, ("time", "embedding"), "fourier's log would make it NaN"),
    ({"time": {"embedding": "learned", "timesteps": 10}}, ("time", "embedding"), "indexed by integer timesteps"),
    ({"time": {"embedding": "fourier", "log": True}}, ("time", "log"), "c_noise (ln(sigma) / 4), already a log"),
    ({"preconditioning": {"type": "vp", "sigma_data": 0.5}}, ("preconditioning", "sigma_data"),
     "sigma_data is a setting of edm preconditioning, not vp"),
    ({"preconditioning": {"type": "ve", "timesteps": 10}}, ("preconditioning", "timesteps"),
     "timesteps is a setting of vp preconditioning, not ve"),
    ({"preconditioning": {"type": "edm", "sigma_data": 0}}, ("preconditioning", "sigma_data"), "out of range"),
])
def test_the_rules_are_checked_where_written(change: dict[str, Any], path: tuple[Any, ...], words: str) -> None:
    data = small(preconditioning={"type": "edm"}) | change
    with pytest.raises(SpecError) as info:
        resolve_spec(data)
    assert any(p.path[:len(path)] == path and words in p.message for p in info.value.problems), info.value.problems


def test_the_preconditioning_is_part_of_the_spec_and_its_id() -> None:
    a, _ = resolve_spec(small(preconditioning={"type": "edm"}))
    b, _ = resolve_spec(small(preconditioning={"type": "edm", "sigma_data": 0.5}))
    c, _ = resolve_spec(small(preconditioning={"type": "edm", "sigma_data": 1.0}))
    raw, _ = resolve_spec(small())
    assert a.spec_id == b.spec_id != c.spec_id != raw.spec_id
    assert a.view()["preconditioning"] == {"type": "edm", "sigma_data": 0.5}
    assert yaml.safe_dump(a.view())  # (the view is plain data)
    assert math.isclose(a.preconditioning.sigma_data, 0.5)  # type: ignore[union-attr]
