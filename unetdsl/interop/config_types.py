"""The JSON type each key of a diffusers config must have, checked before any rule reads it, so a
wrong type is a located refusal naming the key, never a TypeError deep in a converter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (lambda v: type(v) is int, "an int"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "number": (lambda v: type(v) in (int, float), "a number"),
    "list": (lambda v: isinstance(v, (list, tuple)) and 1 <= len(v) <= 8, "a list of 1 to 8 entries"),
}


def wrong_types(config: dict[str, Any], kinds: dict[str, str], refuse: Callable[..., None]) -> bool:
    """Refuse every key of `kinds` whose value in `config` is not of its kind; True if any was."""
    wrong = False
    for key, kind in kinds.items():
        check, allowed = KINDS[kind]
        if not check(config[key]):
            refuse(key, config[key], "wrong type", allowed)
            wrong = True
    return wrong
