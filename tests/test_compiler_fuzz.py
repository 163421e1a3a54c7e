"""Random valid small specs across every option (tests/strategies.py: every model kind, per-place
overrides of every level setting, transformer attention with a context, every time embedding):
each builds, runs and scripts to the same output."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import HealthCheck, given, settings

from unetdsl import build_model
from unetdsl.nn.layers import prepacking_off
from unetdsl.sample import sample_inputs
from unetdsl.torchscript import script

from .strategies import specs


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(specs())
def test_random_specs_build_run_and_script(spec: dict[str, Any]) -> None:
    model = build_model(spec).eval()
    r = model.spec
    inputs = sample_inputs(r, batch=2)
    with torch.inference_mode(), prepacking_off(model):  # TorchScript runs the plain convolutions
        out = model(*inputs.args())
        assert out.shape == (2, r.out_channels, *r.output_size)
        assert torch.isfinite(out).all()
    with torch.no_grad(), prepacking_off(model):  # (in-process scripted: no_grad; see test_torchscript.py)
        torch.testing.assert_close(script(model)(*inputs.args()), out, rtol=0, atol=1e-6)
