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


def wrong_levels(config: dict[str, Any], refuse: Callable[..., None]) -> bool:
    """`block_out_channels` ints, one down and one up block type per entry; True if refused."""
    channels, downs, ups = config["block_out_channels"], config["down_block_types"], config["up_block_types"]
    if not all(type(ch) is int for ch in channels):
        refuse("block_out_channels", channels, "wrong type", "a list of ints")
        return True
    if len(downs) != len(channels) or len(ups) != len(channels):
        refuse("down_block_types", downs, "down_block_types, up_block_types and block_out_channels differ in length",
               None)
        return True
    return False


Refuse = Callable[[str, Any, str, "str | None"], None]


def proven(config: dict[str, Any], spec: Any, spec_from_diffusers: Callable[..., Any]) -> dict[str, Any]:
    """`config` (with its `_class_name`), written from the resolved `spec`, converted back by
    `spec_from_diffusers`: it must give the same spec id, or SpecError names each setting that
    would change and what it would become (at most 8). Returns `config`."""
    from ..errors import Problem, SpecError
    from ..provenance import differences
    from ..resolve import resolve

    cls = config["_class_name"]
    try:
        back = resolve(spec_from_diffusers(config, name=spec.name))
    except SpecError as exc:
        raise SpecError([Problem(p.path, f"{p.message} (outside {cls}'s vocabulary)")
                         for p in exc.problems]) from None
    if back.spec_id != spec.spec_id:
        differ = [d for d in differences(spec.view(), back.view()) if d[0][:1] not in (("name",), ("description",))]
        raise SpecError([Problem(path, f"{want!r} cannot be expressed by {cls} (it would be {got!r})")
                         for path, want, got in differ[:8]])
    return config

