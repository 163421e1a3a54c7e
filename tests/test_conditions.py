"""Named vector conditions (spec `conditions`, nn/conditions.py): resolved with their defaults and
the time section's sinusoid, refused where they cannot work (located, at, below and above each
limit), computed as the hand computation says, checked on every call (eager and scripted), stored
and reloaded, and exported with their names. diffusers parity: test_interop_diffusers_conditions.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import unetdsl
from unetdsl import SpecError, resolve_spec
from unetdsl.artifacts import export, flat_input_names
from unetdsl.inspect import read_metadata
from unetdsl.sample import sample_inputs
from unetdsl.torchscript import script

from .conftest import ROOT, TINY

TWIN = ROOT / "tests" / "fixtures" / "twins" / "sdxl-base-unet.yaml"
# TINY (time: sinusoidal, features 8 -> dim 16) with a group of conditions appended
GROUP = "conditions:\n  - inputs:\n      - {name: a, width: 3}\n      - {name: b, width: 2, sinusoid: 4}\n"


def with_conditions(groups: str = GROUP) -> str:
    return TINY + groups


def problems(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(SpecError) as info:
        resolve_spec(text)
    return [(p.dotted_path, p.location.line if p.location else None, p.message) for p in info.value.problems]


# --- the language ---------------------------------------------------------------------------------
def test_a_group_resolves_with_its_defaults_and_the_time_sections_sinusoid() -> None:
    spec, _ = resolve_spec(with_conditions())
    (group,) = spec.conditions
    assert (group.project, group.into, group.bias, group.activation) == ("mlp", "time", True, "silu")
    assert group.width == spec.time.dim == 16 and group.joined_width == 3 + 2 * 4  # type: ignore[union-attr]
    a, b = group.inputs
    assert (a.sinusoid, b.sinusoid) == (0, 4)
    assert (b.flip_sin_to_cos, b.freq_shift, b.max_period) == (spec.time.flip_sin_to_cos, spec.time.freq_shift,  # type: ignore[union-attr]
                                                               spec.time.max_period)  # type: ignore[union-attr]
    assert [i.name for i in spec.condition_inputs] == ["a", "b"]
    # the view resolves back to the same spec; the id differs from the spec without conditions
    assert resolve_spec(spec.view())[0] == spec
    assert spec.spec_id != resolve_spec(TINY)[0].spec_id


def test_a_spec_without_conditions_keeps_its_id() -> None:
    # the field's default is no group: stored files and ids of every earlier spec are unchanged
    assert "conditions" not in resolve_spec(TINY)[0].stored_json()


@pytest.mark.parametrize(("groups", "path", "says"), [
    ("conditions:\n  - inputs: [{name: t, width: 3}]\n", "conditions.0.inputs.0.name", "model's own arguments"),
    ("conditions:\n  - inputs: [{name: a, width: 3}, {name: a, width: 2}]\n", "conditions.0.inputs.1.name",
     "also conditions.0.inputs.0"),
    ("conditions:\n  - inputs: [{name: a, width: 3}]\n  - inputs: [{name: a, width: 3}]\n",
     "conditions.1.inputs.0.name", "each name is one key"),
    ("conditions:\n  - inputs: [{name: a, width: 3}]\n    bias: false\n", "conditions.0.bias", "project is mlp"),
    ("conditions:\n  - inputs: [{name: a, width: 3}]\n    project: linear\n    activation: gelu\n",
     "conditions.0.activation", "project is linear"),
    ("conditions:\n  - inputs: [{name: a, width: 3}]\n    project: none\n", "conditions.0.project",
     "16 values of time.dim"),
    ("conditions:\n  - inputs: [{name: a, width: 3}]\n    project: none\n    into: features\n",
     "conditions.0.project", "8 values of time.features"),
])
def test_impossible_groups_are_refused_where_they_are_written(groups: str, path: str, says: str) -> None:
    found = problems(with_conditions(groups))
    assert [p for p, _, _ in found] == [path]
    first, last = len(TINY.splitlines()) + 1, len(with_conditions(groups).splitlines())
    assert found[0][1] is not None and first <= found[0][1] <= last  # located in the conditions, not at the top
    assert says in found[0][2]


def test_conditions_need_a_time_section() -> None:
    decoder = "unetdsl: 1\nname: d\nmodel: decoder\nin_channels: 4\nout_channels: 3\nsample_size: 8\n" \
              "defaults: {norm: {groups: 2}}\ndecoder:\n  levels: [{channels: 4}]\n"
    resolve_spec(decoder)
    assert [p for p, _, _ in problems(decoder + GROUP)] == ["conditions"]


def test_project_none_at_exactly_the_width_it_joins() -> None:
    ok = with_conditions("conditions:\n  - inputs: [{name: a, width: 10}, {name: b, width: 3, sinusoid: 2}]\n"
                         "    project: none\n")
    assert resolve_spec(ok)[0].conditions[0].joined_width == 16
    for width in (9, 11):  # one below, one above
        assert [p for p, _, _ in problems(ok.replace("width: 10", f"width: {width}"))] == ["conditions.0.project"]


@pytest.mark.parametrize(("field", "low", "high"), [("width", 1, 65536), ("sinusoid", 2, 8192)])
def test_each_bound_at_below_and_above(field: str, low: int, high: int) -> None:
    def text(value: int) -> str:
        entry = f"{{name: a, width: {value}}}" if field == "width" else f"{{name: a, width: 1, sinusoid: {value}}}"
        return with_conditions(f"conditions:\n  - inputs: [{entry}]\n")

    for value in (low, high):
        resolve_spec(text(value))
    for value in (low - 1, high + 1):
        assert [p for p, _, _ in problems(text(value))] == [f"conditions.0.inputs.0.{field}"]


def test_the_joined_width_is_capped() -> None:
    from unetdsl.resolve.conditions import MAX_JOINED_WIDTH

    def text(inputs: int) -> str:  # each input 65536 x 1 = 2^16 values
        entries = ", ".join(f"{{name: c{i}, width: 65536}}" for i in range(inputs))
        return with_conditions(f"conditions:\n  - inputs: [{entries}]\n    project: linear\n")

    assert MAX_JOINED_WIDTH == 16 * 65536
    resolve_spec(text(16))  # at the cap
    over = "conditions:\n  - inputs: [{name: z, width: 65536, sinusoid: 2}, " + ", ".join(
        f"{{name: c{i}, width: 65536}}" for i in range(15)) + "]\n    project: linear\n"
    assert [p for p, _, _ in problems(with_conditions(over))] == ["conditions.0.inputs"]


@pytest.mark.parametrize("name", ["1a", "a-b", "", "a" * 65])
def test_names_are_identifiers(name: str) -> None:
    assert problems(with_conditions(f"conditions:\n  - inputs: [{{name: '{name}', width: 3}}]\n"))[0][0] == \
        "conditions.0.inputs.0.name"


# --- what the model computes ------------------------------------------------------------------------
def test_groups_join_where_they_say_by_hand() -> None:
    """A linear group without bias into the features (EDM's label vectors) and an mlp group into
    the embedding (diffusers' add_embedding), against the embedding computed by hand."""
    text = with_conditions("conditions:\n  - inputs: [{name: label, width: 5}]\n    project: linear\n"
                           "    bias: false\n    into: features\n"
                           "  - inputs: [{name: ids, width: 2, sinusoid: 4}]\n    activation: gelu\n")
    model = unetdsl.build_model(text, seed=0).eval()
    te = model.time_embedding
    t = torch.tensor([3, 700])
    label, ids = torch.randn(2, 5), torch.tensor([[10.0, 20.0], [0.0, 512.0]])
    groups = te.conditions.groups
    assert groups[0].project.bias is None

    def sinusoid(v: torch.Tensor, n: int, flip: bool = True) -> torch.Tensor:  # diffusers' get_timestep_embedding
        half = n // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        args = v.float()[:, None] * freqs[None]
        emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
        return torch.cat([emb[:, half:], emb[:, :half]], dim=-1) if flip else emb

    feats = sinusoid(t, 8) + label @ groups[0].project.weight.T
    emb = te.linear_2(torch.nn.functional.silu(te.linear_1(feats)))
    mlp = groups[1].project
    joined = sinusoid(ids.reshape(-1), 4).reshape(2, 8)
    emb = emb + mlp.linear_2(torch.nn.functional.gelu(mlp.linear_1(joined)))
    with torch.no_grad():
        got = te(t, 2, None, {"label": label, "ids": ids})
    torch.testing.assert_close(got, emb.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "scripted"])
def test_every_wrong_call_says_what_the_model_takes(scripted: bool) -> None:
    model = unetdsl.build_model(with_conditions(), seed=0).eval()
    plain = unetdsl.build_model(TINY, seed=0).eval()
    if scripted:
        model, plain = script(model), script(plain)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    good = {"a": torch.randn(2, 3), "b": torch.randn(2, 2)}
    cases = [
        (model, None, r"takes conditions \[.?a.?, .?b.?\]"),
        (model, {"a": good["a"]}, r"lacks \[.?b.?\]"),
        (model, {**good, "c": t}, r"unknown \[.?c.?\]"),
        (model, {**good, "a": torch.randn(2, 4)}, r"'a' has shape \[2, 4\]; expected \(2, 3\)"),
        (model, {**good, "a": torch.randn(3, 3)}, r"'a' has shape \[3, 3\]; expected \(2, 3\)"),
        (plain, good, "takes no conditions"),
    ]
    for m, cond, says in cases:
        with torch.no_grad(), pytest.raises(Exception, match=says):
            m(x, t, None, None, cond)
    with torch.no_grad():
        model(x, t, None, None, good)


def test_a_width_one_condition_takes_one_value_per_sample() -> None:
    model = unetdsl.build_model(with_conditions("conditions:\n  - inputs: [{name: s, width: 1, sinusoid: 4}]\n"),
                                seed=0).eval()
    x, t, s = torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), torch.tensor([5.0, 9.0])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, cond={"s": s}), model(x, t, cond={"s": s[:, None]}), rtol=0, atol=0)


def test_a_saved_model_loads_and_computes_the_same(tmp_path: Path) -> None:
    model = unetdsl.build_model(TWIN, seed=0).eval()
    unetdsl.save(model, tmp_path / "m.safetensors")
    back = unetdsl.load(tmp_path / "m.safetensors")
    assert back.spec == model.spec
    inputs = sample_inputs(model.spec, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(back(*inputs.args()), model(*inputs.args()), rtol=0, atol=0)


# the export mechanics at the least cost (the twin's 20 transformer layers take torch.export and the ONNX
# exporter ~2 minutes): a context, both kinds of group, one transformer block of depth 2 with linear
# projections (text-tiny's blocks: its own ONNX export is in `make test-heavy`)
EXPORTED = """\
unetdsl: 1
name: conditioned
in_channels: 4
out_channels: 4
sample_size: 8
context_dim: 8
time: {embedding: sinusoidal, features: 8, dim: 16}
conditions:
  - inputs: [{name: text_embeds, width: 6}, {name: time_ids, width: 3, sinusoid: 4}]
  - inputs: [{name: label, width: 5}]
    project: linear
    into: features
defaults: {norm: {groups: 4}}
encoder:
  levels:
    - {channels: 8, blocks: 1}
    - {channels: 16, blocks: 1, attention: {type: transformer, heads: 2, depth: 2, linear_projection: true}}
middle: {blocks: 1}
"""


@pytest.mark.parametrize("fmt", ["torchscript", "export", "onnx"])
def test_a_conditioned_model_exports_with_its_conditions(fmt: str, tmp_path: Path) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    model = unetdsl.build_model(EXPORTED, seed=0)
    target = tmp_path / {"torchscript": "m.pt", "export": "m.pt2", "onnx": "m.onnx"}[fmt]
    report = export(model, target, format=fmt)  # checked after writing at two batch and spatial sizes
    assert len(report.checks) == 2 and report.max_abs_diff < 1e-4
    meta = read_metadata(target)
    assert meta["unetdsl/forward"] == "forward(x, t, context, cond)"
    assert "cond: {text_embeds: float32 (B, 6), time_ids: float32 (B, 3), label: float32 (B, 5)}" in meta["unetdsl/inputs"]
    if fmt == "onnx":
        import onnx

        names = [i.name for i in onnx.load(str(target)).graph.input]
        assert names == flat_input_names(model.spec) == ["x", "t", "context", "text_embeds", "time_ids", "label"]


def test_the_sdxl_twin_scripts_and_runs_a_training_step() -> None:
    model = unetdsl.build_model(TWIN, seed=0)
    inputs = sample_inputs(model.spec, batch=2)
    model(*inputs.args()).square().mean().backward()
    group = model.time_embedding.conditions.groups[0]  # type: ignore[union-attr,index]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in group.parameters())
    with torch.no_grad():
        torch.testing.assert_close(script(model.eval())(*inputs.args()), model(*inputs.args()), rtol=1e-4, atol=1e-5)


def test_summary_and_diagram_show_the_conditions(tmp_path: Path) -> None:
    from unetdsl.cli import main

    assert main(["diagram", str(TWIN), "-o", str(tmp_path / "d.svg")]) == 0
    assert "+ cond: text_embeds, time_ids" in (tmp_path / "d.svg").read_text()


def test_summary_lines_of_the_conditions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from unetdsl.cli import main

    (tmp_path / "c.yaml").write_text(EXPORTED)
    assert main(["summary", str(tmp_path / "c.yaml")]) == 0
    out = capsys.readouterr().out
    assert "conditions   text_embeds (6) + time_ids (3 x sinusoid 4) = 18 -> mlp -> added to the time embedding (16)" in out
    assert "             label (5) = 5 -> linear -> added to the time features (8)" in out


# --- no silent wrong models (issue 23, item 7) ----------------------------------------------------
def test_a_transformer_block_must_state_its_heads() -> None:
    text = TINY.replace("middle: {blocks: 2, attention: {heads: 2}}", "middle: {blocks: 2, attention: {type: transformer}}")
    assert text != TINY
    found = problems(text + "context_dim: 4\n")
    line = 1 + text.splitlines().index("middle: {blocks: 2, attention: {type: transformer}}")
    assert [(p, at) for p, at, _ in found] == [("middle.attention", line)]  # one problem, where it is written
    assert "states its heads" in found[0][2]
    for given in ("heads: 2", "head_dim: 4"):
        resolve_spec(text.replace("{type: transformer}", f"{{type: transformer, {given}}}") + "context_dim: 4\n")
    # self-attention keeps its documented default of one head
    assert resolve_spec(TINY.replace("{blocks: 2, attention: {heads: 2}}", "{blocks: 2, attention: true}"))[0] \
        .middle.attention.heads == 1  # type: ignore[union-attr]


def test_a_latent_section_states_its_scaling_factor() -> None:
    vae = (ROOT / "specs" / "vae-tiny.yaml").read_text()
    assert "scaling_factor: 0.18215" in vae
    found = problems(vae.replace(", scaling_factor: 0.18215", ""))
    assert [p for p, _, _ in found] == ["latent"]
    with pytest.raises(SpecError) as info:
        resolve_spec(vae.replace(", scaling_factor: 0.18215", ""))
    assert "SDXL's: 0.13025" in info.value.problems[0].hint  # type: ignore[operator]


def test_a_sinusoid_narrower_than_twice_the_freq_shift_is_refused() -> None:
    """(Found by the stored-spec property: sinusoid 2 with freq_shift 1 made every output NaN.)"""
    shifted = with_conditions("conditions:\n  - inputs: [{name: s, width: 1, sinusoid: SIZE}]\n").replace(
        "embedding: sinusoidal", "embedding: sinusoidal, freq_shift: 1")
    assert "freq_shift: 1" in shifted
    for size in (2, 3):  # half 1: 1 - 1 = 0
        found = problems(shifted.replace("SIZE", str(size)))
        assert [p for p, _, _ in found] == ["conditions.0.inputs.0.sinusoid"] and "NaN" in found[0][2]
    model = unetdsl.build_model(shifted.replace("SIZE", "4"), seed=0).eval()  # half 2: the first that works
    inputs = sample_inputs(model.spec, batch=2)
    with torch.no_grad():
        assert torch.isfinite(model(*inputs.args())).all()


@pytest.mark.inductor
def test_a_conditioned_model_compiles_with_aotinductor(tmp_path: Path) -> None:
    """`make test-inductor` (~1 minute of C++): the package takes `cond` as a mapping (AOTInductor
    flattens it by the exported program's input spec), checked after writing at two sizes."""
    model = unetdsl.build_model(EXPORTED, seed=0)
    report = export(model, tmp_path / "m.aoti.pt2", format="aoti")
    assert [shape for shape, _ in report.checks] == [[2, 4, 8, 8], [3, 4, 4, 4]] and report.max_abs_diff < 1e-4
    assert "cond: {text_embeds" in read_metadata(tmp_path / "m.aoti.pt2")["unetdsl/inputs"]
