"""diffusers' vector conditions of UNet2DConditionModel, written as unetdsl `conditions`: SDXL's
addition_embed_type text_time (added_cond_kwargs text_embeds and time_ids) and the class_embed_type
values (timestep, identity, projection, simple_projection). Small perturbed configs of each, the same
weights both ways, outputs to 1e-5 in float32, eager and scripted; SDXL base counted on meta."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from unetdsl import build_model
from unetdsl.interop.diffusers import from_diffusers, spec_from_diffusers, to_diffusers
from unetdsl.torchscript import script

from .conftest import ROOT
from .test_interop_diffusers_condition import SMALL, THREE, make, to_diffusers_meta

diffusers = pytest.importorskip("diffusers")
logging.getLogger("diffusers").setLevel(logging.ERROR)

TEXT_TIME = dict(addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=10 + 6 * 8)  # text_embeds of 10, 6 time_ids
CONFIGS: dict[str, dict[str, Any]] = {
    "sdxl-text-time": {**SMALL, **THREE, **TEXT_TIME, "transformer_layers_per_block": [1, 2, 2],
                       "attention_head_dim": [1, 2, 4], "use_linear_projection": True},
    "text-time-flip-shift": {**SMALL, **TEXT_TIME, "flip_sin_to_cos": False, "freq_shift": 1},
    "class-timestep": {**SMALL, "class_embed_type": "timestep", "act_fn": "gelu"},
    "class-identity": {**SMALL, "class_embed_type": "identity"},
    "class-projection": {**SMALL, "class_embed_type": "projection", "projection_class_embeddings_input_dim": 7},
    "class-simple-projection": {**SMALL, "class_embed_type": "simple_projection",
                                "projection_class_embeddings_input_dim": 7},
    "class-and-text-time": {**SMALL, **TEXT_TIME, "class_embed_type": "projection"},
}


def call(config: dict[str, Any]) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor], dict[str, Any]]:
    """(x, t, context), our `cond`, and diffusers' keyword arguments for the same call."""
    g = torch.Generator().manual_seed(1)
    size = config["sample_size"]
    x = torch.randn((3, 4, size, size), generator=g)
    t = torch.tensor([0, 250, 999])
    context = torch.randn((3, 5, config["cross_attention_dim"]), generator=g)
    cond: dict[str, torch.Tensor] = {}
    theirs: dict[str, Any] = {}
    kind = config.get("class_embed_type")
    if kind is not None:
        width = {"timestep": None, "identity": 4 * config["block_out_channels"][0]}.get(
            kind, config.get("projection_class_embeddings_input_dim"))
        cond["class_labels"] = (torch.tensor([3.0, 40.0, 999.0]) if width is None
                                else torch.randn((3, width), generator=g))
        theirs["class_labels"] = cond["class_labels"]
    if config.get("addition_embed_type"):
        text = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
        cond["text_embeds"] = torch.randn((3, text), generator=g)
        cond["time_ids"] = torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024], [512, 768, 16, 32, 512, 768],
                                         [64, 64, 0, 8, 96, 96]])
        theirs["added_cond_kwargs"] = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}
    return (x, t, context), cond, theirs


@pytest.mark.parametrize("name", list(CONFIGS))
def test_conditions_match_diffusers_eager_scripted_and_back(name: str) -> None:
    config = CONFIGS[name]
    unet = make(config)
    model = from_diffusers(unet)
    (x, t, context), cond, theirs = call(config)
    with torch.no_grad():  # (in-process scripted: no_grad; see test_torchscript.py)
        want = unet(x, t, encoder_hidden_states=context, **theirs).sample
        got = model(x, t, None, context, cond)
        scripted = script(model)(x, t, None, context, cond)
        back = to_diffusers(model)(x, t, encoder_hidden_states=context, **theirs).sample
    assert want.abs().max() > 0.1
    assert (got - want).abs().max().item() <= 1e-5
    assert (scripted - want).abs().max().item() <= 1e-5
    assert (back - want).abs().max().item() <= 1e-5


def test_the_conditions_change_the_output() -> None:
    # a mapping that dropped a condition group would still match where the group's output is small
    model = from_diffusers(make(CONFIGS["class-and-text-time"]))
    (x, t, context), cond, _ = call(CONFIGS["class-and-text-time"])
    with torch.no_grad():
        base = model(x, t, None, context, cond)
        for key in cond:
            moved = model(x, t, None, context, {**cond, key: cond[key] + 1.0})
            assert (moved - base).abs().max() > 1e-3, key


def test_the_sdxl_config_reads_as_written_conditions() -> None:
    spec = spec_from_diffusers({"_class_name": "UNet2DConditionModel", **CONFIGS["sdxl-text-time"]})
    (group,) = spec.conditions  # type: ignore[misc]
    assert [(i.name, i.width, i.sinusoid) for i in group.inputs] == [("text_embeds", 10, None), ("time_ids", 6, 8)]
    assert group.project == "mlp"
    refiner = spec_from_diffusers({"_class_name": "UNet2DConditionModel", **CONFIGS["sdxl-text-time"]}, time_ids=5)
    assert [(i.name, i.width) for i in refiner.conditions[0].inputs] == [("text_embeds", 18), ("time_ids", 5)]  # type: ignore[index]


def test_sdxl_base_counts_exactly_on_meta() -> None:
    model = build_model(ROOT / "specs" / "sdxl-base-unet.yaml", device="meta")
    assert sum(p.numel() for p in model.parameters()) == 2_567_463_684
    group = model.time_embedding.conditions.groups[0]  # type: ignore[union-attr,index]
    assert sum(p.numel() for p in group.parameters()) == 5_245_440  # Linear(2816, 1280), SiLU, Linear(1280, 1280)
    assert sum(p.numel() for p in to_diffusers_meta(model).parameters()) == 2_567_463_684


def test_cli_converts_a_refiner_shaped_folder_with_its_time_ids(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from unetdsl.cli import main
    from unetdsl.torchscript import load

    config = {**CONFIGS["text-time-flip-shift"], "projection_class_embeddings_input_dim": 12 + 5 * 8}  # 5 ids
    unet = make(config)
    unet.save_pretrained(tmp_path / "unet")
    spec, weights, out = tmp_path / "spec.yaml", tmp_path / "w.safetensors", tmp_path / "m.pt"
    folder = str(tmp_path / "unet")
    assert main(["convert", "diffusers", folder, "-o", str(spec), "--time-ids", "5", "--weights", str(weights)]) == 0
    assert "{name: time_ids, width: 5, sinusoid: 8}" in spec.read_text()
    assert main(["build", str(spec), "--weights", str(weights), "-o", str(out)]) == 0  # checked with its cond
    (x, t, context), _, _ = call(config)
    text, ids = torch.randn(3, 12), torch.tensor([[1024.0, 1024, 0, 0, 6.0]] * 3)
    with torch.no_grad():
        want = unet(x, t, encoder_hidden_states=context, added_cond_kwargs={"text_embeds": text, "time_ids": ids}).sample
        got = load(out)(x, t, None, context, {"text_embeds": text, "time_ids": ids})
    assert (got - want).abs().max().item() <= 1e-5
    for bad in ("0", "x", "-1"):
        with pytest.raises(SystemExit) as info:
            main(["convert", "diffusers", folder, "-o", str(tmp_path / "s2.yaml"), "--time-ids", bad])
        assert info.value.code == 2 and "--time-ids" in capsys.readouterr().err


@pytest.mark.parametrize("cls", ["UNet1DModel", "Transformer2DModel", "UNet3DConditionModel"])
def test_a_class_not_converted_is_one_problem_naming_it(cls: str) -> None:
    from unetdsl import SpecError

    config = {"_class_name": cls, "down_block_types": 3, "block_out_channels": "x", "conditioning_channels": 3}
    with pytest.raises(SpecError) as info:
        spec_from_diffusers(config)
    (problem,) = info.value.problems  # the class, not a flood about keys that belong to another class
    assert problem.path == ("_class_name",) and f"'{cls}' is not a class unetdsl converts" in problem.message
    assert problem.allowed == "UNet2DModel, UNet2DConditionModel, AutoencoderKL, ControlNetModel"
