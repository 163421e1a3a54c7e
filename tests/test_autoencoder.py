"""model: autoencoder (the KL autoencoder of latent diffusion): the language's rules, the halves as
models of their own, and diffusers' AutoencoderKL both ways to 1e-5 (fp32), eagerly and through
TorchScript. Every model is randomly initialised and perturbed here (no downloads)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from unetdsl import SpecError, build_model, resolve_spec
from unetdsl.cli import main
from unetdsl.interop.diffusers import from_diffusers, spec_from_diffusers, to_diffusers
from unetdsl.torchscript import load, script

from .conftest import ROOT, TINY

SMALL = (ROOT / "specs" / "vae-tiny.yaml").read_text()


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        resolve_spec(text)
    return [p.render() for p in info.value.problems]


def test_the_autoencoder_mirrors_its_decoder_with_one_block_more() -> None:
    spec, _ = resolve_spec(SMALL)
    assert [lv.channels for lv in spec.decoder] == [32, 16] and [len(lv.blocks) for lv in spec.decoder] == [2, 2]
    assert all(b.skip_channels == 0 for lv in spec.decoder for b in lv.blocks)
    assert spec.latent is not None and spec.latent.quant_conv and spec.latent.post_quant_conv
    model = build_model(spec).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        moments = model.encode(x)
        assert moments.shape == (2, 8, 8, 8)
        assert torch.equal(model(x), model.decode(moments[:, :4]))  # forward decodes the posterior's mean
    assert model.scaling_factor == 0.18215


def test_each_half_is_a_model_of_its_own_with_a_spec_that_reads_back() -> None:
    whole, _ = resolve_spec(SMALL)
    model = build_model(whole).eval()
    for half in ("encoder", "decoder"):
        part = whole.part(half)
        assert model.get_submodule(half).spec == part
        again, _ = resolve_spec(part.view())
        assert again.spec_id == part.spec_id and again.model == half
    # the decoder alone holds the post-quant conv and nothing of the encoder
    dec = model.decoder
    assert {k.split(".")[0] for k in dec.state_dict()} == {"conv_in", "head", "middle", "decoder", "post_quant_conv"}
    z = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(dec(z), model.decode(z))
    with pytest.raises(ValueError, match="only an autoencoder has an encoder and a decoder part"):
        resolve_spec(TINY)[0].part("decoder")


@pytest.mark.parametrize(("change", "where", "says"), [
    (("latent: {channels: 4, scaling_factor: 0.18215}\n", ""), "latent", "an autoencoder needs a latent section"),
    (("name: vae-tiny\n", "name: vae-tiny\ntime: {embedding: sinusoidal}\n"), "time", "takes images only"),
    (("model: autoencoder", "model: encoder"), "out_channels", "mean and log-variance: 8 channels"),
    (("model: autoencoder", "model: unet\ntime: {embedding: sinusoidal}"), "latent", "a U-Net has no latent section"),
    (("{channels: 4, scaling_factor", "{channels: 4, quant_conv: true, post_quant_conv: true, scaling_factor"),
     None, None),  # explicit true on an autoencoder is the default
])
def test_latent_rules(change: tuple[str, str], where: str | None, says: str | None) -> None:
    text = SMALL.replace(*change)
    if where is None:
        assert resolve_spec(text)[0].spec_id == resolve_spec(SMALL)[0].spec_id
        return
    rendered = problems(text)
    assert any(f": {where}: " in r and says in r for r in rendered), rendered


def test_a_standalone_half_with_a_latent_section() -> None:
    decoder = (ROOT / "specs" / "ldm-kl-f8-decoder.yaml").read_text() + "latent: {channels: 4, scaling_factor: 0.18215}\n"
    spec, _ = resolve_spec(decoder)
    assert spec.latent is not None and spec.latent.post_quant_conv and not spec.latent.quant_conv
    assert "post_quant_conv.weight" in build_model(spec, device="meta").state_dict()
    assert any("the quant conv is the encoder's" in r
               for r in problems(decoder.replace("{channels: 4,", "{channels: 4, quant_conv: true,")))
    wider = decoder.replace("latent: {channels: 4,", "latent: {channels: 8,")
    assert any("latent takes 8 channels" in r for r in problems(wider))


def test_stable_diffusion_vae_counts_exactly_on_meta() -> None:
    model = build_model(ROOT / "specs" / "sd-vae.yaml", device="meta")
    assert sum(p.numel() for p in model.parameters()) == 83_653_863
    assert sum(p.numel() for p in model.decoder.parameters()) == 49_490_199  # what a deployment ships


# --- diffusers AutoencoderKL ----------------------------------------------------------------------
diffusers = pytest.importorskip("diffusers")
logging.getLogger("diffusers").setLevel(logging.ERROR)

BASE: dict[str, Any] = dict(block_out_channels=(16, 32), norm_num_groups=8, layers_per_block=1, sample_size=16,
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
CONFIGS: dict[str, dict[str, Any]] = {
    "sd-like": dict(BASE),
    "three-levels-two-layers": {**BASE, "block_out_channels": (16, 32, 32), "layers_per_block": 2,
                                "down_block_types": ("DownEncoderBlock2D",) * 3,
                                "up_block_types": ("UpDecoderBlock2D",) * 3},
    "no-quant-convs-no-mid-attention": {**BASE, "use_quant_conv": False, "use_post_quant_conv": False,
                                        "mid_block_add_attention": False},
    "latent-8-gelu-channels": {**BASE, "latent_channels": 8, "act_fn": "gelu", "in_channels": 1, "out_channels": 2,
                               "scaling_factor": 0.5},
    "one-level-rect": {**BASE, "block_out_channels": (16,), "down_block_types": ("DownEncoderBlock2D",),
                       "up_block_types": ("UpDecoderBlock2D",), "sample_size": (8, 12)},
}


def make(config: dict[str, Any]) -> torch.nn.Module:
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(**config).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return vae


@pytest.mark.parametrize("name", list(CONFIGS))
def test_outputs_match_diffusers_eager_scripted_and_back(name: str) -> None:
    config = CONFIGS[name]
    vae = make(config)
    model = from_diffusers(vae).eval()
    size = config["sample_size"]
    hw = tuple(size) if isinstance(size, tuple) else (size, size)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((2, config.get("in_channels", 3), *hw), generator=g)
    f = 2 ** (len(config["block_out_channels"]) - 1)
    z = torch.randn((2, config.get("latent_channels", 4), hw[0] // f, hw[1] // f), generator=g)
    scripted = script(model)
    with torch.no_grad():  # (a scripted module in-process: no_grad, not inference_mode; see test_torchscript.py)
        posterior = vae.encode(x).latent_dist
        for ours in (model, scripted):
            assert (ours.encode(x) - posterior.parameters).abs().max().item() <= 1e-5
            assert (ours.decode(z) - vae.decode(z).sample).abs().max().item() <= 1e-5
            assert (ours(x) - vae(x).sample).abs().max().item() <= 1e-5
        back = to_diffusers(model)
        assert type(back).__name__ == "AutoencoderKL" and back.config.scaling_factor == vae.config.scaling_factor
        assert (back.decode(z).sample - model.decode(z)).abs().max().item() <= 1e-5
    assert model.scaling_factor == config.get("scaling_factor", 0.18215)


def test_sd_vae_spec_is_diffusers_default_sd_config() -> None:
    config = {"_class_name": "AutoencoderKL", "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
              "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
              "sample_size": 512, "scaling_factor": 0.18215}
    assert (resolve_spec(spec_from_diffusers(config))[0].spec_id
            == resolve_spec(ROOT / "specs" / "sd-vae.yaml")[0].spec_id)


@pytest.mark.parametrize(("change", "key"), [
    ({"shift_factor": 0.1159}, "shift_factor"),
    ({"latents_mean": [0.0] * 4}, "latents_mean"),
    ({"down_block_types": ("DownEncoderBlock2D", "AttnDownEncoderBlock2D")}, "down_block_types.1"),
    ({"act_fn": "tanh"}, "act_fn"),
    ({"norm_num_groups": 5}, "norm_num_groups"),  # 5 groups do not divide 16 channels: the resolver's rule
    ({"typo_key": 1}, "typo_key"),
])
def test_unrepresentable_autoencoder_configs_are_refused_by_name(change: dict[str, Any], key: str) -> None:
    with pytest.raises(SpecError) as info:
        spec_from_diffusers({"_class_name": "AutoencoderKL", **BASE, **change})
    assert key in [p.dotted_path for p in info.value.problems]


def test_cli_ships_the_decoder_alone(tmp_path: Path) -> None:
    vae = make(CONFIGS["sd-like"])
    vae.save_pretrained(tmp_path / "vae")
    spec, weights = tmp_path / "vae.yaml", tmp_path / "vae.safetensors"
    assert main(["convert", "diffusers", str(tmp_path / "vae"), "-o", str(spec), "--weights", str(weights)]) == 0
    assert main(["build", str(spec), "--weights", str(weights), "--part", "decoder", "-o", str(tmp_path / "d.pt")]) == 0
    decoder = load(tmp_path / "d.pt")
    assert not any(k.startswith("encoder") for k in decoder.state_dict())
    z = torch.randn(3, 4, 6, 10)  # another batch and latent size than the check's
    with torch.inference_mode():
        assert (decoder(z) - vae.decode(z).sample).abs().max().item() <= 1e-5
    assert main(["build", str(ROOT / "specs" / "tiny.yaml"), "--part", "decoder", "-o", str(tmp_path / "t.pt")]) == 2
