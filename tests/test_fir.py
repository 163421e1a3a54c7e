"""FIR resampling (issue 24, item 2): a level's resample_filter shapes avgpool and resblock
resampling, equal to EDM's definition (the normalised outer product as a depthwise stride-2
convolution, or the transposed one times 2^dims, padded by (taps - 1) // 2) in 1D, 2D and 3D; the
box [1, 1] is exactly 2x average pooling and nearest upsampling; a filter where it cannot apply is
refused where it was written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import unetdsl
from unetdsl import SpecError, build_model, resolve_spec
from unetdsl.nn.sampling import FirResample
from unetdsl.sample import sample_inputs
from unetdsl.torchscript import script

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def edm_resample(x: torch.Tensor, taps: list[float], up: bool) -> torch.Tensor:
    """EDM's Conv2d resampling (training/networks.py), written out for any dims."""
    dims, c = x.dim() - 2, x.shape[1]
    f = torch.tensor(taps, dtype=torch.float64)
    k = f
    for _ in range(dims - 1):
        k = torch.einsum("...i,j->...ij", k, f)
    k = (k / f.sum() ** dims)[None, None].to(x.dtype)
    pad = (len(taps) - 1) // 2
    if up:
        return CONV_T[dims](x, (k * 2**dims).tile([c, 1] + [1] * dims), groups=c, stride=2, padding=pad)
    return CONV[dims](x, k.tile([c, 1] + [1] * dims), groups=c, stride=2, padding=pad)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("taps", [[1, 1], [1, 3, 3, 1], [1, 5, 10, 10, 5, 1]])
def test_fir_resampling_is_edms_in_every_dims(dims: int, taps: list[float]) -> None:
    x = torch.randn(2, 3, *([8] * dims), dtype=torch.float64)
    for up in (False, True):
        ours = FirResample(dims=dims, taps=[float(t) for t in taps], up=up).double()
        want = edm_resample(x, taps, up)
        assert ours(x).shape == want.shape == (2, 3, *([16 if up else 4] * dims))
        torch.testing.assert_close(ours(x), want, rtol=0, atol=1e-12)


def test_the_box_filter_is_average_pooling_and_nearest_upsampling() -> None:
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(FirResample(dims=2, taps=[1.0, 1.0], up=False)(x), F.avg_pool2d(x, 2))
    assert torch.equal(FirResample(dims=2, taps=[1.0, 1.0], up=True)(x), F.interpolate(x, scale_factor=2.0))


SPEC: dict[str, Any] = {
    "unetdsl": 1, "name": "fir", "in_channels": 2, "out_channels": 2, "sample_size": 8,
    "time": {"embedding": "sinusoidal", "features": 8}, "defaults": {"norm": {"groups": 4}, "resample_filter": [1, 3, 3, 1]},
    "encoder": {"downsample": "resblock", "levels": [{"channels": 8, "blocks": 1},
                                                     {"channels": 16, "blocks": 1, "downsample": "avgpool"},
                                                     {"channels": 16, "blocks": 1}]},
    "decoder": {"upsample": "resblock"},
}


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_a_filtered_unet_builds_scripts_and_exports(dims: int, tmp_path: Path) -> None:
    model = build_model({**SPEC, "dims": dims}, seed=0).eval()
    assert type(model.encoder[0].downsample.block.resample).__name__ == "FirResample"
    assert type(model.encoder[1].downsample).__name__ == "FirResample"
    assert "kernel" not in " ".join(model.state_dict())  # the filter is the spec's, not a weight
    s = sample_inputs(model.spec)  # type: ignore[arg-type]
    with torch.no_grad():
        assert (script(model)(*s.args()) - model(*s.args())).abs().max().item() <= 1e-5
    assert unetdsl.export(model, tmp_path / "m.pt2", format="export").max_abs_diff <= 1e-4


@pytest.mark.parametrize(("change", "path", "words"), [
    ({"encoder": {"downsample": "conv", "levels": SPEC["encoder"]["levels"]}}, ("defaults", "resample_filter"),
     "encoder level 0 resamples by conv, which has no filter"),
    ({"defaults": {"norm": {"groups": 4}, "resample_filter": [1, 2, 1]}}, ("defaults", "resample_filter"),
     "an even number of taps"),
    ({"defaults": {"norm": {"groups": 4}, "resample_filter": [1, -1]}}, ("defaults", "resample_filter"),
     "a non-zero sum"),
    ({"decoder": {"upsample": "nearest"}}, ("defaults", "resample_filter"), "resamples by nearest"),
])
def test_a_filter_where_it_cannot_apply_is_refused(change: dict[str, Any], path: tuple[Any, ...], words: str) -> None:
    with pytest.raises(SpecError) as info:
        resolve_spec({**SPEC, **change})
    assert any(p.path == path and words in p.message for p in info.value.problems), info.value.problems


def test_the_box_is_the_default_and_not_written() -> None:
    spec, _ = resolve_spec({**SPEC, "defaults": {"norm": {"groups": 4}}})
    assert spec.encoder[0].resample_filter == [1.0, 1.0]
    assert type(build_model(spec).encoder[1].downsample).__name__ == "PoolDownsample"  # as before the option
