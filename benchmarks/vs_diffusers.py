"""unetdsl against diffusers on the same architecture and the same weights, in one process.

    .venv/bin/python benchmarks/vs_diffusers.py [--spec specs/ddpm-cifar10.yaml] [--batch 8]
        [--size N] [--tokens 77] [--threads 2] [--rounds 21] [--device cpu|cuda] [--dtype float32|float16]
        [--aoti] [--flops]
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
  unetdsl TorchScript frozen (`build --freeze`: on the CPU with packed convolution weights) /
  diffusers traced and frozen (torch.jit.freeze), and / diffusers traced
  unetdsl AOTInductor package (`--aoti`: `build --format aoti`, minutes to compile) / diffusers
  traced and frozen
`--flops` adds the FLOP/s unetdsl eager achieves (FLOPs from unetdsl.estimate) against the best
FLOP/s of a single 3x3 convolution of this model run alone on the same machine (each of its 3x3
convolutions timed standalone at the shape it meets in this forward, in its layout).
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
from timing import interleaved  # benchmarks/timing.py (run as a script: its folder is on sys.path)
from timing import paired as paired_ratio

from unetdsl import build_model, export
from unetdsl.artifacts import FORMATS
from unetdsl.estimate import estimate
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
    ap.add_argument("--aoti", action="store_true", help="also an AOTInductor package (compiles for minutes)")
    ap.add_argument("--frozen", action=argparse.BooleanOptionalAction, default=True,
                    help="also frozen TorchScript against a frozen trace (two more copies of the weights)")
    ap.add_argument("--flops", action="store_true", help="also the achieved FLOP/s against the best single 3x3 conv")
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
        export(ours, Path(tmp) / "m.pt")
        scripted = load(Path(tmp) / "m.pt", map_location=device)
        if args.frozen:
            export(ours, Path(tmp) / "f.pt", freeze=True)
            frozen = load(Path(tmp) / "f.pt", map_location=device)
        if args.aoti:
            export(ours, Path(tmp) / "m.aoti.pt2", format="aoti")
            aoti = FORMATS["aoti"].load(Path(tmp) / "m.aoti.pt2", device)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # trace warnings and torch.jit deprecation: diffusers' side, not ours
        traced = torch.jit.trace(_Traceable(theirs, call), present, check_trace=False)
        if args.frozen:
            traced_frozen = torch.jit.freeze(torch.jit.trace(_Traceable(theirs, call), present, check_trace=False).eval())

    contenders: dict[str, Callable[[], object]] = {
        "unetdsl eager": lambda: ours(*args_ours),
        "diffusers eager": lambda: call(theirs, *present),
        "unetdsl torchscript": lambda: scripted(*args_ours),
        "diffusers traced": lambda: traced(*present),
    }
    if args.frozen:
        contenders["unetdsl ts frozen"] = lambda: frozen(*args_ours)
        contenders["diffusers traced frozen"] = lambda: traced_frozen(*present)
    if args.aoti:
        contenders["unetdsl aoti"] = lambda: aoti(inp)
    with torch.inference_mode():
        times = interleaved(contenders, args.rounds, sync=sync)
    med = {k: statistics.median(v) for k, v in times.items()}

    def paired(a: str, b: str) -> str:
        return paired_ratio(times[a], times[b])
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} threads"
    tokens = f", {args.tokens} tokens" if inp.context is not None else ""
    print(f"{spec.name}: batch {args.batch}, {list(inp.x.shape[2:])}{tokens}, {args.dtype}, {where}, "
          f"torch {torch.__version__}; "
          f"max |unetdsl - diffusers| = {diff:.2e}; median of {args.rounds} interleaved rounds")
    for name, m in med.items():
        print(f"  {name:24} {m * 1000:9.2f} ms")
    print(f"  ratio unetdsl eager / diffusers eager:        {paired('unetdsl eager', 'diffusers eager')}")
    print(f"  ratio unetdsl torchscript / diffusers traced: {paired('unetdsl torchscript', 'diffusers traced')}")
    if args.frozen:
        print(f"  ratio unetdsl ts frozen / diffusers traced frozen: {paired('unetdsl ts frozen', 'diffusers traced frozen')}")
        print(f"  ratio unetdsl ts frozen / diffusers traced:   {paired('unetdsl ts frozen', 'diffusers traced')}")
    if args.aoti and args.frozen:
        print(f"  ratio unetdsl aoti / diffusers traced frozen: {paired('unetdsl aoti', 'diffusers traced frozen')}")
    if args.aoti:
        print(f"  ratio unetdsl aoti / diffusers traced:        {paired('unetdsl aoti', 'diffusers traced')}")
    if args.flops:
        flops = estimate(spec, batch=args.batch, size=list(inp.x.shape[2:])).flops
        best, shape = _best_conv(ours, args_ours, sync)
        achieved = flops / med["unetdsl eager"]
        print(f"  unetdsl eager achieves {achieved / 1e9:.1f} GFLOP/s ({flops / 1e9:.2f} GFLOP a forward) = "
              f"{achieved / best:.2f}x the best single 3x3 conv of this model alone ({best / 1e9:.1f} GFLOP/s, {shape})")


def _best_conv(model: torch.nn.Module, args: tuple[object, ...], sync: Callable[[], None]) -> tuple[float, str]:
    """The highest FLOP/s among the model's 3x3 convolutions, each run alone (median of 5) on the
    input it receives in this forward, in that input's layout."""
    seen: list[tuple[torch.nn.Conv2d, torch.Tensor]] = []
    hooks = [m.register_forward_pre_hook(lambda m, inp: seen.append((m, inp[0].clone(memory_format=torch.preserve_format))))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    with torch.inference_mode():
        model(*args)
    for h in hooks:
        h.remove()
    best, where = 0.0, ""
    with torch.inference_mode():
        for conv, x in seen:
            out = conv(x)
            flops = 2 * out.numel() * conv.in_channels // conv.groups * 9
            times = []
            for _ in range(5):
                sync()
                start = time.perf_counter()
                conv(x)
                sync()
                times.append(time.perf_counter() - start)
            rate = flops / statistics.median(times)
            if rate > best:
                layout = "channels-last" if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1 else "default"
                best, where = rate, f"{conv.in_channels}->{conv.out_channels} on {list(x.shape)}, {layout}"
    return best, where


if __name__ == "__main__":
    main()
