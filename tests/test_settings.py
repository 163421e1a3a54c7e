"""spec/settings.py: every default of the language is defined once. The schema's descriptions
state it and the resolver applies it: a spec that sets nothing resolves to exactly the table."""

from __future__ import annotations

import json

import unetdsl
from unetdsl.schema import generate_schema
from unetdsl.spec.settings import DEFAULTS, LEVEL_SETTINGS, _shown

MINIMAL = """\
unetdsl: 1
name: minimal
in_channels: 3
out_channels: 3
sample_size: 16
time: {embedding: sinusoidal}
encoder:
  levels:
    - {channels: 32}
    - {channels: 64, attention: true}
middle: {attention: true}
"""


def test_every_default_is_stated_in_the_schema() -> None:
    text = json.dumps(generate_schema())
    for value in [*DEFAULTS.values(), *(s.default for s in LEVEL_SETTINGS.values())]:
        assert f"Default {_shown(value)}." in text, value


def test_a_spec_that_sets_nothing_resolves_to_the_table() -> None:
    r, _ = unetdsl.resolve_spec(MINIMAL)
    lv, d = r.encoder[0], r.decoder[0]
    assert (lv.norm.type, lv.norm.groups, lv.norm.eps) == (DEFAULTS["norm.type"], DEFAULTS["norm.groups"],
                                                          DEFAULTS["norm.eps"])
    assert len(lv.blocks) == DEFAULTS["level.blocks"] and r.middle.blocks == DEFAULTS["middle.blocks"]
    assert lv.downsample == DEFAULTS["encoder.downsample"] and d.upsample == DEFAULTS["decoder.upsample"]
    assert r.asymmetric_padding is DEFAULTS["encoder.asymmetric_padding"]
    assert r.encoder[1].attention is not None and r.encoder[1].attention.norm is DEFAULTS["attention.norm"]
    assert r.time is not None and (r.time.injection, r.time.flip_sin_to_cos, r.time.freq_shift, r.time.max_period) == (
        DEFAULTS["time.injection"], DEFAULTS["sinusoidal.flip_sin_to_cos"], DEFAULTS["sinusoidal.freq_shift"],
        DEFAULTS["sinusoidal.max_period"])
    assert (r.head.norm is not None) is DEFAULTS["head.norm"] and r.head.kernel_size == DEFAULTS["head.kernel_size"]
    assert r.head.divide_by_timestep is DEFAULTS["head.divide_by_timestep"]
    assert (r.zero_out, r.center_input) == (DEFAULTS["init.zero_out"], DEFAULTS["center_input"])
    for name, setting in LEVEL_SETTINGS.items():
        assert getattr(lv, name) == getattr(r.middle, name) == setting.default, name
    fourier, _ = unetdsl.resolve_spec(MINIMAL.replace("embedding: sinusoidal", "embedding: fourier"))
    assert fourier.time is not None and (fourier.time.scale, fourier.time.log, fourier.time.flip_sin_to_cos) == (
        DEFAULTS["fourier.scale"], DEFAULTS["fourier.log"], DEFAULTS["fourier.flip_sin_to_cos"])


def test_every_time_embedding_shares_the_time_settings_and_resolves_them_to_the_table() -> None:
    from unetdsl.spec.models import FourierTime, LearnedTime, SinusoidalTime, TimeCommon
    from unetdsl.spec.settings import TIME_SETTINGS

    for model in (SinusoidalTime, FourierTime, LearnedTime):
        assert issubclass(model, TimeCommon) and set(TIME_SETTINGS) <= set(model.model_fields)
    for embedding in ("sinusoidal", "fourier", "learned"):
        extra = ", timesteps: 10" if embedding == "learned" else ""
        r, _ = unetdsl.resolve_spec(MINIMAL.replace("{embedding: sinusoidal}", f"{{embedding: {embedding}{extra}}}"))
        assert r.time is not None
        assert {name: getattr(r.time, name) for name in TIME_SETTINGS} == {n: s.default for n, s in TIME_SETTINGS.items()}
        assert {name: r.time.view()[name] for name in TIME_SETTINGS} == {n: s.default for n, s in TIME_SETTINGS.items()}


def test_norm_kinds_are_data_for_every_norm_name() -> None:
    from unetdsl.compiler import PER_CHANNEL_NORMS
    from unetdsl.nn.layers import NORMS
    from unetdsl.spec.vocabulary import NORM_KINDS, NormType, names

    assert set(NORM_KINDS) == set(names(NormType)) == set(NORMS)
    assert {"instance", "batch"} == PER_CHANNEL_NORMS  # the conv bias before them is dropped
    assert [n for n, k in NORM_KINDS.items() if k.erases_added_time] == ["instance"]
    r, _ = unetdsl.resolve_spec(MINIMAL.replace("middle: {attention: true}", "middle: {attention: true}\ndefaults: "
                                                "{norm: {type: layer}}"))
    assert r.encoder[0].norm.groups_for(32) == 1 and r.encoder[0].norm.groups is None
