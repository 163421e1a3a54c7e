"""Random valid small specs across every option: each builds, runs and scripts to the same output."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unetdsl import build_model
from unetdsl.nn.layers import prepacking_off
from unetdsl.sample import sample_inputs
from unetdsl.spec.vocabulary import Activation, Downsample, NormType, Order, TimeEmbedding, TimeInjection, Upsample, names
from unetdsl.torchscript import script


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["unet", "unet", "encoder", "decoder"]))
    dims = draw(st.sampled_from([1, 2, 3]))
    n = draw(st.integers(1, 3))
    levels = []
    for _ in range(n):
        lv: dict[str, Any] = {"channels": draw(st.sampled_from([4, 8, 12])), "blocks": draw(st.integers(1, 2))}
        if draw(st.booleans()):
            lv["attention"] = draw(st.sampled_from([{"heads": 2}, {"head_dim": 2}, {}, {"heads": 1, "norm": False}]))
        if draw(st.booleans()):
            lv["activation"] = draw(st.sampled_from(names(Activation)))
        if draw(st.booleans()):
            lv["order"] = draw(st.sampled_from(names(Order)))
        levels.append(lv)
    norm_type = draw(st.sampled_from(names(NormType)))
    norm: dict[str, Any] = {"type": norm_type}
    if norm_type == "group":
        norm["groups"] = draw(st.sampled_from([2, 4, "auto"]))
    has_time = kind == "unet" or draw(st.booleans())
    spec: dict[str, Any] = {
        "unetdsl": 1, "name": "fuzz", "model": kind, "dims": dims,
        "in_channels": draw(st.integers(1, 3)), "out_channels": draw(st.integers(1, 3)),
        "defaults": {"norm": norm, "activation": draw(st.sampled_from(names(Activation))),
                     "order": draw(st.sampled_from(names(Order))), "dropout": draw(st.sampled_from([0.0, 0.1]))},
        "middle": {"blocks": draw(st.integers(0, 2))},
        "head": {"norm": draw(st.booleans()), "kernel_size": draw(st.sampled_from([1, 3]))},
        "init": {"zero_out": draw(st.booleans())},
        "center_input": draw(st.booleans()),
    }
    if spec["middle"]["blocks"] == 2 and draw(st.booleans()):
        spec["middle"]["attention"] = {"heads": 1}
    factor = 2 ** (n - 1)
    spec["sample_size"] = factor * draw(st.sampled_from([1, 2])) if kind != "decoder" else 2
    if has_time:
        embedding = draw(st.sampled_from(names(TimeEmbedding)))
        injection = draw(st.sampled_from(names(TimeInjection)))
        if norm_type == "instance":
            injection = "scale_shift"  # additive injection before instance norm is refused (erased)
        time: dict[str, Any] = {"embedding": embedding, "injection": injection, "dim": 8}
        time["features"] = draw(st.sampled_from([4, 6, 7])) if embedding != "fourier" else 6
        if embedding == "learned":
            time["timesteps"] = 1000
        spec["time"] = time
        if draw(st.booleans()):
            spec["classes"] = 3
        spec["head"]["divide_by_timestep"] = embedding == "fourier" and draw(st.booleans())
    for lv in levels[:-1]:
        key = "upsample" if kind == "decoder" else "downsample"
        lv[key] = draw(st.sampled_from(names(Upsample) if kind == "decoder" else names(Downsample)))
    if kind == "decoder":
        spec["decoder"] = {"levels": levels}
    else:
        spec["encoder"] = {"levels": levels, "asymmetric_padding": draw(st.booleans())}
        if kind == "unet":
            spec["decoder"] = {"upsample": draw(st.sampled_from(names(Upsample)))}
    return spec


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(specs())
def test_random_specs_build_run_and_script(spec: dict[str, Any]) -> None:
    model = build_model(spec).eval()
    r = model.spec
    inputs = sample_inputs(r, batch=2)
    with torch.inference_mode(), prepacking_off(model):  # TorchScript runs the plain convolutions
        out = model(*inputs.args())
        assert out.shape == (2, r.out_channels, *r.output_size)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(script(model)(*inputs.args()), out, rtol=0, atol=1e-6)
