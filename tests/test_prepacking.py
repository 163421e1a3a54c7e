"""nn/layers.Conv2d: CPU inference convolves with weights packed once for oneDNN; everything
else (training, scripting, exporting, estimating) sees the plain convolution."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import torch

import unetdsl
from unetdsl import build_model
from unetdsl.nn.layers import Conv2d, prepacking_off, set_prepacking

from .conftest import TINY

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN (mkldnn)")


def _packed(model: torch.nn.Module) -> int:
    return sum("_packed" in m.__dict__ for m in model.modules() if isinstance(m, Conv2d))


@pytest.fixture
def model() -> torch.nn.Module:
    return build_model(TINY, seed=1).eval()


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([3, 700])


def test_inference_packs_once_and_gives_the_plain_numbers(model: torch.nn.Module) -> None:
    x, t = _inputs()
    convs = [m for m in model.modules() if isinstance(m, Conv2d)]
    with torch.inference_mode(), prepacking_off(model):
        plain = model(x, t)
    assert _packed(model) == 0
    with torch.inference_mode():
        packed = model(x, t)
        packs = {id(m.__dict__["_packed"][1]) for m in convs}
        again = model(x, t)  # the same packed copies, not new ones
        assert packs == {id(m.__dict__["_packed"][1]) for m in convs}
    assert _packed(model) == len(convs) > 0
    torch.testing.assert_close(packed, plain, rtol=1e-4, atol=1e-5)
    assert torch.equal(again, packed)
    with torch.no_grad():  # no_grad counts as inference too
        torch.testing.assert_close(model(x, t), packed, rtol=0, atol=0)


def test_training_and_tracing_see_the_plain_convolution(model: torch.nn.Module) -> None:
    x, t = _inputs()
    model.train()
    out = model(x, t)  # grad enabled: autograd must see aten's convolution
    out.square().mean().backward()
    assert _packed(model) == 0
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    program = torch.export.export(model, (x, t))
    assert _packed(model) == 0
    assert not any("mkldnn" in str(n.target) for n in program.graph.nodes)


def test_compiling_an_inference_model_traces_one_whole_graph(model: torch.nn.Module) -> None:
    """torch.compile in inference mode sees the plain convolution without a graph break: the
    packing test must not ask dynamo anything it cannot trace (it once broke the graph at every
    convolution, so a compiled model recompiled per conv shape and ran piecewise)."""
    x, t = _inputs()
    torch._dynamo.reset()
    with torch.inference_mode(), prepacking_off(model):
        want = model(x, t)
    with torch.inference_mode():
        got = torch.compile(model, backend="eager", fullgraph=True)(x, t)  # fullgraph: a break raises
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert _packed(model) == 0


def test_a_1x1_weight_is_packed_again_for_another_input_shape(model: torch.nn.Module) -> None:
    """A 1x1 weight's oneDNN layout depends on the input's shape (layers.packs_for_any_shape): run
    at another shape with the old packing, oneDNN would reorder it on every call. A 3x3 weight's
    packing serves every shape and is kept."""
    convs = [m for m in model.modules() if isinstance(m, Conv2d)]
    ones = [m for m in convs if m.kernel_size == (1, 1)]
    wide = [m for m in convs if m.kernel_size != (1, 1)]
    assert ones and wide
    x, t = _inputs()
    small = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        model(x, t)
        before = {id(m): id(m.__dict__["_packed"][1]) for m in convs}
        model(x, t)  # the same shape: nothing repacked
        assert before == {id(m): id(m.__dict__["_packed"][1]) for m in convs}
        out = model(small, torch.tensor([1, 2, 3]))
        after = {id(m): id(m.__dict__["_packed"][1]) for m in convs}
        with prepacking_off(model):
            torch.testing.assert_close(out, model(small, torch.tensor([1, 2, 3])), rtol=1e-4, atol=1e-5)
    assert all(after[id(m)] != before[id(m)] for m in ones)
    assert all(after[id(m)] == before[id(m)] for m in wide)


def test_a_changed_weight_is_packed_again(model: torch.nn.Module) -> None:
    x, t = _inputs()
    other = build_model(TINY, seed=2).eval()
    with torch.inference_mode():
        model(x, t)
        want = other(x, t)
    model.load_state_dict(other.state_dict())  # in place: the weights' version counters move
    with torch.inference_mode():
        torch.testing.assert_close(model(x, t), want, rtol=0, atol=0)
    with torch.no_grad():
        model.conv_in.weight.mul_(0.0)  # an in-place edit (an EMA update, say)
        model.conv_in.bias.zero_()
        out = model(x, t)
    with torch.no_grad(), prepacking_off(model):
        torch.testing.assert_close(out, model(x, t), rtol=1e-4, atol=1e-5)
    double = copy.deepcopy(model).to(torch.float64)  # another dtype: not packed, plain float64
    with torch.no_grad():
        assert double(x.double(), t).dtype == torch.float64
    assert _packed(double) == 0


def test_a_model_made_inside_inference_mode_runs_and_sees_its_new_weights(tmp_path: Path) -> None:
    # its weights are inference tensors, which have no version counter: they convolve unpacked,
    # so an in-place load inside inference mode is seen (this forward raised before)
    x, t = _inputs()
    other = build_model(TINY, seed=2).eval()
    with torch.inference_mode():
        want = other(x, t)
        unetdsl.save(other, tmp_path / "w.safetensors")
        loaded = unetdsl.load(tmp_path / "w.safetensors").eval()
        torch.testing.assert_close(loaded(x, t), want, rtol=1e-4, atol=1e-5)
        made = build_model(TINY, seed=1).eval()
        first = made(x, t)
        made.load_state_dict(other.state_dict())
        torch.testing.assert_close(made(x, t), want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(first, want)
    assert _packed(made) == 0 and _packed(loaded) == 0


def test_autocast_inference_runs_the_autocast_convolution(model: torch.nn.Module) -> None:
    # oneDNN's packed op has no autocast rule: packed, the convolutions ran float32 under
    # torch.autocast("cpu", bfloat16), where nn.Conv2d runs bfloat16
    x, t = _inputs()
    conv = torch.nn.Conv2d(3, 8, 3, padding=1).eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours = model.conv_in(x)
        want = torch.nn.functional.conv2d(x, model.conv_in.weight, model.conv_in.bias, padding=1)
        assert conv(x).dtype == ours.dtype == torch.bfloat16
        assert torch.equal(ours, want)
        model(x, t)
    assert _packed(model) == 0
    with torch.inference_mode():
        assert model.conv_in(x).dtype == torch.float32 and _packed(model) == 1  # outside autocast: packed


def test_transforms_and_forward_mode_ad_see_the_plain_convolution() -> None:
    # oneDNN's packed op has no batching rule and no forward derivative: under no_grad, vmap
    # raised "NYI: querying is_contiguous inside of vmap" and jvp had no derivative
    torch.manual_seed(0)
    conv = Conv2d(4, 5, 3, padding=1).eval()
    x, v = torch.randn(3, 2, 4, 8, 8), torch.randn(2, 4, 8, 8)

    def plain(inp: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(inp, conv.weight, conv.bias, padding=1)

    with torch.no_grad():
        torch.testing.assert_close(torch.func.vmap(conv)(x), torch.stack([plain(xi) for xi in x]))
        out, tangent = torch.func.jvp(conv, (x[0],), (v,))
        torch.testing.assert_close(tangent, plain(v) - conv.bias[:, None, None])  # linear in x
        torch.testing.assert_close(out, plain(x[0]))
    assert "_packed" not in conv.__dict__
    with torch.no_grad():
        conv(x[0])
    assert "_packed" in conv.__dict__  # outside them: packed


def test_the_packed_copy_is_never_saved_copied_or_kept_for_training(model: torch.nn.Module) -> None:
    x, t = _inputs()
    with torch.inference_mode():
        want = model(x, t)
    assert _packed(model) > 0
    twin = copy.deepcopy(model)
    assert _packed(twin) == 0
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    assert _packed(torch.load(buffer, weights_only=False)) == 0
    assert set(model.state_dict()) == set(twin.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(twin(x, t), want, rtol=0, atol=0)
    model.train()
    assert _packed(model) == 0


def test_prepacking_can_be_turned_off(model: torch.nn.Module) -> None:
    x, t = _inputs()
    unetdsl.set_prepacking(model, False)
    with torch.inference_mode():
        model(x, t)
    assert _packed(model) == 0
    set_prepacking(model, True)
    with prepacking_off(model), torch.inference_mode():
        model(x, t)
    assert _packed(model) == 0
    assert all(m.prepack for m in model.modules() if isinstance(m, Conv2d))  # restored on exit
