"""The converters' config types (interop/config_types.py): every key a converter reads has a kind,
checked before any rule reads it, so a wrong type anywhere is a SpecError at that key, for the
three classes alike (issue 22, class 7: the UNet2DConditionModel and AutoencoderKL paths accepted
"1e-5", "0.1" and true, and crashed on lists, mappings and nulls)."""

from __future__ import annotations

from typing import Any

import pytest

from unetdsl import SpecError
from unetdsl.interop import diffusers as unet2d
from unetdsl.interop import diffusers_autoencoder as autoencoder
from unetdsl.interop import diffusers_condition as condition
from unetdsl.interop import diffusers_controlnet as controlnet
from unetdsl.interop.config_types import KINDS
from unetdsl.interop.diffusers import spec_from_diffusers

BASES: dict[str, dict[str, Any]] = {
    "UNet2DModel": dict(block_out_channels=[16, 32], norm_num_groups=8, layers_per_block=1, sample_size=8,
                        down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"],
                        attention_head_dim=8),
    "UNet2DConditionModel": dict(block_out_channels=[16, 32], norm_num_groups=8, layers_per_block=1, sample_size=8,
                                 cross_attention_dim=12, attention_head_dim=2,
                                 down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                                 up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"]),
    "AutoencoderKL": dict(block_out_channels=[16, 32], norm_num_groups=8, layers_per_block=1, sample_size=16,
                          down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2),
    "ControlNetModel": dict(block_out_channels=[16, 32], norm_num_groups=8, layers_per_block=1, cross_attention_dim=12,
                            attention_head_dim=2, down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                            conditioning_embedding_out_channels=[8, 16]),
}


def typed_keys(cls: str) -> dict[str, tuple[Any, str]]:
    """key -> (its type check, what is allowed) for every key the class's converter types."""
    if cls == "UNet2DModel":
        return dict(unet2d.KEY_TYPES)
    if cls == "ControlNetModel":  # the keys it shares with UNet2DConditionModel, and its own
        table = {**{k: v for k, v in condition.TYPES.items() if k in controlnet.DEFAULTS}, **controlnet.TYPES}
        return {k: KINDS[kind] for k, kind in table.items()}
    table = condition.TYPES if cls == "UNet2DConditionModel" else autoencoder.TYPES
    return {k: KINDS[kind] for k, kind in table.items()}


def test_every_key_a_converter_reads_has_a_kind() -> None:
    assert set(unet2d.KEY_TYPES) == set(unet2d.DEFAULTS)
    assert set(condition.TYPES) == condition.READ
    assert set(autoencoder.TYPES) == set(autoencoder.DEFAULTS) - set(autoencoder.NULL_ONLY)
    assert set(controlnet.TYPES) == set(controlnet.OWN)
    for cls, base in BASES.items():  # and the bases are right, so a refusal below is the wrong value's
        assert spec_from_diffusers({"_class_name": cls, **base}) is not None


# values of every JSON shape; each key is tried with those its kind refuses
WRONG: list[Any] = ["1e-5", "0.1", "3", "word", "", True, False, None, 1.5, -0.0, 7, [1, 2], [], ["a"], [[1]],
                    {"a": 1}, {}, [True, "x"], 10**30]


@pytest.mark.parametrize("cls", list(BASES))
def test_a_wrong_type_at_any_key_is_refused_at_that_key(cls: str) -> None:
    tried = 0
    for key, (check, _allowed) in typed_keys(cls).items():
        for value in WRONG:
            if check(value):
                continue  # a value of the key's kind: not this test's business
            tried += 1
            with pytest.raises(SpecError) as info:  # never a TypeError, KeyError or AttributeError
                spec_from_diffusers({"_class_name": cls, **BASES[cls], key: value})
            paths = [p.path[:1] for p in info.value.problems]
            assert (key,) in paths, (cls, key, value, [p.render() for p in info.value.problems])
    assert tried > 100


# values of a key's own kind at its edges: each converts or is refused, never an exception of another type
EDGES: list[Any] = [0, -1, 1, 2**31, 10**30, -0.5, 1e308, float("nan"), float("inf"), "", "x" * 10_000,
                    [0, 0], [10**30, 10**30], [-1, 3], [0], ["", ""], [1, 2, 3]]


@pytest.mark.parametrize("cls", list(BASES))
def test_edge_values_of_the_right_kind_convert_or_are_refused(cls: str) -> None:
    for key, (check, _allowed) in typed_keys(cls).items():
        for value in EDGES:
            if not check(value):
                continue
            try:
                spec_from_diffusers({"_class_name": cls, **BASES[cls], key: value})
            except SpecError as exc:
                assert all(p.render() for p in exc.problems)
