"""NVlabs/edm's DDPM++ (SongUNet, standard encoder and decoder) written in the language: the reference
fixture (tests/fixtures/reference/edm-ddpmpp.safetensors, computed by EDM's own code) loaded
through the SongUNet key mapping and reproduced in float64; the CIFAR-10 spec counted on meta; the
options it needs (stem width, residual scales, resample projection, attention placement, GroupNorm
by group size, ResBlocks taking the embedding as it is) checked where they are written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import unetdsl
from unetdsl import SpecError, build_model, resolve_spec
from unetdsl.interop.edm import EdmWeightsError, map_edm
from unetdsl.torchscript import script

from .conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "reference" / "edm-ddpmpp.safetensors"
SPEC = ROOT / "tests" / "fixtures" / "edm" / "edm-ddpmpp-tiny.yaml"


def fixture() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    t = load_file(str(FIXTURE))
    return ({k: v for k, v in t.items() if not k.startswith(("input.", "output."))},
            {k: v for k, v in t.items() if k.startswith(("input.", "output."))})


def loaded() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    weights, io = fixture()
    model = build_model(SPEC, seed=0, dtype=torch.float64).eval()
    model.load_state_dict(map_edm(weights, model.spec), strict=True)  # type: ignore[arg-type]
    return model, io


def test_the_edm_ddpmpp_fixture_is_reproduced_in_float64() -> None:
    model, io = loaded()
    assert sum(p.numel() for p in model.parameters()) == 339_595  # the fixture's count
    with torch.no_grad():
        y = model(io["input.x"], io["input.noise_labels"])
    # EDM's own output (its sinusoid frequencies a float32 island, as unetdsl's): 6.2e-13 of an output of 0.075
    assert (y - io["output.y"]).abs().max().item() <= 1e-11
    assert (y - io["output.y_all_float64"]).abs().max().item() <= 1e-11
    with torch.no_grad():  # the noise level reaches the output (the fixture's conditioning influence is 7e-5)
        swapped = model(io["input.x"], io["input.noise_labels"].flip(0))
    assert (swapped - y).abs().max().item() > 1e-6


def test_the_reproduced_edm_network_scripts_and_exports(tmp_path: Path) -> None:
    model, io = loaded()
    x, t = io["input.x"], io["input.noise_labels"]
    with torch.no_grad():
        assert (script(model)(x, t) - io["output.y"]).abs().max().item() <= 1e-11
    model = model.float()  # artifacts are float32, float16 or bfloat16
    # TorchScript: it takes EDM's float c_noise = ln(sigma) / 4 (torch.export fixes a sinusoidal t to int64
    # timesteps, diffusers' convention: EDM's noise labels there wait for the preconditioning wrapper)
    report = unetdsl.export(model, tmp_path / "edm.pt")
    assert report.max_abs_diff <= 1e-5
    from unetdsl.torchscript import load

    got = load(tmp_path / "edm.pt")(x.float(), t.float())
    assert (got.double() - io["output.y"]).abs().max().item() <= 1e-5  # float32 against EDM's float64


def test_the_cifar10_spec_counts_as_edm_on_meta() -> None:
    model = build_model(ROOT / "specs" / "edm-ddpmpp-cifar10.yaml", device="meta")
    assert sum(p.numel() for p in model.parameters()) == 55_732_739


def test_weights_the_language_cannot_compute_are_refused_by_key() -> None:
    weights, _ = fixture()
    spec, _ = resolve_spec(SPEC)
    fir = dict(weights)
    fir["enc.8x8_down.conv0.resample_filter"] = torch.full((1, 1, 4, 4), 1 / 16, dtype=torch.float64)
    with pytest.raises(EdmWeightsError, match=r"enc.8x8_down.conv0.resample_filter: .* not the outer product of "
                                              r"the spec's resample_filter \[1.0, 1.0\]"):
        map_edm(fir, spec)
    ncsn = {**weights, "enc.8x8_aux_residual.weight": torch.zeros(3)}
    with pytest.raises(EdmWeightsError, match=r"enc\.8x8_aux_residual\.weight: 'aux_residual' belongs to a residual "
                                              r"encoder, and the spec's encoder.input_pyramid is 'none': set it to "
                                              r"'residual'"):
        map_edm(ncsn, spec)
    progressive = {**weights, "dec.8x8_aux_norm.weight": torch.zeros(3)}
    with pytest.raises(EdmWeightsError, match=r"dec\.8x8_aux_norm\.weight: .* progressive decoder, and the spec's "
                                              r"decoder.output_pyramid is 'none'"):
        map_edm(progressive, spec)
    with pytest.raises(EdmWeightsError, match=r"enc\.8x8_aux_warp\.weight: 'aux_warp' is not a part of a SongUNet's "
                                              r"encoder"):
        map_edm({**weights, "enc.8x8_aux_warp.weight": torch.zeros(3)}, spec)


def test_groups_by_group_size_as_edm_counts_them() -> None:
    spec, _ = resolve_spec(SPEC)
    norm = spec.encoder[0].norm
    # min(32, C // 4): 16 -> 4, 24 -> 6, 40 -> 10, 256 -> 32 (EDM's GroupNorm)
    assert [norm.groups_for(c) for c in (16, 24, 40, 256)] == [4, 6, 10, 32]
    model = build_model(SPEC, seed=0)
    assert model.decoder[1].resnets[0].norm1.num_groups == 14  # 24 + 32 channels: 56 // 4
    assert model.encoder[0].downsample.block.conv_shortcut is not None  # resample_projection at equal channels
    assert [type(a).__name__ for a in model.decoder[1].attentions] == ["NoAttention", "NoAttention", "AttentionBlock"]


@pytest.mark.parametrize(("change", "path", "words"), [
    ({"defaults": {"norm": {"groups": 32, "min_group_size": 4, "eps": 1e-6}}, "stem": {"channels": 30}},
     ("defaults", "norm", "min_group_size"), "30 channels of"),
    ({"middle": {"blocks": 2, "attention": {"heads": 1, "placement": "last"}}}, ("middle", "attention", "placement"),
     "each and last are a level's"),
    ({"middle": {"blocks": 2, "attention": {"type": "transformer", "heads": 1, "residual_scale": 0.5}}},
     ("middle", "attention", "residual_scale"), "a setting of the self and linear attention blocks, not of transformer"),
    ({"defaults": {"norm": {"groups": "auto", "min_group_size": 4}}}, ("defaults", "norm", "min_group_size"),
     "groups: auto chooses one itself"),
    ({"defaults": {"norm": {"type": "layer", "min_group_size": 4}}}, ("defaults", "norm", "min_group_size"),
     "min_group_size applies only to norm type 'group', not 'layer'"),
])
def test_the_options_are_checked_where_written(change: dict[str, Any], path: tuple[Any, ...], words: str) -> None:
    import yaml

    data = {**yaml.safe_load(SPEC.read_text()), **change}
    if "context_dim" not in data and "transformer" in str(change):
        data["context_dim"] = 8
    with pytest.raises(SpecError) as info:
        resolve_spec(data)
    assert any(p.path[:len(path)] == path and words in p.message for p in info.value.problems), info.value.problems


def test_the_conditional_edm_ddpmpp_fixture_is_reproduced_with_label_and_augment_vectors() -> None:
    t = load_file(str(ROOT / "tests" / "fixtures" / "reference" / "edm-ddpmpp-cond.safetensors"))
    weights = {k: v for k, v in t.items() if not k.startswith(("input.", "output."))}
    model = build_model(ROOT / "tests" / "fixtures" / "edm" / "edm-ddpmpp-cond-tiny.yaml", dtype=torch.float64).eval()
    model.load_state_dict(map_edm(weights, model.spec), strict=True)  # type: ignore[arg-type]
    assert sum(p.numel() for p in model.parameters()) == 339_755
    cond = {"class_labels": t["input.class_labels"], "augment_labels": t["input.augment_labels"]}
    with torch.no_grad():
        y = model(t["input.x"], t["input.noise_labels"], cond=cond)
        # an all-zero label is EDM's "no class" (label dropout): it moves the output, as the fixture's 1.3e-4 says
        dropped = model(t["input.x"], t["input.noise_labels"], cond={**cond, "class_labels": torch.zeros(2, 10,
                                                                                                           dtype=torch.float64)})
    assert (y - t["output.y"]).abs().max().item() <= 1e-11  # measured 4.8e-13 of an output of 0.039
    assert (dropped - y).abs().max().item() > 1e-6
    groups = model.time_embedding.conditions.groups  # type: ignore[union-attr]
    assert groups[0].project.bias is not None and groups[1].project.bias is None  # map_label, map_augment


def test_the_edm_adm_fixture_is_reproduced_with_scale_shift_and_labels_after_the_mlp() -> None:
    t = load_file(str(ROOT / "tests" / "fixtures" / "reference" / "edm-adm.safetensors"))
    weights = {k: v.double() for k, v in t.items() if not k.startswith(("input.", "output."))}  # stored float32
    model = build_model(ROOT / "tests" / "fixtures" / "edm" / "edm-adm-tiny.yaml", dtype=torch.float64).eval()
    model.load_state_dict(map_edm(weights, model.spec), strict=True)  # type: ignore[arg-type]
    assert sum(p.numel() for p in model.parameters()) == 642_131
    with torch.no_grad():
        y = model(t["input.x"], t["input.noise_labels"], cond={"class_labels": t["input.class_labels"]})
    # unetdsl's attention runs in float64: the fixture's all-float64 variant to 1.4e-12; EDM's own output differs
    # from it by its float32 attention island (5.8e-11, as the fixture's README lists)
    assert (y - t["output.y_all_float64"]).abs().max().item() <= 1e-11
    assert (y - t["output.y"]).abs().max().item() <= 1e-10
