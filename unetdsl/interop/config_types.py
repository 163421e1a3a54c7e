"""The JSON type each key of a diffusers config must have, checked before any rule reads it, so a
wrong type is a located refusal naming the key, never a TypeError deep in a converter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _int(v: Any) -> bool:
    return type(v) is int  # not bool, not "3", not 3.0


def _number(v: Any) -> bool:
    return type(v) in (int, float)  # not bool, not "1e-5"


def _list(check: Callable[[Any], bool], most: int = 8) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (list, tuple)) and 1 <= len(v) <= most and all(check(x) for x in v)


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


# every kind of value a config key may hold; a key's kind is checked before any rule reads the value
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (_int, "an int"),
    "bool": (_bool, "true or false"),
    "number": (_number, "a number"),
    "str": (_str, "a string"),
    "list": (_list(lambda v: True), "a list of 1 to 8 entries"),
    "ints": (_list(_int), "a list of 1 to 8 ints"),
    "strs": (_list(_str), "a list of 1 to 8 names"),
    "int?": (lambda v: v is None or _int(v), "null or an int"),
    "str?": (lambda v: v is None or _str(v), "null or a name"),
    "bool?": (lambda v: v is None or _bool(v), "null, true or false"),
    "size": (lambda v: v is None or _int(v) or _list(_int, 3)(v), "null, an int, or a list of ints"),
    # one value for every level or a list of them: the converter checks the entries and the length
    "per level": (lambda v: _int(v) or _bool(v) or _list(lambda x: _int(x) or _bool(x))(v),
                  "a value, or a list of one per level"),
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

