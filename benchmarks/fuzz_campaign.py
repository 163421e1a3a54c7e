"""The fuzzing campaign of the front end and the compiler (issue 9). Three generators, one property:
every input ends in a ResolvedSpec or a SpecError whose every problem is located (file:line:col),
never anything else; every accepted spec builds on the meta device, and every accepted spec under
a size bound is also estimated (summary's figures, a fake-tensor training step per checkpointing
choice, parameters equal to the model's), runs forward and backward and scripts to the same numbers.

    .venv/bin/python benchmarks/fuzz_campaign.py [--schema 10000] [--scalars all] [--bytes 5000] [--seed 0]

1. specs drawn from the committed JSON Schema (hypothesis-jsonschema), written as YAML;
2. every scalar of every example spec replaced by each pathological value (huge and odd numbers,
   NaN, infinities, unicode, control characters, empty, nested, long);
3. byte-level mutations (flip, insert, delete, duplicate a span) of the example specs.
Specs from the schema alone are almost always refused by cross-field rules: they exercise the
refusals; tests/test_compiler_fuzz.py draws consistent specs for the accepted path.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
SMALL_PARAMS = 300_000

PATHOLOGICAL: list[Any] = [
    0, -1, 1, 2**31, 2**63, 10**40, -(10**40), 1.5, -0.0, 1e308, 1e-320, float("nan"), float("inf"), float("-inf"),
    True, False, None, "", " ", "x" * 10_000, "３", "٣", "1_0", "0x10", "010", "1e3", "nan", ".inf", "no", "on",
    "\x00", "\x1b[31m", "\u202e", "𝟘", "é" * 50, [], [1], [[[[[]]]]], {}, {"a": {"b": {"c": 1}}}, "*a", "!!python/object",
]


class Escape(Exception):
    """The property failed: something other than a ResolvedSpec or a located SpecError."""


def check(text: str, counts: Counter[str], build: bool = True, run_every: int = 1) -> None:
    import torch

    from unetdsl import SpecError, build_model, resolve_spec
    from unetdsl.sample import sample_inputs
    from unetdsl.torchscript import script

    try:
        resolved, _ = resolve_spec(text)
    except SpecError as exc:
        unlocated = [p for p in exc.problems if p.location is None]
        if unlocated:
            raise Escape(f"unlocated problem: {unlocated[0].render()}") from None
        exc.render()
        counts["refused"] += 1
        return
    except Exception as exc:
        raise Escape(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}") from exc
    counts["accepted"] += 1
    if not build or counts["accepted"] % run_every:  # (a CI slice builds every run_every-th accepted spec)
        return
    model = build_model(resolved, device="meta")
    counts["built on meta"] += 1
    params = sum(p.numel() for p in model.parameters())
    positions = 1
    for s in resolved.sample_size:
        positions *= s
    if params > SMALL_PARAMS or positions > 64 * 64:
        return
    # the estimator (summary, build's table and guard) on every small accepted spec: it counts the
    # model exactly and runs a training step on fake tensors, checkpointed too, without failing
    from unetdsl.estimate import estimate

    est = estimate(resolved, batch=2)
    if est.parameters != params or len(est.training) != 3:
        raise Escape(f"estimate counts {est.parameters} parameters, the model {params}")
    counts["estimated"] += 1
    model = build_model(resolved, seed=0).eval()
    inputs = sample_inputs(resolved, batch=2)
    out = model(*inputs.args())
    out.float().square().mean().backward()
    with torch.no_grad():
        torch.testing.assert_close(script(model)(*inputs.args()), model(*inputs.args()), rtol=0, atol=1e-5)
    counts["ran, back-propagated and scripted"] += 1


def from_schema(n: int, seed: int, counts: Counter[str], failures: list[str]) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st
    from hypothesis_jsonschema import from_schema as strategy

    schema = json.loads((ROOT / "schemas" / "unetdsl.schema.json").read_text())

    @settings(max_examples=n, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @hypothesis_seed(seed)  # the same specs for the same --seed: CI's slice must not change under it
    @given(strategy(schema), st.randoms(use_true_random=False))
    def run(data: Any, _: random.Random) -> None:
        counts["schema specs"] += 1
        try:
            check(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), counts)
        except Escape as exc:
            failures.append(f"schema: {exc}")

    run()


def scalar_paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in scalar_paths(v, (*prefix, k))]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in scalar_paths(v, (*prefix, i))]
    return [prefix]


def replaced(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    import copy

    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def scalars(counts: Counter[str], failures: list[str], specs: list[Path] | None = None, run_every: int = 1) -> None:
    """Every scalar of each spec replaced by each pathological value, each result validated; every
    `run_every`-th accepted spec is also built and, if small, estimated, run, back-propagated and
    scripted (about 2 s each: the CI slice takes every other one)."""
    for spec in specs or SPECS:
        data = yaml.safe_load(spec.read_text())
        for path in scalar_paths(data):
            for value in PATHOLOGICAL:
                counts["scalar replacements"] += 1
                text = yaml.safe_dump(replaced(data, path, value), sort_keys=False, allow_unicode=True)
                if value in ("*a", "!!python/object"):  # raw, not quoted: an alias and a tag in the text
                    text = text.replace(f"'{value}'", value)
                try:
                    check(text, counts, run_every=run_every)
                except Escape as exc:
                    failures.append(f"{spec.name} {path} = {value!r:.40}: {exc}")


def mutations(n: int, rng: random.Random, counts: Counter[str], failures: list[str]) -> None:
    texts = [p.read_bytes() for p in SPECS]
    for _ in range(n):
        b = bytearray(rng.choice(texts))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b))
            op = rng.randrange(4)
            if op == 0:
                b[i] = rng.randrange(256)
            elif op == 1:
                b.insert(i, rng.randrange(256))
            elif op == 2:
                del b[i]
            else:
                j = min(len(b), i + rng.randint(1, 40))
                b[i:i] = b[i:j]
        counts["byte mutations"] += 1
        try:
            check(bytes(b).decode("utf-8", errors="replace"), counts)
        except Escape as exc:
            failures.append(f"bytes: {exc}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--schema", type=int, default=10_000)
    ap.add_argument("--bytes", type=int, default=5_000)
    ap.add_argument("--no-scalars", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    counts: Counter[str] = Counter()
    failures: list[str] = []
    start = time.perf_counter()
    if not args.no_scalars:
        scalars(counts, failures)
    mutations(args.bytes, random.Random(args.seed), counts, failures)
    if args.schema:
        from_schema(args.schema, args.seed, counts, failures)
    took = time.perf_counter() - start
    print(f"fuzz campaign: {sum(counts[k] for k in ('schema specs', 'scalar replacements', 'byte mutations'))} inputs "
          f"in {took:.0f} s; escapes: {len(failures)}")
    for key, value in counts.items():
        print(f"  {key:36} {value}")
    for f in failures[:20]:
        print("ESCAPE", f[:2000])
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
