"""`--set PATH=VALUE` overrides: parsed, applied to a copy of the data, and recorded in the
positions so that an error in an override points at `--set:1:col` (the misspelt name for an
unknown key, the value for a wrong value). VALUE is YAML, read by the same loader as files."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .errors import Location, Problem, SpecError, describe
from .loader import load_text
from .positions import Positions


def apply_overrides(data: Any, overrides: Sequence[str], positions: Positions) -> Any:
    """Apply `path=value` overrides (value is YAML) to a copy of `data`, recording their positions."""
    overrides = _override_list(overrides)
    problems: list[Problem] = []
    for text in overrides:
        try:
            data = _apply_one(data, text, positions)
        except SpecError as exc:
            problems += exc.problems
    if problems:
        raise SpecError(problems)
    return data


def _apply_one(data: Any, text: str, positions: Positions) -> Any:
    source = "--set"
    if "=" not in text:
        raise SpecError([Problem((), "an override is PATH=VALUE", found=repr(text),
                                 hint="e.g. --set encoder.levels.1.channels=192",
                                 location=Location(source, 1, 1, text))])
    raw_path, raw_value = text.split("=", 1)
    value_col = len(raw_path) + 2
    value_loc = Location(source, 1, value_col, text)
    try:
        value = load_text(raw_value, source, allow_empty=True).data
    except SpecError as exc:
        raise SpecError([replace(p, location=value_loc) for p in exc.problems]) from None
    parts = raw_path.strip().split(".")
    if not raw_path.strip() or any(not p for p in parts):
        raise SpecError([Problem((), f"empty name in override path {raw_path!r}", location=Location(source, 1, 1, text))])
    root = copy.deepcopy(data) if data is not None else {}
    node = root
    path: list[str | int] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        col = 1 + sum(len(p) + 1 for p in parts[:i])
        if isinstance(node, list):
            if not part.isdigit() or int(part) > len(node) or (int(part) == len(node) and not last):
                raise SpecError([Problem(tuple(path), f"{_dotted(path)} is a list of {len(node)}; "
                                         f"{part!r} is not an index of it",
                                         allowed=f"0..{len(node) - 1}" if node else "none (the list is empty)",
                                         location=Location(source, 1, col, text))])
            key: str | int = int(part)
        elif isinstance(node, dict):
            key = part
        else:
            raise SpecError([Problem(tuple(path), f"{_dotted(path)} is a single value, not a section",
                                     location=Location(source, 1, col, text))])
        path.append(key)
        positions.override_keys.setdefault(tuple(path), Location(source, 1, col, text))
        if last:
            if isinstance(node, list) and key == len(node):
                node.append(value)
            else:
                node[key] = value  # type: ignore[index]
        else:
            nxt = node[key] if (isinstance(node, dict) and key in node) or isinstance(node, list) else None  # type: ignore[index]
            if nxt is None:
                nxt = {}
                node[key] = nxt  # type: ignore[index]
            node = nxt
    positions.overrides[tuple(path)] = value_loc
    return root


def _override_list(overrides: Sequence[str] | str) -> list[str]:
    """A single 'PATH=VALUE' string is one override (not a sequence of one-character ones)."""
    if isinstance(overrides, str):
        return [overrides]
    out = list(overrides)
    for o in out:
        if not isinstance(o, str):
            raise SpecError.single((), "overrides are 'PATH=VALUE' strings", found=describe(o),
                                   hint="e.g. overrides=['encoder.levels.1.channels=192']")
    return out


def _dotted(path: list[str | int]) -> str:
    return ".".join(str(p) for p in path) or "the spec"
