"""aoti_packing: inside packing(), inductor's freezing packs CPU convolution weights larger than
1x1 even when the input's sizes are dynamic; outside it, inductor is unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from unetdsl import aoti_packing

pytestmark = pytest.mark.skipif(not aoti_packing.MKLDNN_PACKING, reason="needs oneDNN (mkldnn)")


class _Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 8, 3, padding=1)  # packs for any shape
        self.b = nn.Conv2d(8, 4, 1)  # 1x1: its packed layout depends on the shape; left to inductor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def _compile(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """torch.compile with freezing, dynamic sizes -> (its output, weights inductor itself packed)."""
    from torch._inductor import config

    torch._dynamo.reset()
    counters.clear()
    with config.patch(freezing=True), torch.no_grad():
        out = torch.compile(model, dynamic=True)(x)
    return out, counters["inductor"]["mkldnn_conv_weight_pack_matcher_count"]


def test_dynamic_sizes_pack_only_inside_and_only_kernels_larger_than_1x1() -> None:
    torch.manual_seed(0)
    model = _Two().eval()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        want = model(x)
    with aoti_packing.packing() as packed:
        inside, by_inductor = _compile(model, x)
    assert packed == [1] and by_inductor == 1  # the 3x3 ours; the 1x1 inductor's (packed per call)
    out, by_inductor = _compile(model, x)  # outside: another compile in the process sees inductor as it is
    assert by_inductor == 2 and packed == [1]
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(inside, want, rtol=1e-5, atol=1e-5)
