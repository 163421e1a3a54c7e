"""unetdsl.torchscript_packing: a frozen CPU TorchScript file whose convolutions run on weights
packed for oneDNN, packed again by every load (Python or C++), saved with each weight once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from unetdsl import build_model, export
from unetdsl.inspect import read_metadata
from unetdsl.nn.layers import MKLDNN_PACKING, PACKED_DTYPES, Conv2d, prepacking_off
from unetdsl.provenance import TORCHSCRIPT_KEY
from unetdsl.torchscript import freeze, load, save, script
from unetdsl.torchscript_packing import PACKED, pack_convolutions

from .conftest import TEXT_TINY, TINY

pytestmark = pytest.mark.skipif(not MKLDNN_PACKING, reason="this torch has no oneDNN packed convolution")


def _kinds(module: torch.jit.ScriptModule) -> list[str]:
    out: list[str] = []
    stack = [module.graph.block()]
    while stack:
        for node in stack.pop().nodes():
            out.append(node.kind())
            stack.extend(node.blocks())
    return out


def _inputs(spec_channels: int = 3, size: tuple[int, int] = (24, 16)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(3, spec_channels, *size, generator=g), torch.tensor([1, 400, 999])


@pytest.mark.parametrize("spec", [TINY, TEXT_TINY], ids=["tiny", "text-tiny"])
def test_frozen_cpu_file_convolves_with_packed_weights(spec: str, tmp_path: Path, default_threads: int) -> None:
    # bit for bit at the machine's default thread count (here 2); at one thread the two
    # differ by float32 rounding (1.2e-6 on tiny; not yet traced to the op that differs)
    model = build_model(spec).eval()
    convs = [m for m in model.modules() if isinstance(m, Conv2d)]
    packed, ones = sum(m.kernel_size != (1, 1) for m in convs), sum(m.kernel_size == (1, 1) for m in convs)
    assert packed > 0 and ones > 0  # both kinds in the spec: 1x1 convolutions are never packed
    export(model, tmp_path / "m.pt", freeze=True)
    loaded = load(tmp_path / "m.pt")
    kinds = _kinds(loaded)
    assert kinds.count("mkldnn::_convolution_pointwise") == packed and kinds.count("aten::conv2d") == ones
    assert read_metadata(tmp_path / "m.pt")[TORCHSCRIPT_KEY] == (
        f"frozen; {packed} convolution weights packed for oneDNN when loaded (a CPU-only file)")
    # a size the export never saw: the same op on the same packed weights as eager's packed path,
    # so the numbers are eager's bit for bit; and the plain convolution's to float32 rounding
    x, t = _inputs(model.spec.in_channels)
    extra = () if model.spec.context_dim is None else (None, torch.randn(3, 5, model.spec.context_dim))
    with torch.inference_mode():
        got = loaded(x, t, *extra)
        assert torch.equal(got, model(x, t, *extra))
        with prepacking_off(model):
            torch.testing.assert_close(got, model(x, t, *extra), rtol=1e-5, atol=1e-5)


def test_a_loaded_file_saves_again_with_each_weight_once(tmp_path: Path) -> None:
    model = build_model(TINY).eval()
    export(model, tmp_path / "packed.pt", freeze=True)
    export(model, tmp_path / "plain.pt", freeze=True, prepack=False)
    first = load(tmp_path / "packed.pt")
    save(first, tmp_path / "again.pt", {})  # __getstate__ unpacks the weights exactly
    again = load(tmp_path / "again.pt")
    x, t = _inputs()
    with torch.inference_mode():
        assert torch.equal(again(x, t), first(x, t))
    weights = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if n.endswith("weight"))
    sizes = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    # the packed file holds the plain weights once, as the plain frozen file does (not twice)
    assert abs(sizes["packed.pt"] - sizes["plain.pt"]) < weights / 4


def test_prepack_false_keeps_the_plain_frozen_graph(tmp_path: Path) -> None:
    export(build_model(TINY), tmp_path / "m.pt", freeze=True, prepack=False)
    kinds = _kinds(load(tmp_path / "m.pt"))
    assert "aten::conv2d" in kinds and "mkldnn::_convolution_pointwise" not in kinds
    assert read_metadata(tmp_path / "m.pt")[TORCHSCRIPT_KEY] == "frozen (weights are constants of the graph)"
    export(build_model(TINY), tmp_path / "s.pt")
    assert read_metadata(tmp_path / "s.pt")[TORCHSCRIPT_KEY].startswith("scripted")
    scripted = load(tmp_path / "s.pt")  # unfrozen: weights are parameters, never packed
    graph = str(scripted.inlined_graph)
    assert "aten::conv2d" in graph and "_convolution_pointwise" not in graph and not scripted._c.hasattr(PACKED)


@pytest.mark.skipif(torch.bfloat16 not in PACKED_DTYPES, reason="this CPU's oneDNN has no bfloat16 convolution")
def test_bfloat16_frozen_file_is_packed_too(tmp_path: Path) -> None:
    model = build_model(TINY, dtype=torch.bfloat16).eval()
    report = export(model, tmp_path / "m.pt", freeze=True)
    assert report.max_abs_diff < 0.1
    assert "packed for oneDNN" in read_metadata(tmp_path / "m.pt")[TORCHSCRIPT_KEY]
    x, t = _inputs()
    with torch.inference_mode():
        assert torch.equal(load(tmp_path / "m.pt")(x.bfloat16(), t), model(x.bfloat16(), t))


def test_loading_onto_another_device_is_refused_with_the_reason(tmp_path: Path) -> None:
    """torch.jit.load(map_location=<a GPU>) hands __setstate__ the weights on that device: it
    says why the file cannot go there (shown here with meta tensors; no GPU needed)."""
    export(build_model(TINY), tmp_path / "m.pt", freeze=True)
    loaded = load(tmp_path / "m.pt")
    weights, params = loaded._c._get_method("__getstate__")()
    with pytest.raises(torch.jit.Error, match="frozen for the CPU, with its convolution weights packed for oneDNN"):
        loaded._c._get_method("__setstate__")(([w.to("meta") for w in weights], params))


def test_concurrent_forwards_share_the_packed_weights(tmp_path: Path) -> None:
    """Packing happens once, at load: threads serving one module read it and never write it."""
    export(build_model(TINY), tmp_path / "m.pt", freeze=True)
    loaded = load(tmp_path / "m.pt")
    x, t = _inputs()
    with torch.inference_mode():
        want = loaded(x, t)
    results: list[torch.Tensor] = []

    def serve() -> None:
        with torch.inference_mode():
            for _ in range(3):
                results.append(loaded(x, t))

    threads = [threading.Thread(target=serve) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 12 and all(torch.equal(r, want) for r in results)


def test_convolutions_it_cannot_pack_are_left_alone() -> None:
    class Mixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.same = torch.nn.Conv2d(3, 4, 3, padding="same")  # a string padding: aten pads, not oneDNN
            self.c1d = torch.nn.Conv1d(4, 4, 3)
            self.fp16 = torch.nn.Conv2d(4, 4, 1).half()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.same(x)
            return self.c1d(h.flatten(2)).sum() + self.fp16(h.half()).float().sum()

    frozen = freeze(script(Mixed().eval()))
    assert pack_convolutions(frozen) == 0
    assert not frozen._c.hasattr(PACKED)
    assert not frozen._c._has_method("__setstate__")  # nothing added: the module saves as any frozen module
