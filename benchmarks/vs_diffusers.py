"""unetdsl against diffusers on the same architecture and the same weights, in one process.

    .venv/bin/python benchmarks/vs_diffusers.py [--spec specs/ddpm-cifar10.yaml] [--batch 8]
        [--size N] [--tokens 77] [--threads 2] [--rounds 21] [--device cpu|cuda] [--dtype float32|float16]
    .venv/bin/python benchmarks/vs_diffusers.py --spec specs/sd15-unet.yaml --batch 1 --size 32 --rounds 7
    .venv/bin/python benchmarks/vs_diffusers.py --spec specs/sd-vae.yaml --batch 1 --size 16 --rounds 7  # the decoder

Builds the spec in unetdsl, turns it into the diffusers model with the same weights
(unetdsl.interop.diffusers.to_diffusers: UNet2DModel, UNet2DConditionModel with a `--tokens`
context, or AutoencoderKL, whose decoder is timed on `--size` latents, as a deployment runs it;
outputs agree to 1e-5), then times forwards in
inference mode, interleaved round by round so machine noise hits every contender alike:
  unetdsl eager / diffusers eager
  unetdsl TorchScript (scripted file, reloaded) / diffusers torch.jit.trace (the best diffusers
  can do: its UNets do not script)
Each round runs every contender once, in an order that alternates round by round (ABBA), and
each ratio is the median over rounds of the *paired* per-round ratio, so drifts in machine speed
cancel; the interquartile range of those ratios says how much to trust the figure (< 1: unetdsl
is faster).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from timing import paired as paired_ratio  # benchmarks/timing.py (run as a script: its folder is on sys.path)

from unetdsl import build_model, export
from unetdsl.interop.diffusers import to_diffusers
from unetdsl.sample import sample_inputs
from unetdsl.torchscript import load


class _Traceable(torch.nn.Module):
    """diffusers' forward as a function of tensors only, for torch.jit.trace."""

    def __init__(self, unet: torch.nn.Module, call: Callable[..., torch.Tensor]):
        super().__init__()
        self.unet = unet
        self.call = call

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.call(self.unet, *args)


def _diffusers_call(spec: object, has_y: bool) -> Callable[..., torch.Tensor]:
    """How diffusers' model of this kind is called on (x[, t[, y]][, context]) -> the output tensor."""
    if getattr(spec, "model", None) == "autoencoder":
        return lambda m, z: m.decode(z).sample
    if getattr(spec, "context_dim", None) is not None:
        if has_y:
            return lambda m, x, t, y, c: m(x, t, encoder_hidden_states=c, class_labels=y, return_dict=False)[0]
        return lambda m, x, t, c: m(x, t, encoder_hidden_states=c, return_dict=False)[0]
    if has_y:
        return lambda m, x, t, y: m(x, t, class_labels=y, return_dict=False)[0]
    return lambda m, x, t: m(x, t, return_dict=False)[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="specs/ddpm-cifar10.yaml")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=None, help="spatial size (an autoencoder's: the latent's)")
    ap.add_argument("--tokens", type=int, default=77, help="context tokens of a text-conditioned U-Net")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    args = ap.parse_args()
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    torch.manual_seed(0)
    whole = build_model(args.spec, device=device, dtype=dtype).eval()  # inference: dropout off
    theirs = to_diffusers(whole).to(device=device, dtype=dtype).eval()
    # an autoencoder is timed as deployments run it: its decoder alone, on latents
    ours = whole.decoder if whole.spec.model == "autoencoder" else whole
    spec = ours.spec
    size = [args.size] * spec.dims if args.size else None
    inp = sample_inputs(spec, batch=args.batch, size=size, device=device, dtype=dtype, tokens=args.tokens)
    args_ours = inp.args()  # (x, t, y, context) with Nones: what the model takes
    present = inp.present()  # the tensors alone: what a traced or exported module takes
    call = _diffusers_call(whole.spec, inp.y is not None)
    with torch.inference_mode():
        diff = (ours(*args_ours) - call(theirs, *present)).abs().max().item()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.pt"
        export(ours, path)
        scripted = load(path, map_location=device)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # trace warnings and torch.jit deprecation: diffusers' side, not ours
        traced = torch.jit.trace(_Traceable(theirs, call), present, check_trace=False)

    contenders: dict[str, Callable[[], object]] = {
        "unetdsl eager": lambda: ours(*args_ours),
        "diffusers eager": lambda: call(theirs, *present),
        "unetdsl torchscript": lambda: scripted(*args_ours),
        "diffusers traced": lambda: traced(*present),
    }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    with torch.inference_mode():
        for fn in contenders.values():
            for _ in range(3):
                fn()
        order = list(contenders)
        for r in range(args.rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                sync()
                start = time.perf_counter()
                contenders[name]()
                sync()
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}

    def paired(a: str, b: str) -> str:
        return paired_ratio(times[a], times[b])
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} threads"
    tokens = f", {args.tokens} tokens" if inp.context is not None else ""
    print(f"{spec.name}: batch {args.batch}, {list(inp.x.shape[2:])}{tokens}, {args.dtype}, {where}, "
          f"torch {torch.__version__}; "
          f"max |unetdsl - diffusers| = {diff:.2e}; median of {args.rounds} interleaved rounds")
    for name, m in med.items():
        print(f"  {name:20} {m * 1000:9.2f} ms")
    print(f"  ratio unetdsl eager / diffusers eager:        {paired('unetdsl eager', 'diffusers eager')}")
    print(f"  ratio unetdsl torchscript / diffusers traced: {paired('unetdsl torchscript', 'diffusers traced')}")


if __name__ == "__main__":
    main()
