"""ControlNet (`model: controlnet`): the language, the model, the U-Net's residuals, the helper that
starts one from a U-Net, diffusers' ControlNetModel both ways (perturbed weights, 1e-5 in float32, the
pair against UNet2DConditionModel's down/mid additional residuals), SD 1.5's ControlNet counted on
meta, and the artifacts (TorchScript, torch.export, ONNX) checked on non-zero residuals."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

import unetdsl
from unetdsl import SpecError, build_model, controlnet_from_unet, resolve_spec, torchscript
from unetdsl.interop.diffusers import from_diffusers, spec_from_diffusers, to_diffusers
from unetdsl.sample import sample_inputs
from unetdsl.torchscript import script

from .conftest import ROOT

diffusers = pytest.importorskip("diffusers")
logging.getLogger("diffusers").setLevel(logging.ERROR)

TEXT_TINY = (ROOT / "specs" / "text-tiny.yaml").read_text()
# text-tiny's U-Net (two levels, transformers attending to a 16-wide context) with a two-stage hint embedding
CONTROLNET = {"unetdsl": 1, "name": "cn-tiny", "model": "controlnet", "in_channels": 4, "out_channels": 4,
              "sample_size": 8, "context_dim": 16, "time": {"embedding": "sinusoidal", "features": 32},
              "defaults": {"norm": {"groups": 8}},
              "encoder": {"levels": [{"channels": 32, "blocks": 2},
                                     {"channels": 64, "blocks": 1, "attention": {"type": "transformer", "heads": 2}}]},
              "middle": {"attention": {"type": "transformer", "heads": 2}},
              "controlnet": {"hint_channels": 3, "embedding": [8, 16]}}
# diffusers' ControlNetModel and the UNet2DConditionModel it controls, small
SMALL: dict[str, Any] = dict(block_out_channels=(16, 32), norm_num_groups=8, layers_per_block=1,
                             cross_attention_dim=12, attention_head_dim=2,
                             down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"))
HINT = dict(conditioning_embedding_out_channels=(8, 16))


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every tensor moved off its initial value: zero convs (all zeros) would hide any mistake."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def close(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    assert [list(g.shape) for g in got] == [list(w.shape) for w in want]
    return max((g - w).abs().max().item() for g, w in zip(got, want, strict=True))


# --- the language --------------------------------------------------------------------------------
def test_a_controlnet_is_its_unet_trunk_with_a_hint_and_one_residual_per_skip() -> None:
    spec, _ = resolve_spec(CONTROLNET)
    # skips as a U-Net makes them: the stem (32), encoder 0's two blocks and downsample (32), encoder 1's block
    # (64); then the middle's output (64)
    assert spec.residual_channels == [32, 32, 32, 32, 64, 64]
    assert spec.controlnet is not None and spec.controlnet.hint_factor == 2 and spec.hint_size == [16, 16]
    model = build_model(spec, seed=0).eval()
    assert type(model).__name__ == "ControlNet" and not hasattr(model.head, "conv")
    s = sample_inputs(spec)
    assert s.hint is not None and list(s.hint.shape) == [2, 3, 16, 16]
    with torch.no_grad():
        out = model(*s.args(), scale=0.5)
    assert [list(o.shape) for o in out] == [[2, 32, 8, 8]] * 3 + [[2, 32, 4, 4], [2, 64, 4, 4], [2, 64, 4, 4]]
    assert all(not o.any() for o in out)  # zero convs: a new ControlNet changes nothing
    # the controlled U-Net is the same spec as a U-Net: its skips are what the residuals are added to
    unet = build_model(spec.controlled(), seed=0)
    assert spec.controlled().model == "unet" and type(unet).__name__ == "UNet"


def test_the_sd15_controlnet_counts_exactly_on_meta() -> None:
    model = build_model(ROOT / "specs" / "controlnet-sd15.yaml", device="meta")
    assert sum(p.numel() for p in model.parameters()) == 361_279_120
    assert len(model.spec.residual_channels) == 13 and model.spec.hint_size == [512, 512]  # type: ignore[union-attr]
    with torch.device("meta"):  # diffusers' own count of the same config
        theirs = diffusers.ControlNetModel(cross_attention_dim=768)
    assert sum(p.numel() for p in theirs.parameters()) == 361_279_120


@pytest.mark.parametrize(("change", "path", "words"), [
    ({"controlnet": None}, ("controlnet",), "the controlnet section is required"),
    ({"model": "unet"}, ("controlnet",), "belongs to model: controlnet"),
    ({"time": None}, ("time",), "a ControlNet is conditioned on the timestep"),
    ({"latent": {"channels": 4, "scaling_factor": 1.0}}, ("latent",), "has no latent section"),
])
def test_misplaced_sections_are_refused_where_they_are(change: dict[str, Any], path: tuple[str, ...],
                                                       words: str) -> None:
    data = {k: v for k, v in {**CONTROLNET, **change}.items() if v is not None}
    with pytest.raises(SpecError) as info:
        resolve_spec(data)
    assert any(p.path == path and words in p.message for p in info.value.problems), info.value.problems


def test_the_hint_embedding_widths_are_bounded() -> None:
    for bad in ([], [0, 8], list(range(1, 18))):
        with pytest.raises(SpecError) as info:
            resolve_spec({**CONTROLNET, "controlnet": {"embedding": bad}})
        assert info.value.problems[0].path[:2] == ("controlnet", "embedding")
    assert resolve_spec({**CONTROLNET, "controlnet": {"embedding": list(range(1, 17))}})[0].controlnet is not None


def test_a_controlnet_spec_extends_the_unet_it_controls(tmp_path: Path) -> None:
    (tmp_path / "text-tiny.yaml").write_text(TEXT_TINY)
    (tmp_path / "cn.yaml").write_text("unetdsl: 1\nextends: text-tiny.yaml\nname: cn\nmodel: controlnet\n"
                                      "controlnet: {embedding: [8]}\n")
    spec, _ = resolve_spec(tmp_path / "cn.yaml")
    base, _ = resolve_spec(tmp_path / "text-tiny.yaml")
    assert spec.controlnet is not None and spec.controlnet.hint_channels == 3 and spec.hint_size == [16, 16]
    assert spec.controlled().spec_id == base.spec_id  # the U-Net it controls, exactly


# --- the model and the U-Net's residuals ---------------------------------------------------------------
def test_the_unet_adds_each_residual_to_its_skip_and_the_last_to_the_middle() -> None:
    spec, _ = resolve_spec(CONTROLNET)
    unet = build_model(spec.controlled(), seed=0).eval()
    s = sample_inputs(spec)
    g = torch.Generator().manual_seed(3)
    res = [torch.randn(2, c, *([8 // (2 if i >= 3 else 1)] * 2), generator=g)
           for i, c in enumerate(spec.residual_channels)]
    res[-1] = torch.randn(2, 64, 4, 4, generator=g)
    with torch.no_grad():
        plain = unet(s.x, s.t, context=s.context)
        zero = unet(s.x, s.t, context=s.context, residuals=[torch.zeros_like(r) for r in res])
        added = unet(s.x, s.t, context=s.context, residuals=res)
        # by hand: the middle's residual alone is the middle's output moved, nothing else
        seen: dict[str, torch.Tensor] = {}
        handle = unet.middle.register_forward_hook(lambda m, a, out: seen.update(mid=out))
        unet(s.x, s.t, context=s.context)
        handle.remove()
        only_mid = [torch.zeros_like(r) for r in res[:-1]] + [res[-1]]
        moved = {}
        handle = unet.decoder[0].register_forward_pre_hook(lambda m, a: moved.update(h=a[0]))
        unet(s.x, s.t, context=s.context, residuals=only_mid)
        handle.remove()
    assert torch.equal(plain, zero) and (added - plain).abs().max() > 1e-3
    assert torch.allclose(moved["h"], seen["mid"] + res[-1], atol=1e-6)


@pytest.mark.parametrize("scripted", [False, True])
def test_wrong_residuals_and_hints_are_clear_errors_also_from_scripted_code(scripted: bool) -> None:
    spec, _ = resolve_spec(CONTROLNET)
    cn, unet = build_model(spec, seed=0).eval(), build_model(spec.controlled(), seed=0).eval()
    if scripted:
        cn, unet = script(cn), script(unet)
    s = sample_inputs(spec)
    with torch.no_grad():
        res = cn(s.x, s.t, context=s.context, hint=s.hint)
        cases = [
            (lambda: unet(s.x, s.t, None, s.context, None, res[:-1]), "takes 6 residuals (one per skip"),
            (lambda: unet(s.x, s.t, None, s.context, None, [*res[:2], res[4], *res[3:]]),
             "residual 2 should have shape [2, 32, 8, 8]"),
            (lambda: unet(s.x, s.t, None, s.context, None, [*res[:-1], res[0]]), "the last residual (the middle's)"),
            (lambda: cn(s.x, s.t, None, s.context, None), "takes a hint image of shape [2, 3, 16, 16]"),
            (lambda: cn(s.x, s.t, None, s.context, None, s.hint[..., :8]), "expected a hint of shape [2, 3, 16, 16]"),
        ]
        for call, words in cases:
            with pytest.raises(Exception, match=None) as info:
                call()
            assert words in str(info.value)


def test_only_a_unet_takes_residuals() -> None:
    encoder = build_model({"unetdsl": 1, "name": "e", "model": "encoder", "in_channels": 3, "out_channels": 4,
                           "sample_size": 8, "encoder": {"levels": [{"channels": 8}, {"channels": 8}]},
                           "defaults": {"norm": {"groups": 4}}})
    with pytest.raises(ValueError, match="only a U-Net takes residuals"):
        encoder(torch.randn(1, 3, 8, 8), residuals=[torch.zeros(1)])


def test_controlnet_from_unet_copies_the_trunk_and_changes_nothing_yet() -> None:
    config = {**SMALL, "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"), "sample_size": 8}
    theirs_unet = perturbed(diffusers.UNet2DConditionModel(**config))
    unet = from_diffusers(theirs_unet)
    cn = controlnet_from_unet(unet, embedding=(8, 16), seed=0)
    assert cn.spec.controlled().spec_id == unet.spec.spec_id and not cn.training  # type: ignore[union-attr]
    theirs = diffusers.ControlNetModel.from_unet(theirs_unet, conditioning_embedding_out_channels=(8, 16))
    ours_as_theirs = to_diffusers(cn).state_dict()
    for name, tensor in theirs.state_dict().items():  # the trunk copied, the zero convs zero (the hint is drawn)
        if not name.startswith("controlnet_cond_embedding.") or name.startswith("controlnet_cond_embedding.conv_out"):
            assert torch.equal(ours_as_theirs[name], tensor), name
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), torch.randn(2, 5, 12)
    with torch.no_grad():
        res = cn(x, t, context=ctx, hint=torch.rand(2, 3, 16, 16))
        assert torch.equal(unet(x, t, context=ctx, residuals=res), unet(x, t, context=ctx))
    with pytest.raises(ValueError, match="takes a U-Net"):
        controlnet_from_unet(cn)


# --- diffusers both ways -----------------------------------------------------------------------------
CONFIGS: dict[str, dict[str, Any]] = {
    "sd15-like": {**SMALL, **HINT},
    "three-levels-linear": {**SMALL, **HINT, "block_out_channels": (16, 32, 32), "attention_head_dim": [1, 2, 4],
                            "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                            "use_linear_projection": True, "transformer_layers_per_block": [1, 2, 1],
                            "conditioning_embedding_out_channels": (8, 16, 16), "conditioning_channels": 1},
    "sdxl-like": {**SMALL, **HINT, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
                  "projection_class_embeddings_input_dim": 10 + 6 * 8, "layers_per_block": 2},
}


def diffusers_call(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same call both ways: diffusers' keyword arguments and unetdsl's."""
    g = torch.Generator().manual_seed(1)
    factor = 2 ** (len(config["conditioning_embedding_out_channels"]) - 1)
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([5, 901])
    ctx = torch.randn(2, 7, config["cross_attention_dim"], generator=g)
    hint = torch.rand(2, config.get("conditioning_channels", 3), 8 * factor, 8 * factor, generator=g)
    cond = None
    if config.get("addition_embed_type"):
        cond = {"text_embeds": torch.randn(2, 10, generator=g),
                "time_ids": torch.randint(0, 1024, (2, 6), generator=g).float()}
    theirs = dict(sample=x, timestep=t, encoder_hidden_states=ctx, controlnet_cond=hint, conditioning_scale=0.7,
                  added_cond_kwargs=cond, return_dict=False)
    return theirs, dict(x=x, t=t, context=ctx, cond=cond, hint=hint, scale=0.7)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_controlnets_match_diffusers_both_ways_eager_and_scripted(name: str) -> None:
    config = CONFIGS[name]
    theirs = perturbed(diffusers.ControlNetModel(**config))
    ours = from_diffusers(theirs)
    assert ours.spec.model == "controlnet"  # type: ignore[union-attr]
    theirs_args, our_args = diffusers_call(config)
    with torch.no_grad():
        down, mid = theirs(**theirs_args)
        want = [*down, mid]
        assert close(ours(**our_args), want) <= 1e-5
        assert close(script(ours)(**our_args), want) <= 1e-5
        back = to_diffusers(ours)
        assert type(back).__name__ == "ControlNetModel"
        down, mid = back(**theirs_args)
        assert close([*down, mid], want) == 0.0


def test_the_pair_matches_diffusers_unet_with_additional_residuals() -> None:
    config = CONFIGS["sd15-like"]
    theirs_cn = perturbed(diffusers.ControlNetModel(**config))
    theirs_unet = perturbed(diffusers.UNet2DConditionModel(
        **SMALL, up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), sample_size=8), seed=1)
    cn, unet = from_diffusers(theirs_cn), from_diffusers(theirs_unet)
    theirs_args, our_args = diffusers_call(config)
    with torch.no_grad():
        down, mid = theirs_cn(**theirs_args)
        want = theirs_unet(our_args["x"], our_args["t"], our_args["context"], down_block_additional_residuals=down,
                           mid_block_additional_residual=mid).sample
        res = cn(**our_args)
        got = unet(our_args["x"], our_args["t"], context=our_args["context"], residuals=res)
        two = unet(our_args["x"], our_args["t"], context=our_args["context"],
                   residuals=[a + b for a, b in zip(res, cn(**{**our_args, "scale": 0.3}), strict=True)])
    assert (got - want).abs().max().item() <= 1e-5 and (two - got).abs().max().item() > 1e-4


@pytest.mark.parametrize(("change", "key", "words"), [
    ({"controlnet_conditioning_channel_order": "bgr"}, "controlnet_conditioning_channel_order", "flip its channels"),
    ({"global_pool_conditions": True}, "global_pool_conditions", "averaged over positions"),
    ({"conditioning_embedding_out_channels": "16"}, "conditioning_embedding_out_channels", "wrong type"),
    ({"up_block_types": ["UpBlock2D"]}, "up_block_types", "unknown ControlNetModel config key"),
    ({"down_block_types": ["CrossAttnDownBlock2D", "KCrossAttnDownBlock2D"]}, "down_block_types",
     "unsupported down block"),
])
def test_what_unetdsl_cannot_compute_is_refused_by_key(change: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        spec_from_diffusers({"_class_name": "ControlNetModel", **SMALL, **HINT, **change})
    problems = info.value.problems
    assert len(problems) == 1 and problems[0].path[0] == key and words in problems[0].message, problems


def test_a_controlnet_diffusers_cannot_hold_is_refused_naming_the_setting() -> None:
    spec, _ = resolve_spec({**CONTROLNET, "defaults": {"norm": {"groups": 8}, "dropout": 0.1}})
    with pytest.raises(SpecError) as info:
        to_diffusers(build_model(spec))
    assert any("dropout" in str(p.path) for p in info.value.problems)


# --- stored and exported ------------------------------------------------------------------------------
def test_a_saved_controlnet_loads_back(tmp_path: Path) -> None:
    model = perturbed(build_model(CONTROLNET, seed=0))
    unetdsl.save(model, tmp_path / "cn.safetensors")
    back = unetdsl.load(tmp_path / "cn.safetensors")
    s = sample_inputs(model.spec)  # type: ignore[arg-type]
    with torch.no_grad():
        assert close(back(*s.args()), model(*s.args())) == 0.0
    assert back.spec.spec_id == model.spec.spec_id  # type: ignore[union-attr]


@pytest.mark.parametrize("fmt", ["torchscript", "export", "onnx"])
def test_controlnet_artifacts_are_checked_on_nonzero_residuals(fmt: str, tmp_path: Path) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    model = perturbed(build_model({**CONTROLNET, "conditions": [{"inputs": [{"name": "pooled", "width": 5}]}]},
                                  seed=0))
    report = unetdsl.export(model, tmp_path / f"cn.{fmt}", format=fmt)
    assert len(report.checks) == 2 and report.max_abs_diff < 1e-4
    s = sample_inputs(model.spec, batch=3, size=[16, 16], seed=4)  # type: ignore[arg-type]
    with torch.no_grad():
        want = model(*s.args())
    assert all(w.abs().max() > 1e-3 for w in want)
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(tmp_path / "cn.onnx"), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["x", "t", "context", "pooled", "hint"]
        assert [o.name for o in session.get_outputs()] == [f"residual_{i}" for i in range(6)]
        got = [torch.from_numpy(o) for o in session.run(None, {n: a.numpy() for n, a in zip(
            ["x", "t", "context", "pooled", "hint"], s.tensors(), strict=True)})]
    elif fmt == "export":
        got = torch.export.load(str(tmp_path / "cn.export")).module()(*s.present())
    else:
        got = torchscript.load(tmp_path / "cn.torchscript")(*s.args())
    assert close(list(got), want) <= 1e-4


@pytest.mark.parametrize("fmt", ["export", "onnx"])
def test_a_unet_program_takes_residuals_when_built_with_them(fmt: str, tmp_path: Path) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    spec, _ = resolve_spec(CONTROLNET)
    unet = perturbed(build_model(spec.controlled(), seed=2))
    report = unetdsl.export(unet, tmp_path / f"u.{fmt}", format=fmt, residuals=True)
    assert report.max_abs_diff < 1e-4
    s = sample_inputs(unet.spec, batch=3, size=[16, 8], seed=5, residuals=True)  # type: ignore[arg-type]
    assert s.residuals is not None and [list(r.shape[1:]) for r in s.residuals] == [
        [32, 16, 8]] * 3 + [[32, 8, 4], [64, 8, 4], [64, 8, 4]]
    with torch.no_grad():
        want = unet(*s.args())
        assert (want - unet(s.x, s.t, None, s.context)).abs().max() > 1e-3
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(tmp_path / "u.onnx"), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        assert names == ["x", "t", "context", *(f"residual_{i}" for i in range(6))]
        got = torch.from_numpy(session.run(None, {n: a.numpy() for n, a in zip(names, s.tensors(), strict=True)})[0])
    else:
        got = torch.export.load(str(tmp_path / "u.export")).module()(*s.present())
    assert (got - want).abs().max().item() <= 1e-4


@pytest.mark.parametrize(("model", "fmt", "words"), [
    ("unet", "torchscript", "a TorchScript U-Net always takes them"),
    ("controlnet", "export", "only a U-Net takes a ControlNet's residuals, not a controlnet"),
])
def test_residuals_are_refused_where_they_do_nothing(model: str, fmt: str, words: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from unetdsl.artifacts import ExportError
    from unetdsl.cli import main

    spec, _ = resolve_spec(CONTROLNET)
    built = build_model(spec.controlled() if model == "unet" else spec, seed=0)
    with pytest.raises(ExportError, match=words):
        unetdsl.export(built, tmp_path / "m.out", format=fmt, residuals=True)
    path = tmp_path / "s.yaml"
    path.write_text(__import__("json").dumps(built.spec.view()))  # type: ignore[union-attr]
    code = main(["build", str(path), "--format", fmt, "--residuals", "-o", str(tmp_path / "m.out")])
    assert code != 0 and words in capsys.readouterr().err and not (tmp_path / "m.out").exists()


def test_summary_and_diagram_show_the_hint_and_the_residuals() -> None:
    import xml.etree.ElementTree as ET

    from unetdsl.diagram import render_svg
    from unetdsl.estimate import estimate
    from unetdsl.summary import render

    spec, _ = resolve_spec(CONTROLNET)
    e = estimate(spec, batch=1, training=False)
    parts = {p.part: p for p in e.parts}
    assert list(parts) == ["stem", "hint", "time", "encoder 0", "encoder 1", "middle", "residuals"]
    # the hint embedding: conv_in 3->8 (224), a keep conv 8->8 (584), a stride-2 conv 8->16 (1,168), conv_out 16->32 (4,640)
    assert parts["hint"].parameters == 224 + 584 + 1168 + 4640 and parts["hint"].resolution == [16, 16]
    assert parts["residuals"].parameters == 4 * (32 * 32 + 32) + 2 * (64 * 64 + 64)  # six zero 1x1 convs
    assert e.parameters == sum(p.parameters for p in e.parts)
    text = render(spec, e)
    assert "3->8->16->32" in text and "6 zero convs" in text and "decoder" not in text
    root = ET.fromstring(render_svg(spec, e))
    words = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "returns 6 residuals" in words and "hint 3×16×16 → 8 → 16" in words


def test_cli_converts_a_controlnet_folder_and_builds_it_with_its_weights(tmp_path: Path) -> None:
    from unetdsl.cli import main

    config = CONFIGS["sd15-like"]
    theirs = perturbed(diffusers.ControlNetModel(**config))
    theirs.save_pretrained(tmp_path / "controlnet")
    spec, weights, out = tmp_path / "cn.yaml", tmp_path / "cn.safetensors", tmp_path / "cn.pt"
    assert main(["convert", "diffusers", str(tmp_path / "controlnet"), "-o", str(spec), "--weights", str(weights)]) == 0
    text = spec.read_text()
    assert "model: controlnet" in text and "embedding: [8, 16]" in text
    assert main(["build", str(spec), "--weights", str(weights), "-o", str(out)]) == 0  # checked on real residuals
    theirs_args, our_args = diffusers_call(config)
    with torch.no_grad():
        down, mid = theirs(**theirs_args)
        got = torchscript.load(out)(our_args["x"], our_args["t"], None, our_args["context"], None, our_args["hint"], 0.7)
    assert close(list(got), [*down, mid]) <= 1e-5
