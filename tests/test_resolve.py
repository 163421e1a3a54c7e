"""resolve(): defaults inherited, decoder mirrored, channel flow, auto groups, stable spec ids."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import unetdsl
from unetdsl import SpecError, resolve_spec
from unetdsl.frontend import load_spec

from .conftest import SPECS, TINY


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_resolved_form_revalidates_to_the_same_id(path: Path) -> None:
    resolved, _ = resolve_spec(path)
    again, _ = resolve_spec(resolved.view())
    assert again.spec_id == resolved.spec_id
    assert again == resolved
    # and through its YAML rendering too (what `unetdsl resolve` prints)
    text = yaml.safe_dump(resolved.view(), sort_keys=False)
    assert resolve_spec(text)[0].spec_id == resolved.spec_id


def test_spec_id_ignores_formatting_and_name_but_not_architecture() -> None:
    a, _ = resolve_spec(TINY)
    reordered = yaml.safe_dump(yaml.safe_load(TINY), sort_keys=True, default_flow_style=False)
    assert resolve_spec(reordered)[0].spec_id == a.spec_id
    assert resolve_spec(TINY.replace("name: tiny", "name: other"))[0].spec_id == a.spec_id
    assert resolve_spec(TINY.replace("dim: 16", "dim: 32"))[0].spec_id != a.spec_id
    # explicit defaults equal to the built-in ones change nothing
    explicit = TINY.replace("{groups: 2}", "{type: group, groups: 2, eps: 1.0e-5}")
    assert resolve_spec(explicit)[0].spec_id == a.spec_id


def test_spec_id_is_stable_across_releases() -> None:
    # A golden value: changing it breaks every id users have recorded. Only with a new prefix (the
    # first definition's ids, "sha256:ef0f706f68b10ba9" for this spec, are still read: test_stored.py).
    assert resolve_spec(TINY)[0].spec_id == "v2:sha256:98a3b022edb75a87"


def test_ddpm_channel_flow_matches_diffusers_unet2d() -> None:
    r, _ = resolve_spec(Path(__file__).parent.parent / "specs" / "ddpm-cifar10.yaml")
    # diffusers UpBlock2D: resnet i takes prev (or out) + res_skip channels
    flow = [[(b.in_channels, b.skip_channels, b.out_channels) for b in lv.blocks] for lv in r.decoder]
    assert flow == [
        [(256, 256, 256), (256, 256, 256), (256, 256, 256)],
        [(256, 256, 256), (256, 256, 256), (256, 256, 256)],
        [(256, 256, 256), (256, 256, 256), (256, 128, 256)],
        [(256, 128, 128), (128, 128, 128), (128, 128, 128)],
    ]
    assert [lv.attention is not None for lv in r.encoder] == [False, True, False, False]
    assert [lv.attention is not None for lv in r.decoder] == [False, False, True, False]
    assert [lv.downsample for lv in r.encoder] == ["conv", "conv", "conv", None]
    assert [lv.upsample for lv in r.decoder] == ["nearest", "nearest", "nearest", None]
    assert r.time is not None and (r.time.features, r.time.dim, r.time.freq_shift) == (128, 512, 1.0)
    assert r.output_size == [32, 32] and r.downsampling_factor == 8


def test_level_overrides_merge_field_by_field_with_defaults() -> None:
    text = TINY.replace(
        "{channels: 8, blocks: 1, attention: {heads: 2}}",
        "{channels: 8, blocks: 1, attention: {heads: 2}, norm: {eps: 1.0e-3}, activation: gelu, dropout: 0.2}",
    )
    r, _ = resolve_spec(text)
    lv = r.encoder[1]
    assert (lv.norm.groups, lv.norm.eps, lv.activation, lv.dropout) == (2, 1e-3, "gelu", 0.2)
    assert (r.encoder[0].norm.eps, r.encoder[0].activation) == (1e-5, "silu")
    # the mirrored decoder level inherits the encoder level's own settings
    assert (r.decoder[0].activation, r.decoder[0].norm.eps, r.decoder[0].dropout) == ("gelu", 1e-3, 0.2)


def test_auto_groups_pick_the_largest_common_divisor_up_to_32() -> None:
    text = TINY.replace("{groups: 2}", "{groups: auto}").replace("channels: 4,", "channels: 48,").replace(
        "channels: 8,", "channels: 96,")
    r, _ = resolve_spec(text)
    # level 0 normalises 48 channels: divisors of 48 up to 32 -> 24
    assert r.encoder[0].norm.groups == 24
    # level 1 normalises 48 (its first block's input) and 96: gcd 48 -> 24
    assert r.encoder[1].norm.groups == 24
    # 40 channels: divisors 1, 2, 4, 5, 8, 10, 20, 40 -> 20
    r40, _ = resolve_spec(text.replace("channels: 48,", "channels: 40,").replace("channels: 96,", "channels: 40,"))
    assert r40.encoder[0].norm.groups == 20


def test_batch_norm_is_allowed_with_a_located_warning() -> None:
    r, warnings = resolve_spec(TINY.replace("{groups: 2}", "{type: batch}"))
    assert r.encoder[0].norm.type == "batch"
    assert len(warnings) == 1 and warnings[0].dotted_path == "defaults.norm.type"
    assert warnings[0].location is not None and warnings[0].location.line == 8


def test_all_rule_problems_reported_at_once() -> None:
    text = TINY.replace("sample_size: 16", "sample_size: 15").replace("{heads: 2}}\nmiddle", "{heads: 3}}\nmiddle")
    text = text.replace("{groups: 2}", "{groups: 3}")
    with pytest.raises(SpecError) as info:
        resolve_spec(text)
    paths = {p.dotted_path for p in info.value.problems}
    assert {"sample_size", "encoder.levels.1.attention.heads", "defaults.norm.groups"} <= paths


def test_spec_objects_and_dicts_resolve_without_positions() -> None:
    spec = load_spec(TINY).spec
    assert resolve_spec(spec)[0].spec_id == resolve_spec(TINY)[0].spec_id
    bad = yaml.safe_load(TINY)
    bad["encoder"]["levels"][0]["channels"] = 5
    with pytest.raises(SpecError) as info:
        resolve_spec(bad)
    assert all(p.location is None for p in info.value.problems)
    assert info.value.problems[0].dotted_path == "defaults.norm.groups"


def test_overrides_apply_and_point_at_the_command_line() -> None:
    r, _ = resolve_spec(TINY, ["encoder.levels.1.channels=16", "middle.blocks=3"])
    assert r.encoder[1].channels == 16 and r.middle.blocks == 3
    with pytest.raises(SpecError) as info:
        resolve_spec(TINY, ["encoder.levels.1.attention.heads=3"])
    (p,) = info.value.problems
    assert p.location is not None and p.location.source == "--set" and p.location.col == 34
    assert p.dotted_path == "encoder.levels.1.attention.heads"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("encoder.levels.7.channels=4", "not an index"),
        ("name.x=1", "single value"),
        ("nothing", "PATH=VALUE"),
        ("a..b=1", "empty name"),
        ("dims=[1", "not valid YAML"),
    ],
)
def test_bad_overrides(override: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        resolve_spec(TINY, [override])


def test_conv_downsampling_without_a_padding_choice_is_warned() -> None:
    unset = TINY.replace("  asymmetric_padding: false\n", "")
    _, warnings = resolve_spec(unset)
    [w] = warnings
    assert w.dotted_path == "encoder" and "asymmetric_padding: true" in (w.hint or "")
    assert resolve_spec(unset)[0].spec_id == resolve_spec(TINY)[0].spec_id  # the same model, warned
    assert resolve_spec(unset.replace("encoder:\n", "encoder:\n  downsample: avgpool\n"))[1] == []


def test_a_decoder_listed_highest_resolution_first_is_warned() -> None:
    decoder = """\
unetdsl: 1
name: dec
model: decoder
in_channels: 4
out_channels: 3
sample_size: 8
defaults: {norm: {groups: 4}}
middle: {blocks: 1}
decoder:
  levels:
    - {channels: 8}
    - {channels: 16}
    - {channels: 32}
"""
    _, warnings = resolve_spec(decoder)
    [w] = warnings
    assert w.dotted_path == "decoder.levels" and "lowest resolution first" in w.message
    assert w.location is not None and w.location.line == 11
    _, none = resolve_spec(decoder.replace("channels: 8}", "channels: 64}"))
    assert none == []


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_resolve_output_is_fully_explicit_and_keeps_the_id(path, capsys: pytest.CaptureFixture[str]) -> None:
    from unetdsl.cli import main

    assert main(["resolve", str(path)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    resolved, _ = resolve_spec(path)
    assert resolve_spec(shown)[0].spec_id == resolved.spec_id
    assert {"activation", "divide_by_timestep", "norm", "kernel_size"} <= set(shown["head"])
    assert "center_input" in shown and "zero_out" in shown["init"]
    if "encoder" in shown:
        assert "asymmetric_padding" in shown["encoder"]
    for section in (shown.get("encoder", {}).get("levels", []), shown.get("decoder", {}).get("levels", []),
                    [shown["middle"]]):
        for level in section:
            if "attention" in level:
                assert {"type", "heads", "norm"} <= set(level["attention"])


def test_type_and_cross_field_problems_come_in_one_round() -> None:
    both = TINY.replace("- {channels: 4, blocks: 1}", "- {channels: 4, blocks: 1, activation: swish}").replace(
        "middle: {blocks: 2, attention: {heads: 2}}", "middle: {blocks: 2, attention: {heads: 3}}")
    with pytest.raises(SpecError) as exc:
        resolve_spec(both)
    found = [(p.dotted_path, p.location.line) for p in exc.value.problems]
    assert found == [("encoder.levels.0.activation", 12), ("middle.attention.heads", 14)]  # in source order


def test_the_second_round_never_reports_what_a_default_caused() -> None:
    # groups 0 is out of range; left out, groups would fall back to 32, which divides none of these
    # channels: that is the default's problem, not the spec's, and is not reported
    with pytest.raises(SpecError) as exc:
        resolve_spec(TINY.replace("norm: {groups: 2}", "norm: {groups: 0}"))
    assert [p.dotted_path for p in exc.value.problems] == ["defaults.norm.groups"]
    # a missing required key: no second round
    with pytest.raises(SpecError) as exc:
        resolve_spec(TINY.replace("in_channels: 3\n", "").replace("heads: 2}}\nmiddle", "heads: 3}}\nmiddle"))
    assert [p.dotted_path for p in exc.value.problems] == ["in_channels"]


# --- valid means computable (issue 22, class 8): a sinusoidal freq_shift at or past half the features
# would make every output NaN; below it (up to just below) the model computes finite numbers
@pytest.mark.parametrize("features,shift,refused", [
    (8, 4.0, True), (8, 4.5, True), (8, 100.0, True), (8, 3.5, False), (8, 3.999, False), (8, -3.0, False),
    (7, 3.0, True), (7, 2.5, False),   # odd features: half is 3
    (2, 1.0, True), (2, 0.0, False),   # the smallest table with a frequency
    (1, 5.0, False),                   # no frequency at all (one zero-padded column): nothing divides
])
def test_freq_shift_is_below_half_the_features(features: int, shift: float, refused: bool) -> None:
    import torch

    spec = TINY.replace("time: {embedding: sinusoidal, features: 8, dim: 16}",
                        f"time: {{embedding: sinusoidal, features: {features}, dim: 16, freq_shift: {shift}}}")
    if refused:
        with pytest.raises(SpecError) as info:
            unetdsl.resolve_spec(spec)
        (p,) = info.value.problems
        assert p.path == ("time", "freq_shift") and p.location is not None and p.location.line == 6
        assert f"half the {features} features ({features // 2})" in p.message
        return
    model = unetdsl.build_model(spec, seed=0).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 16, 16), torch.tensor([0, 999]))
    assert torch.isfinite(out).all()


def test_a_nonfinite_forward_is_traced_to_its_first_module() -> None:
    import torch

    from unetdsl.sample import first_nonfinite, sample_inputs

    model = unetdsl.build_model(TINY, seed=0).eval()
    inputs = sample_inputs(model.spec, batch=1)
    assert first_nonfinite(model, inputs) is None
    with torch.no_grad():
        model.encoder[1].resnets[0].conv1.weight.fill_(float("inf"))
    assert first_nonfinite(model, inputs) == "encoder.1.resnets.0.conv1 (Conv2d)"
