"""The front half of the pipeline: source (+ `--set` overrides) -> Spec -> ResolvedSpec.

    load_spec(source, overrides)     -> LoadedSpec (Spec + the positions its values came from)
    resolve_spec(source, overrides)  -> (ResolvedSpec, warnings)

Every problem raised here is a SpecError whose problems carry `file:line:col` wherever the value
came from text (a file, a YAML string or an override). No torch here.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

from .errors import Problem, SpecError
from .extends import KEY as EXTENDS
from .extends import Composition, resolve_extends
from .loader import Loaded, load_file, load_text
from .overrides import apply_overrides
from .positions import Positions
from .resolve import resolve
from .spec.models import Spec
from .spec.resolved import ResolvedSpec
from .spec.validate import validate_data

SpecSource = Union[str, os.PathLike[str], dict[str, Any], Spec, ResolvedSpec]


@dataclass
class LoadedSpec:
    spec: Spec
    positions: Positions | None
    files: tuple[str, ...] = ()  # the real paths of every file read: the spec given, then what it extends

    def locate(self, problems: Sequence[Problem]) -> list[Problem]:
        if self.positions is None:
            return list(problems)
        return [p.located(self.positions.location(p.path)) for p in problems]


def _is_path(source: str) -> bool:
    return "\n" not in source and (source.endswith((".yaml", ".yml", ".json")) or os.path.exists(source))


def load_spec(source: SpecSource, overrides: Sequence[str] = (), *,
              root: str | os.PathLike[str] | None = None) -> LoadedSpec:
    """Read and type-check a spec from a path, YAML text, a dict or a Spec. `root`: the folder
    tree `extends` may read from (default: the spec file's folder; for text or a dict, the working
    directory)."""
    positions: Positions | None = None
    comp: Composition | None = None
    if isinstance(source, ResolvedSpec):
        source = source.view()
    if isinstance(source, Spec):
        if not overrides:
            return LoadedSpec(source, None)
        data: Any = source.model_dump(exclude_none=True)
    elif isinstance(source, dict):
        data = copy.deepcopy(source)
        if EXTENDS in data:  # a dict's extends is relative to the working directory
            comp = Composition.under(root if root is not None else os.getcwd())
            merged = resolve_extends(Loaded(data, Positions("<dict>", [])), os.getcwd(), comp)
            data, positions = merged.data, merged.positions
    elif isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if isinstance(source, os.PathLike) or _is_path(text):  # extends is relative to the file
            folder = os.path.dirname(os.path.abspath(text))
            comp = Composition.under(root if root is not None else folder)
            top = load_file(text, comp.budget)
            comp.files.append(os.path.realpath(text))
            loaded = resolve_extends(top, folder, comp, (os.path.realpath(text),))
        else:  # YAML text: relative to the working directory
            comp = Composition.under(root if root is not None else os.getcwd())
            loaded = resolve_extends(load_text(text, budget=comp.budget), os.getcwd(), comp)
        data, positions = loaded.data, loaded.positions
    else:
        raise SpecError.single((), f"cannot read a spec from a {type(source).__name__}",
                               allowed="a path, a YAML string, a dict or a unetdsl.Spec")
    if overrides:
        if positions is None:
            positions = Positions("<dict>", [])
        data = apply_overrides(data, overrides, positions)
    if not isinstance(data, dict):
        where = positions.location(()) if positions is not None else None
        raise SpecError([Problem((), "a spec is a mapping of settings", found=type(data).__name__, location=where,
                                 hint="start from one of the files in specs/")])
    files = tuple(comp.files) if comp is not None else ()
    try:
        return LoadedSpec(validate_data(data, positions), positions, files)
    except SpecError as exc:  # type problems; the cross-field rules still run on the rest, so both come at once
        raise SpecError([*exc.problems, *_rules_on_the_rest(data, exc.problems, positions)]) from None


def _rules_on_the_rest(data: dict[str, Any], problems: Sequence[Problem], positions: Positions | None) -> list[Problem]:
    """The cross-field problems of `data` with the values that failed type-checking left out.

    Only mapping keys can be left out (removing a list item would renumber its siblings), and a
    missing required key cannot be made up: then there is no second round. A left-out value
    takes its default, which may itself break a rule; so problems at, above or below a left-out
    path, or about the same setting elsewhere (a left-out `groups` falls back to 32 everywhere),
    are not reported: they would describe the default, not the user's spec."""
    rest = copy.deepcopy(data)
    removed: list[tuple[str | int, ...]] = []
    for p in problems:
        parent = _walk(rest, p.path[:-1]) if p.path else None
        if not isinstance(parent, dict) or p.path[-1] not in parent:
            return []  # a missing key, a root problem or a list item: no sound second round
        del parent[p.path[-1]]
        removed.append(p.path)
    try:
        resolve(validate_data(rest, None))
    except SpecError as exc:
        def unrelated(q: Problem) -> bool:
            return not any(q.path[: len(r)] == r or r[: len(q.path)] == q.path or (q.path and q.path[-1] == r[-1])
                           for r in removed)
        return [q.located(positions.location(q.path)) if positions is not None else q
                for q in exc.problems if unrelated(q)]
    return []


def _walk(data: Any, path: Sequence[str | int]) -> Any:
    for part in path:
        in_dict = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if not (in_dict or in_list):
            return None
        data = data[part]
    return data


def resolve_spec(source: SpecSource, overrides: Sequence[str] = (), *,
                 root: str | os.PathLike[str] | None = None) -> tuple[ResolvedSpec, list[Problem]]:
    """Load, type-check and resolve. Returns the resolved spec and any warnings (located).
    `root`: the folder tree `extends` may read from (see load_spec)."""
    resolved, warnings, _ = compose(source, overrides, root=root)
    return resolved, warnings


def compose(source: SpecSource, overrides: Sequence[str] = (), *,
            root: str | os.PathLike[str] | None = None) -> tuple[ResolvedSpec, list[Problem], tuple[str, ...]]:
    """resolve_spec, also returning the real paths of every file read (the spec and the files it
    extends): a command must not write its output onto any of them."""
    if isinstance(source, ResolvedSpec) and not overrides:
        return source, [], ()
    loaded = load_spec(source, overrides, root=root)
    warnings: list[Problem] = []
    try:
        resolved = resolve(loaded.spec, warnings=warnings)
    except SpecError as exc:
        raise SpecError(loaded.locate(exc.problems)) from None
    return resolved, loaded.locate(warnings), loaded.files


__all__ = ["LoadedSpec", "SpecSource", "compose", "load_spec", "resolve_spec"]
