"""DDPM (epsilon prediction) on scikit-learn's digits: 1,797 real 8x8 grey images that ship inside
the package, so nothing is downloaded. Proof that a model built from a spec learns, and the recipe
for training one on one process or many.

    .venv/bin/python examples/train_digits.py --out runs/digits                         # one process
    .venv/bin/torchrun --nproc_per_node 2 examples/train_digits.py --out runs/digits    # DDP, unchanged
    .venv/bin/unetdsl build specs/ddpm-digits.yaml --weights runs/digits/checkpoints/latest/ema.safetensors -o digits.pt

What it does: the spec `specs/ddpm-digits.yaml` -> `unetdsl.build_model` (train mode) -> AdamW on
the denoising loss, an exponential moving average of the weights (torch.optim.swa_utils), a
progress bar, a checkpoint every `--checkpoint-every` steps (the model and the EMA through
`unetdsl.save`: safetensors + spec; the optimizer moments in safetensors too, never a pickle)
and resume from the latest one, then samples from the EMA weights, a PNG grid, and a sample
quality figure: the Frechet distance between held-out real digits and samples in the feature
space of a digits classifier trained on the training split, for the trained model, the untrained
model and real-vs-real (train split against held-out), so the gap is visible.

Every random draw is a function of (--seed, step): the global batch, its noise and timesteps, and
the dropout masks. A run therefore gives the same result on 1 or N processes (each rank takes its
slice of the same global batch) and a resumed run continues exactly where the first one stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import unetdsl
from unetdsl.fsutil import atomic_path, write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "ddpm-digits.yaml"
HELD_OUT = 297  # the last 297 of a fixed permutation of the 1,797 digits; 1,500 train


# --- data -----------------------------------------------------------------------------------
def digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 8, 8) images in [-1, 1] and their labels (N,), from a fixed split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 8.0 - 1.0  # 0..16 -> [-1, 1]
    labels = torch.tensor(data.target)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    chosen = order[-HELD_OUT:] if split == "held_out" else order[:-HELD_OUT]
    return images[chosen], labels[chosen]


# --- DDPM -----------------------------------------------------------------------------------
class Schedule:
    """Ho et al.'s linear beta schedule over T steps; q(x_t | x_0) and ancestral sampling."""

    def __init__(self, steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        self.steps = steps
        self.betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)  # (T,)

    def noisy(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod.to(x0.device)[t].float().view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1.0 - a).sqrt() * noise  # (B, 1, 8, 8)

    def respaced(self, n: int) -> tuple[list[int], torch.Tensor]:
        """n timesteps spread over [0, T) and the betas that make them one chain (guided-diffusion's
        respacing): beta_i = 1 - abar(s_i) / abar(s_{i-1})."""
        use = sorted({round(i * (self.steps - 1) / max(n - 1, 1)) for i in range(n)})
        abar = self.alphas_cumprod[use]
        prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        return use, 1.0 - abar / prev


def denoising_loss(model: Callable[..., torch.Tensor], schedule: Schedule, x0: torch.Tensor, t: torch.Tensor,
                   noise: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(model(schedule.noisy(x0, t, noise), t), noise)


@torch.no_grad()
def sample(model: Callable[..., torch.Tensor], schedule: Schedule, n: int, steps: int, seed: int,
           device: torch.device | str = "cpu") -> torch.Tensor:
    """Ancestral DDPM sampling over `steps` respaced timesteps; every draw comes from `seed`, so
    two models (eager and its exported file) sampled with one seed see the same noise."""
    use, betas = schedule.respaced(steps)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g).to(device)
    for i in reversed(range(len(use))):
        t = torch.full((n,), use[i], dtype=torch.long, device=device)
        eps = model(x, t)
        beta, abar = betas[i].item(), alphas_cumprod[i].item()
        mean = (x - beta / math.sqrt(1.0 - abar) * eps) / math.sqrt(1.0 - beta)
        if i > 0:
            var = beta * (1.0 - alphas_cumprod[i - 1].item()) / (1.0 - abar)  # the posterior variance
            mean = mean + math.sqrt(var) * torch.randn(n, 1, 8, 8, generator=g).to(device)
        x = mean
    return x.clamp(-1.0, 1.0)


# --- the quality figure -------------------------------------------------------------------------
class DigitsClassifier(nn.Module):
    """64 -> 256 -> 128 -> 10; the 128 features before the last layer are the embedding the
    Frechet distance is measured in (the role Inception plays for FID)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
        self.out = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


def train_classifier(seed: int = 0) -> tuple[DigitsClassifier, float]:
    """Trained on the training split only; returns it and its held-out accuracy."""
    x, y = digits("train")
    torch.manual_seed(seed)
    clf = DigitsClassifier()
    opt = torch.optim.Adam(clf.parameters(), lr=3e-3)
    for _ in range(300):  # full batch: 1,500 images
        opt.zero_grad()
        F.cross_entropy(clf(x), y).backward()
        opt.step()
    clf.eval()
    hx, hy = digits("held_out")
    with torch.no_grad():
        accuracy = (clf(hx).argmax(1) == hy).float().mean().item()
    return clf, accuracy


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^1/2) between two sets of features (N, D),
    in float64; tr (C_a C_b)^1/2 = sum of sqrt(eigenvalues of C_a^1/2 C_b C_a^1/2)."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    c_a, c_b = torch.cov(a.T), torch.cov(b.T)
    w, v = torch.linalg.eigh(c_a)
    root_a = v @ torch.diag(w.clamp(min=0).sqrt()) @ v.T
    cross = torch.linalg.eigvalsh(root_a @ c_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + c_a.trace() + c_b.trace() - 2.0 * cross)


def features(clf: DigitsClassifier, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return clf.body(images.cpu().float())


def save_grid(images: torch.Tensor, path: Path, columns: int = 10, scale: int = 4) -> None:
    """(N, 1, 8, 8) in [-1, 1] -> a PNG grid, each digit scaled up `scale` times (nearest)."""
    from PIL import Image

    n = images.shape[0]
    rows = math.ceil(n / columns)
    pixels = ((images.cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)[:, 0]  # (N, 8, 8)
    pad = 1
    grid = torch.full((rows * (8 + pad) + pad, columns * (8 + pad) + pad), 255, dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        grid[pad + r * (8 + pad): pad + r * (8 + pad) + 8, pad + c * (8 + pad): pad + c * (8 + pad) + 8] = pixels[i]
    image = Image.fromarray(grid.numpy(), mode="L").resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


# --- checkpoints: the model and EMA through unetdsl.save, the optimizer in safetensors ----------------
MANIFEST = "checkpoints.json"  # the step folders this example wrote: the only ones it ever deletes
STEP_DIR = "step-{:06d}"


def _written(directory: Path) -> list[int]:
    """The steps whose folders this example wrote into `directory` (its manifest), oldest first."""
    path = directory / MANIFEST
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    if not (isinstance(data, dict) and isinstance(data.get("steps"), list) and all(type(s) is int for s in data["steps"])):
        raise SystemExit(f"error: {path}: not a checkpoint manifest of this example; move it or the folder away")
    return sorted(data["steps"])


def _remove_stale_temporaries(directory: Path) -> None:
    """The temporary folders of killed runs (`.step-N.tmpPID` whose process is gone)."""
    for tmp in directory.glob(".step-*.tmp*"):
        pid = tmp.name.rpartition(".tmp")[2]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:  # alive, someone else's
            pass


def save_checkpoint(directory: Path, step: int, model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer,
                    keep: int = 2) -> Path:
    """checkpoints/step-NNNNNN/{model,ema,optimizer}.safetensors, written into a temporary folder and
    renamed into place (a killed run leaves the previous checkpoint intact); `latest` points at it.
    The manifest (checkpoints.json) lists the folders this example wrote; only those are replaced or
    deleted (the newest `keep` by step number stay), never a folder of someone else's."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(directory)
    written = _written(directory)
    final = directory / STEP_DIR.format(step)
    if (final.exists() or final.is_symlink()) and step not in written:
        raise SystemExit(f"error: {final} exists and this example did not write it: move it away")
    tmp = directory / f".{final.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    unetdsl.save(model, tmp / "model.safetensors")
    unetdsl.save(ema.module, tmp / "ema.safetensors")  # type: ignore[arg-type]
    state = opt.state_dict()
    tensors = {f"{i}.{k}": v.contiguous() for i, s in state["state"].items() for k, v in s.items()}
    tensors["ema.n_averaged"] = ema.n_averaged.detach().clone()  # type: ignore[union-attr]
    save_file(tensors, str(tmp / "optimizer.safetensors"),
              metadata={"param_groups": json.dumps(state["param_groups"]), "step": str(step)})
    if step in written:  # a resumed run writing a step again: the old copy is ours
        shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    written = sorted({*written, step})
    write_text_atomic(directory / MANIFEST, json.dumps({"steps": written}) + "\n")
    link = directory / "latest"
    tmp_link = directory / f".latest.tmp{os.getpid()}"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(final.name)
    os.replace(tmp_link, link)
    # the newest `keep` by step number stay (names sort wrongly past 999,999 steps); the one just written always
    stale = [s for s in written[:-keep] if s != step]
    for old in stale:
        shutil.rmtree(directory / STEP_DIR.format(old), ignore_errors=True)
    if stale:
        write_text_atomic(directory / MANIFEST, json.dumps({"steps": [s for s in written if s not in stale]}) + "\n")
    return final


def load_checkpoint(directory: Path, model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer) -> int:
    """Fill model, EMA and optimizer from the latest checkpoint; the step to continue from (0 if none)."""
    from safetensors import safe_open

    from unetdsl.weights import load_weights

    latest = directory / "latest"
    if not latest.exists():
        return 0
    load_weights(model, latest / "model.safetensors")
    load_weights(ema.module, latest / "ema.safetensors")  # type: ignore[arg-type]
    with safe_open(str(latest / "optimizer.safetensors"), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k).clone() for k in f.keys()}  # noqa: SIM118
    ema.n_averaged.copy_(tensors.pop("ema.n_averaged"))  # type: ignore[union-attr, operator]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return int(meta["step"])


# --- training ---------------------------------------------------------------------------------
@dataclass
class Config:
    out: str = "runs/digits"
    steps: int = 4000
    batch: int = 128          # the global batch, split over the processes
    lr: float = 1e-3
    warmup: int = 200
    ema: float = 0.999
    checkpoint_every: int = 1000
    samples: int = 500        # generated for the quality figure (and the grid's first 100)
    sample_steps: int = 250   # respaced DDPM steps for sampling
    seed: int = 0
    progress: bool = True


@dataclass
class Result:
    step: int
    seconds: float
    held_out_loss_trained: float
    held_out_loss_untrained: float
    classifier_accuracy: float | None = None
    fd_trained: float | None = None
    fd_untrained: float | None = None
    fd_real_vs_real: float | None = None


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


@torch.no_grad()
def held_out_loss(model: nn.Module, schedule: Schedule, device: torch.device) -> float:
    """The denoising loss on the held-out digits at fixed timesteps and noise (4 draws each)."""
    x0, _ = digits("held_out")
    g = torch.Generator().manual_seed(12345)
    total = 0.0
    for _ in range(4):
        t = torch.randint(0, schedule.steps, (len(x0),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        total += denoising_loss(model, schedule, x0.to(device), t.to(device), noise.to(device)).item()
    return total / 4


def train(cfg: Config) -> Result | None:
    """Train per `cfg` on this process or, under torchrun, on every process; rank 0 writes the
    checkpoints, the grid and the figures and returns them (other ranks return None)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    from tqdm import tqdm

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if torch.cuda.is_available() else torch.device("cpu")
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if cfg.batch % world:
        raise SystemExit(f"--batch {cfg.batch} must be divisible by the {world} processes")
    out = Path(cfg.out)
    schedule = Schedule()
    x_train, _ = digits("train")
    x_train = x_train.to(device)

    model = unetdsl.build_model(SPEC, seed=cfg.seed, device=device)  # train mode: dropout on
    untrained_loss = held_out_loss(unetdsl.build_model(SPEC, seed=cfg.seed, device=device).eval(), schedule, device)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    start = load_checkpoint(out / "checkpoints", model, ema, opt)
    if rank == 0 and start:
        print(f"resuming from step {start} ({out / 'checkpoints' / 'latest'})", file=sys.stderr)
    net: nn.Module = nn.parallel.DistributedDataParallel(model) if distributed else model
    local = slice(rank * cfg.batch // world, (rank + 1) * cfg.batch // world)

    began = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=rank != 0 or not cfg.progress,
               desc="train", unit="step", dynamic_ncols=True)
    for step in bar:
        g = step_generator(cfg.seed, step)  # the same global batch on every rank; each takes its slice
        idx = torch.randint(0, len(x_train), (cfg.batch,), generator=g)[local]
        t = torch.randint(0, schedule.steps, (cfg.batch,), generator=g)[local].to(device)
        noise = torch.randn(cfg.batch, 1, 8, 8, generator=g)[local].to(device)
        torch.manual_seed(cfg.seed * 1_000_003 + step * 1009 + rank)  # dropout masks: a function of (seed, step, rank)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup)
        loss = denoising_loss(net, schedule, x_train[idx], t, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update_parameters(model)
        if rank == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                save_checkpoint(out / "checkpoints", step + 1, model, ema, opt)
    bar.close()
    seconds = time.perf_counter() - began
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    if rank != 0:
        return None

    trained = ema.module.eval()
    result = Result(step=cfg.steps, seconds=seconds, held_out_loss_trained=held_out_loss(trained, schedule, device),
                    held_out_loss_untrained=untrained_loss)
    if cfg.samples:
        clf, result.classifier_accuracy = train_classifier()
        held_out, _ = digits("held_out")
        n = min(cfg.samples, len(held_out))  # one n for every pair: the distance's bias depends on n
        real = features(clf, held_out[:n])
        untrained = unetdsl.build_model(SPEC, seed=cfg.seed + 1, device=device).eval()
        generated = sample(trained, schedule, cfg.samples, cfg.sample_steps, seed=cfg.seed, device=device)
        noise_samples = sample(untrained, schedule, n, cfg.sample_steps, seed=cfg.seed, device=device)
        result.fd_trained = frechet_distance(features(clf, generated[:n]), real)
        result.fd_untrained = frechet_distance(features(clf, noise_samples), real)
        train_images, _ = digits("train")
        result.fd_real_vs_real = frechet_distance(features(clf, train_images[:n]), real)
        save_grid(generated[:100], out / "samples.png")
        save_grid(held_out[:100], out / "real.png")
    write_text_atomic(out / "metrics.json", json.dumps(asdict(result), indent=2) + "\n")
    return result


# every flag's bounds, checked when parsed (argparse prints the flag and exits 2): a zero batch or
# checkpoint interval would crash after the data loads, a negative step count would "train" nothing
BOUNDS: dict[str, tuple[str, float, float | None]] = {  # name -> (how the range is closed, low, high)
    "steps": ("[]", 1, None), "batch": ("[]", 1, None), "lr": ("(]", 0.0, None), "warmup": ("[]", 1, None),
    "ema": ("[)", 0.0, 1.0), "checkpoint_every": ("[]", 1, None), "samples": ("[]", 0, None),
    "sample_steps": ("[]", 1, 1000), "seed": ("[]", 0, 2**63 - 1),
}


def _bounded(name: str, kind: type) -> Callable[[str], object]:
    ends, low, high = BOUNDS[name]
    said = (f"at least {low:g}" if ends[0] == "[" else f"more than {low:g}") + (
        "" if high is None else f" and {'at most' if ends[1] == ']' else 'below'} {high:g}")

    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        above = value >= low if ends[0] == "[" else value > low
        below = high is None or (value <= high if ends[1] == "]" else value < high)
        if not (above and below and math.isfinite(value)):  # NaN compares false both ways; inf is no rate
            raise argparse.ArgumentTypeError(f"expected a value {said}, got {text}")
        return value

    return parse


def check_outputs(cfg: Config) -> None:
    """Before any training: --out must be a folder (or one that can be made), and nothing written
    there may replace a file this example reads (the spec, the script)."""
    from unetdsl.fsutil import OutputError, check_output

    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out}: is a file; give a folder (it receives checkpoints/, metrics.json, samples.png)")
    reads = {"spec": str(SPEC), "training script": __file__}
    try:
        for name in ("metrics.json", "samples.png", "real.png", f"checkpoints/{MANIFEST}"):
            check_output(out / name, inputs=reads)
    except OutputError as exc:
        raise SystemExit(f"error: --out {out}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, value in asdict(Config()).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        elif name in BOUNDS:
            p.add_argument(flag, type=_bounded(name, type(value)), default=value)
        else:
            p.add_argument(flag, type=type(value), default=value)
    args = p.parse_args(argv)
    cfg = Config(**vars(args))
    check_outputs(cfg)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("WORLD_SIZE", "1"))))
    result = train(cfg)
    if result is not None:
        print(json.dumps(asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
