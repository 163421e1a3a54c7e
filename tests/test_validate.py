"""Type-checking (spec/validate.py, spec/models.py): what other tools' names are told, the
attention switch, and the caps that admit real models."""

from __future__ import annotations

import pytest

import unetdsl
from unetdsl.spec.validate import FOREIGN_KEYS

from .conftest import TINY


def problems(text: str) -> list[unetdsl.Problem]:
    with pytest.raises(unetdsl.SpecError) as exc:
        unetdsl.resolve_spec(text)
    return exc.value.problems


@pytest.mark.parametrize("value", ["cross", "cross_attention", "Cross"])
def test_cross_attention_points_at_the_transformer_block(value: str) -> None:
    [p] = problems(TINY.replace("attention: {heads: 2}}\nmiddle", f"attention: {{type: {value}, heads: 2}}}}\nmiddle"))
    assert p.dotted_path == "encoder.levels.1.attention.type" and p.hint == "unetdsl calls this 'transformer'"


def test_a_condition_name_is_told_what_it_may_be() -> None:
    [p] = problems(TINY + "conditions: [{inputs: [{name: 1x, width: 2}]}]\n")
    assert p.dotted_path == "conditions.0.inputs.0.name" and p.allowed is not None and "Python identifier" in p.allowed
    [p] = problems(TINY.replace("name: tiny", "name: -x"))
    assert p.allowed is not None and p.allowed.startswith("letters, digits, '.', '_' and '-'")


def test_positional_gets_the_sinusoidal_hint() -> None:
    [p] = problems(TINY.replace("embedding: sinusoidal", "embedding: positional"))
    assert p.dotted_path == "time.embedding" and p.hint == "unetdsl calls this 'sinusoidal'"
    assert (p.location.line, p.location.col) == (6, 19)


@pytest.mark.parametrize("key,where,says", [
    ("block_out_channels", "", "diffusers' name; in unetdsl: one encoder level per entry"),
    ("num_res_blocks", "", "guided-diffusion / latent-diffusion's name; in unetdsl: blocks"),
    ("attention_head_dim", "level", "UNet2DModel means channels per head; UNet2DConditionModel means the number of heads"),
    ("num_head_channels", "level", "attention: {head_dim: N}"),
    ("ch_mult", "", "latent-diffusion's name"),
    ("use_scale_shift_norm", "", "time: {injection: scale_shift}"),
    ("cross_attention_dim", "", "in unetdsl: context_dim"),
    ("transformer_layers_per_block", "level", "depth: N"),
    ("addition_embed_type", "", "conditions: [{inputs: [{name: text_embeds"),
    ("encoder_hid_dim", "", "context_input_dim: the context's width as given"),
    ("cross_attention_norm", "level", "context_norm_groups"),
    ("class_embed_type", "", "named class_labels"),
])
def test_other_tools_names_point_at_ours(key: str, where: str, says: str) -> None:
    text = (TINY.replace("- {channels: 8, blocks: 1,", f"- {{channels: 8, blocks: 1, {key}: 1,") if where
            else TINY + f"{key}: 1\n")
    [p] = problems(text)
    assert p.message == f"unknown key {key!r}" and says in p.hint
    assert p.location is not None and p.location.text is not None and key in p.location.text


def test_every_foreign_key_is_unknown_to_the_language() -> None:
    """A pointer for a name the language itself has would hide the real error."""
    from unetdsl.spec.validate import _allowed_keys

    ours = set()
    for path in [(), ("defaults",), ("encoder",), ("encoder", "levels", 0), ("middle",), ("decoder",), ("time",),
                 ("head",)]:
        ours |= set(_allowed_keys(path, {"encoder": {"levels": [{}]}, "time": {"embedding": "sinusoidal"}}))
    assert not ours & set(FOREIGN_KEYS)


def test_attention_true_is_one_head_and_false_is_none() -> None:
    on, _ = unetdsl.resolve_spec(TINY.replace("- {channels: 4, blocks: 1}", "- {channels: 4, blocks: 1, attention: true}"))
    braces, _ = unetdsl.resolve_spec(TINY.replace("- {channels: 4, blocks: 1}", "- {channels: 4, blocks: 1, attention: {}}"))
    assert on.encoder[0].attention is not None and on.encoder[0].attention.heads == 1
    assert on.spec_id == braces.spec_id
    off, _ = unetdsl.resolve_spec(TINY.replace("attention: {heads: 2}}\nmiddle", "attention: false}\nmiddle"))
    assert off.encoder[1].attention is None
    [p] = problems(TINY.replace("middle: {blocks: 2, attention: {heads: 2}}", "middle: {blocks: 2, attention: 1}"))
    assert p.dotted_path == "middle.attention"


def test_caps_admit_a_13_level_audio_unet_on_65536_samples() -> None:
    levels = "\n".join(f"    - {{channels: {min(32 * 2 ** (i // 3), 256)}, blocks: 1}}" for i in range(13))
    spec = f"""\
unetdsl: 1
name: audio-13
dims: 1
in_channels: 2
out_channels: 2
sample_size: 65536
time: {{embedding: sinusoidal, dim: 64}}
defaults: {{norm: {{groups: 8}}}}
encoder:
  downsample: avgpool
  levels:
{levels}
"""
    resolved, _ = unetdsl.resolve_spec(spec)
    assert len(resolved.encoder) == 13 and resolved.downsampling_factor == 4096
    [p] = problems(spec.replace("sample_size: 65536", "sample_size: 2097152"))
    assert p.message == "out of range" and p.allowed == "<= 1048576"
