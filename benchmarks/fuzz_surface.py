"""The campaign over round three's surface (issue 22): `extends` chains, the three diffusers
converters' configs, hostile archives for `inspect`, and the training example's flags. One
property per generator, every input ending in a result or unetdsl's own refusal, never anything
else:

  extends   random trees of files (relative, absolute, `~`, `..`, symlinks in and out of the root,
            FIFOs, binary and non-spec files, cycles, deep and oversized chains); resolve_spec gives
            a ResolvedSpec or a SpecError whose every problem is located, *no file outside the root
            is opened* (a sys.audit hook watches every open) and the secret planted beside the root
            never appears in a message;
  configs   UNet2DModel / UNet2DConditionModel / AutoencoderKL / ControlNetModel configs with keys drawn from each
            converter's table and values of every kind and edge; spec_from_diffusers gives a Spec or
            a SpecError, and every Spec it gives resolves;
  archives  byte damage (flips, cuts, splices, zeroed runs) of real .pt, .pt2, .onnx and .safetensors
            artifacts; read_metadata gives the provenance or an InspectError;
  flags     random command lines for examples/train_digits.py (parsed only); argparse exits 2 naming
            the flag, or every bounded value lies in its bounds.

    .venv/bin/python benchmarks/fuzz_surface.py [--extends 5000] [--configs 30000] [--archives 10000] [--flags 10000]

The defaults make 55,000 inputs (~10 minutes on 2 cores); tests/test_campaign_slice.py runs a slice.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SECRET = "TOKEN=campaign-secret-4b1d"
BASE = """\
unetdsl: 1
name: base
in_channels: 3
out_channels: 3
sample_size: 16
time: {embedding: sinusoidal, features: 8, dim: 16}
defaults: {norm: {groups: 2}}
encoder:
  asymmetric_padding: false
  levels:
    - {channels: 4, blocks: 1}
    - {channels: 8, blocks: 1}
"""


class Escape(Exception):
    """The property failed."""


# --- 1. extends ----------------------------------------------------------------------------------
class OpenWatch:
    """Every path opened (builtins.open, os.open) while `active`, via one sys.audit hook."""

    def __init__(self) -> None:
        self.active = False
        self.opened: list[str] = []
        sys.addaudithook(self.hook)

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if self.active and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            self.opened.append(os.fsdecode(args[0]))


REFS = ["base.yaml", "./base.yaml", "sub/child.yaml", "../outside.yaml", "../secret.txt", "/etc/passwd",
        "/proc/self/environ", "~/.bashrc", "~", "link-out.yaml", "link-in.yaml", "sub/../base.yaml", "pipe.yaml",
        "notes.txt", "binary.bin", "big.yaml", "self.yaml", "a.yaml", "b.yaml", "sub", "missing.yaml", "", ".",
        "https://example.com/x.yaml", "file:///etc/passwd", "sub/link-dir/secret.txt", "\x1b[2J.yaml", "x" * 300]


def extends_tree(root: Path, rng: random.Random) -> Path:
    """A project folder with a random web of files extending one another, a secret beside it."""
    project = root / "project"
    (project / "sub").mkdir(parents=True)
    (root / "secret.txt").write_text(SECRET + "\n")
    (root / "outside.yaml").write_text(BASE + f"description: {SECRET}\n")
    (project / "base.yaml").write_text(BASE)
    (project / "notes.txt").write_text(f"{SECRET}\nnot: [a spec\n")
    (project / "binary.bin").write_bytes(bytes(rng.randrange(256) for _ in range(200)))
    (project / "big.yaml").write_text("unetdsl: 1\n" + "#" * 100 + "\n" * (1 << 16))
    (project / "link-out.yaml").symlink_to(root / "outside.yaml")
    (project / "link-in.yaml").symlink_to(project / "base.yaml")
    (project / "sub" / "link-dir").symlink_to(root)
    os.mkfifo(project / "pipe.yaml")
    names = ["child.yaml", "self.yaml", "a.yaml", "b.yaml", "sub/child.yaml"]
    for name in names:  # each extends a random reference, with random changes of its own
        ref = rng.choice(REFS)
        body = f"unetdsl: 1\nextends: {ref!r}\nname: {Path(name).stem}\n"
        if rng.random() < 0.5:
            body += rng.choice(["middle: {blocks: 3}\n", "defaults: {dropout: 0.1}\n", "time: {dim: 0}\n",
                                "encoder: {levels: [{channels: 4, blocks: 1}]}\n", "defaults: {norm: {groups: 3}}\n"])
        (project / name).write_text(body)
    return project / rng.choice(names)


def check_extends(top: Path, watch: OpenWatch, counts: Counter[str]) -> None:
    from unetdsl import SpecError, resolve_spec

    root = os.path.realpath(top.parent)
    watch.opened.clear()
    watch.active = True
    try:
        resolve_spec(top)
        counts["extends resolved"] += 1
    except SpecError as exc:
        if any(p.location is None for p in exc.problems):
            raise Escape(f"unlocated: {exc.render()[:300]}") from None
        if SECRET in exc.render() or "root:x:" in exc.render():
            raise Escape(f"quoted a file outside the spec: {exc.render()[:300]}") from None
        counts["extends refused"] += 1
    finally:
        watch.active = False
    outside = [p for p in watch.opened if os.path.commonpath([os.path.realpath(p), root]) != root
               and not p.startswith(sys.prefix) and "site-packages" not in p and not p.endswith(".py")]
    if outside:
        raise Escape(f"opened outside the root: {outside[:3]}")


def extends_campaign(n: int, rng: random.Random, counts: Counter[str], failures: list[str]) -> None:
    watch = OpenWatch()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            folder = Path(tmp) / f"t{i}"
            folder.mkdir()
            top = extends_tree(folder, rng)
            counts["extends trees"] += 1
            try:
                check_extends(top, watch, counts)
            except Exception as exc:
                failures.append(f"extends {top}: {type(exc).__name__}: {exc}\n{traceback.format_exc()[-800:]}")
            import shutil

            shutil.rmtree(folder)


# --- 2. converter configs ------------------------------------------------------------------------
EDGE_VALUES: list[Any] = [0, -1, 1, 2, 3, 7, 8, 32, 2**31, 10**30, -0.5, 0.5, 1e-5, 1e308, float("nan"), float("inf"),
                          True, False, None, "", "silu", "gelu", "swish", "mish", "1e-5", "0.1", "default",
                          "scale_shift", "positional", "fourier", "learned", "DownBlock2D", "AttnDownBlock2D",
                          "CrossAttnDownBlock2D", "UpBlock2D", [], [1], [16, 32], [16, 32, 32], [0, 0], [True],
                          ["DownBlock2D", "DownBlock2D"], ["UpBlock2D", "UpBlock2D"], {"a": 1}, "x" * 1000]


def config_campaign(n: int, rng: random.Random, counts: Counter[str], failures: list[str]) -> None:
    from unetdsl import SpecError
    from unetdsl.interop import diffusers as unet2d
    from unetdsl.interop import diffusers_autoencoder as autoencoder
    from unetdsl.interop import diffusers_condition as condition
    from unetdsl.interop import diffusers_controlnet as controlnet
    from unetdsl.interop.diffusers import spec_from_diffusers
    from unetdsl.resolve import resolve

    sys.path.insert(0, str(ROOT))
    from tests.test_interop_config_types import BASES

    keys = {"UNet2DModel": list(unet2d.DEFAULTS), "UNet2DConditionModel": list(condition.DEFAULTS),
            "AutoencoderKL": list(autoencoder.DEFAULTS), "ControlNetModel": list(controlnet.DEFAULTS)}
    for _ in range(n):
        cls = rng.choice(list(BASES))
        config: dict[str, Any] = {"_class_name": cls, **BASES[cls]} if rng.random() < 0.8 else {"_class_name": cls}
        for _ in range(rng.choice([1, 1, 2, 3, 5])):
            key = rng.choice(keys[cls] + ["unknown_key", "_diffusers_version"])
            config[key] = rng.choice(EDGE_VALUES)
        counts["configs"] += 1
        try:
            spec = spec_from_diffusers(config)
            resolve(spec)  # a spec the converter gives must resolve (it resolved it to prove it)
            counts["configs converted"] += 1
        except SpecError as exc:
            exc.render()
            counts["configs refused"] += 1
        except Exception as exc:
            failures.append(f"config {config!r:.400}: {type(exc).__name__}: {exc}")


# --- 3. archives ---------------------------------------------------------------------------------
def artifacts(folder: Path) -> list[Path]:
    import unetdsl

    sys.path.insert(0, str(ROOT))
    from tests.conftest import TINY

    model = unetdsl.build_model(TINY, seed=0).eval()
    paths = [folder / "m.pt", unetdsl.save(model, folder / "m.safetensors")]
    unetdsl.export(model, paths[0])
    for fmt, name in (("export", "m.pt2"), ("onnx", "m.onnx")):
        try:
            unetdsl.export(model, folder / name, format=fmt)
            paths.append(folder / name)
        except Exception:
            pass
    return paths


def damaged(good: bytes, rng: random.Random) -> bytes:
    raw = bytearray(good)
    kind = rng.randrange(4)
    if kind == 0:
        for _ in range(rng.randint(1, 32)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif kind == 1:
        raw = raw[:rng.randrange(len(raw))]
    elif kind == 2:
        a, b = sorted(rng.randrange(len(raw)) for _ in range(2))
        raw = raw[:a] + raw[b:] + raw[a:b]
    else:
        a = rng.randrange(len(raw))
        raw[a:a + rng.randint(1, 4096)] = bytes(min(4096, len(raw) - a))
    return bytes(raw)


def archive_campaign(n: int, rng: random.Random, counts: Counter[str], failures: list[str]) -> None:
    from unetdsl.inspect import InspectError, read_metadata

    with tempfile.TemporaryDirectory() as tmp:
        sources = [(p.suffix, p.read_bytes()) for p in artifacts(Path(tmp))]
        for i in range(n):
            suffix, good = rng.choice(sources)
            path = Path(tmp) / f"d{i % 7}{suffix}"
            path.write_bytes(damaged(good, rng))
            counts["archives"] += 1
            try:
                read_metadata(path)
                counts["archives read"] += 1
            except InspectError:
                counts["archives refused"] += 1
            except Exception as exc:
                failures.append(f"archive {suffix} #{i}: {type(exc).__name__}: {exc}")


# --- 4. the training example's flags --------------------------------------------------------------
def example() -> Any:
    spec = importlib.util.spec_from_file_location("train_digits", ROOT / "examples" / "train_digits.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_digits"] = module
    spec.loader.exec_module(module)
    return module


FLAG_VALUES = ["0", "1", "-1", "-5", "2", "1000", "1001", "0.5", "1.0", "1e-3", "-1e-3", "nan", "inf", "-inf", "1e309",
               "x", "", " ", "0x10", "1_000", "9" * 30, "0.999", "1", "--steps"]


def flags_campaign(n: int, rng: random.Random, counts: Counter[str], failures: list[str]) -> None:
    import math

    td = example()
    parsed: list[Any] = []
    td.train = lambda cfg: parsed.append(cfg)  # parse and check only: nothing trains
    td.check_outputs = lambda cfg: None
    names = list(td.BOUNDS)
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(n):
            argv = ["--out", tmp, "--no-progress"]
            for _ in range(rng.randint(1, 4)):
                argv += ["--" + rng.choice(names).replace("_", "-"), rng.choice(FLAG_VALUES)]
            counts["flag lines"] += 1
            parsed.clear()
            try:
                with redirect_stderr(io.StringIO()) as err:
                    td.main(argv)
            except SystemExit as exc:
                if exc.code != 2 or "error: argument --" not in err.getvalue():
                    failures.append(f"flags {argv}: exit {exc.code}: {err.getvalue()[-200:]}")
                counts["flag lines refused"] += 1
                continue
            except Exception as exc:
                failures.append(f"flags {argv}: {type(exc).__name__}: {exc}")
                continue
            cfg = parsed[0]
            for name, (ends, low, high) in td.BOUNDS.items():
                v = getattr(cfg, name)
                inside = (v >= low if ends[0] == "[" else v > low) and (
                    high is None or (v <= high if ends[1] == "]" else v < high)) and math.isfinite(v)
                if not inside:
                    failures.append(f"flags {argv}: {name}={v} accepted outside its bounds")
            counts["flag lines accepted"] += 1


CAMPAIGNS: dict[str, Callable[[int, random.Random, Counter[str], list[str]], None]] = {
    "extends": extends_campaign, "configs": config_campaign, "archives": archive_campaign, "flags": flags_campaign,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extends", type=int, default=5000)
    parser.add_argument("--configs", type=int, default=30000)
    parser.add_argument("--archives", type=int, default=10000)
    parser.add_argument("--flags", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts: Counter[str] = Counter()
    failures: list[str] = []
    start = time.perf_counter()
    for name, run in CAMPAIGNS.items():
        began = time.perf_counter()
        run(getattr(args, name), random.Random(args.seed), counts, failures)
        print(f"  {name}: {time.perf_counter() - began:.0f} s", flush=True)
    total = counts["extends trees"] + counts["configs"] + counts["archives"] + counts["flag lines"]
    print(f"surface campaign: {total} inputs in {time.perf_counter() - start:.0f} s, {len(failures)} escapes")
    for key, value in sorted(counts.items()):
        print(f"  {key}: {value}")
    for f in failures[:20]:
        print("ESCAPE", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
