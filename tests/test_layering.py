"""The house's layering, held by a test: every import inside unetdsl (at module level or inside a
function: a lazy import is still an arrow) points down the pipeline or within its own wing, and
there are no circles. The wings, bottom to top:

    base      errors, version, scalars, positions, fsutil        no torch, no pydantic models
    spec      the language (pydantic models, settings, resolved)  no torch
    source    loader, extends, overrides: text in                 no torch
    resolve   Spec -> ResolvedSpec                                no torch
    front     frontend (the pipeline), provenance (stored specs), schema, reference
    nn        blocks and models: torch only, importing nothing of unetdsl outside nn
    build     compiler, sample, training, the TorchScript/AOTI packing helpers
    analysis  estimate, summary, resources, diagram
    deploy    weights (the file format), artifacts (export), inspect
    api       build_model, load: the public door
    interop   diffusers, both ways
    cli       the command line, and the package's lazy facade
"""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "unetdsl"
WINGS: list[tuple[str, set[str]]] = [
    ("base", {"errors", "version", "scalars", "positions", "fsutil"}),
    ("spec", {"spec"}),
    ("source", {"loader", "extends", "overrides"}),
    ("resolve", {"resolve"}),
    ("front", {"frontend", "provenance", "schema", "reference"}),
    ("nn", {"nn"}),
    ("build", {"compiler", "sample", "training", "torchscript", "torchscript_packing", "aoti_packing"}),
    ("analysis", {"estimate", "summary", "resources", "diagram"}),
    ("deploy", {"weights", "artifacts", "inspect"}),
    ("api", {"api"}),
    ("interop", {"interop"}),
    ("cli", {"cli", ""}),  # "": the package's __init__ (lazy names for the library's users)
]
RANK = {name: (rank, wing) for rank, (wing, names) in enumerate(WINGS) for name in names}


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The unetdsl modules `name` imports, anywhere in its text."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif (node.module or "").startswith("unetdsl"):
                target = (node.module or "").removeprefix("unetdsl").removeprefix(".")
            else:
                continue
            subs = [f"{target}.{a.name}".lstrip(".") for a in node.names if f"{target}.{a.name}".lstrip(".") in known]
            found.update(subs if len(subs) == len(node.names) else [target, *subs])
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("unetdsl").removeprefix(".") for a in node.names
                         if a.name.split(".")[0] == "unetdsl")
    return {m for m in found if m in known and m != name}


def wing(name: str) -> tuple[int, str]:
    top = name.split(".")[0]
    assert top in RANK, f"unetdsl.{name} belongs to no wing: add it to tests/test_layering.py's WINGS"
    return RANK[top]


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_every_import_points_down_or_within_its_wing() -> None:
    upward = []
    for name, targets in graph().items():
        for target in targets:
            if wing(target)[0] > wing(name)[0]:
                upward.append(f"unetdsl.{name} ({wing(name)[1]}) imports unetdsl.{target} ({wing(target)[1]})")
    assert upward == []


def test_nn_knows_nothing_of_the_rest() -> None:
    # the blocks are torch only: no pydantic spec, no resolver, nothing above them
    outside = {f"{name} -> {t}" for name, targets in graph().items() if name.startswith("nn")
               for t in targets if not t.startswith("nn")}
    assert outside == set()


def test_there_are_no_circles() -> None:
    edges = graph()
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(edges[node]):
            if seen.get(nxt) == 1:
                circles.append([*path[path.index(nxt):], nxt])
            elif nxt not in seen:
                visit(nxt, [*path, nxt])
        seen[node] = 2

    for start in sorted(edges):
        if start not in seen:
            visit(start, [start])
    assert circles == []


def test_the_checker_sees_lazy_imports_and_would_catch_an_upward_one() -> None:
    # api.load imports provenance inside a function; weights must not import api (the old circle)
    edges = graph()
    assert "provenance" in edges["api"] and "api" not in edges["weights"]
    assert wing("weights")[0] < wing("api")[0]  # so weights -> api would be reported as upward
