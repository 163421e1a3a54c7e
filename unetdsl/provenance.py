"""The keys unetdsl stores in every file it writes, and how a stored spec is read back.

A stored spec is data from a file someone handed us: it is parsed as JSON with bounded size and
depth and must be a mapping. It is never read through the spec front end (no `extends`, no paths,
no YAML): `resolved_from_stored` validates the resolved spec it holds, checks that it is a fixed
point of the language (resolving its view gives it back, so it passes every rule a spec must pass)
and that the stored id is its id. Files written before the resolved spec was the stored form hold
the language form of the first id definition; they are read too (`_first_form`). No torch here."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import ValidationError

from .errors import SpecError, UnetdslError, brief
from .resolve import resolve
from .spec.resolved import FORM, FORM_KEY, ResolvedSpec
from .spec.settings import LEVEL_SETTINGS
from .spec.validate import validate_data

# Every key unetdsl writes into an artifact's metadata (TorchScript extra files, .pt2 extra files,
# ONNX metadata_props, safetensors metadata): the one list writers and readers share.
PREFIX = "unetdsl/"
SPEC_KEY = PREFIX + "spec.json"  # the resolved spec's stored form (ResolvedSpec.stored_json)
ID_KEY = PREFIX + "spec_id"
VERSION_KEY = PREFIX + "version"  # unetdsl's
TORCH_VERSION_KEY = PREFIX + "torch_version"
FORMAT_KEY = PREFIX + "format"
DTYPE_KEY = PREFIX + "dtype"
DEVICE_KEY = PREFIX + "device"
FORWARD_KEY = PREFIX + "forward"  # the call signature, e.g. forward(x, t)
INPUTS_KEY = PREFIX + "inputs"  # each input's shape and dtype
AOTI_KEY = PREFIX + "aoti"  # AOTInductor packages (extra files only): frozen, and how many weights packed
TORCHSCRIPT_KEY = PREFIX + "torchscript"  # TorchScript files: scripted, frozen, or frozen with packed weights
MAX_SPEC_BYTES = 1 * 2**20  # what the YAML loader reads at most, too
MAX_DEPTH = 32


class StoredSpecError(UnetdslError):
    """A file's stored spec is not a spec unetdsl could have written."""


def _depth(value: Any) -> int:
    """Nesting depth, iteratively (a deep value must not exhaust the stack here either)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            break
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((c, d + 1) for c in children)
    return deepest


def parse_stored_spec(text: str | None) -> dict[str, Any]:
    """The stored spec as a mapping, or StoredSpecError saying why it is not one."""
    if text is None:
        raise StoredSpecError("it carries no unetdsl spec")
    if len(text) > MAX_SPEC_BYTES:
        raise StoredSpecError(f"its stored spec is {len(text)} characters; at most {MAX_SPEC_BYTES} are read")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise StoredSpecError(f"its stored spec is not JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise StoredSpecError(f"its stored spec is a JSON {type(data).__name__}, not a mapping of settings")
    if _depth(data) > MAX_DEPTH:
        raise StoredSpecError(f"its stored spec nests deeper than {MAX_DEPTH} levels")
    return data


def resolved_from_stored(text: str | None, stored_id: str | None) -> ResolvedSpec:
    """The resolved spec a file stores (its SPEC_KEY and ID_KEY values), or StoredSpecError."""
    data = parse_stored_spec(text)
    if FORM_KEY not in data:
        return _first_form(data, stored_id)
    if data[FORM_KEY] != FORM:
        raise StoredSpecError(f"its stored spec is in form {brief(str(data[FORM_KEY]), 20)}; this unetdsl reads "
                              f"form {FORM} and the first (a newer unetdsl wrote it?)")
    try:
        resolved = ResolvedSpec.from_stored(data)
    except (ValidationError, ValueError) as exc:
        first = exc.errors(include_url=False)[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise StoredSpecError(f"its stored spec is not a resolved spec: {brief(where, 60)}: {first['msg']}") from None
    try:
        again = resolve(validate_data(resolved.view()))
    except SpecError as exc:
        raise StoredSpecError(f"its stored spec breaks the language's rules:\n{exc.render()}") from None
    if again != resolved:
        changed = differences(resolved.model_dump(), again.model_dump())
        raise StoredSpecError("its stored spec is not one unetdsl resolves to (changed by hand?): " + ", ".join(
            f"{'.'.join(map(str, path))} is {brief(repr(x), 40)}, resolves to {brief(repr(y), 40)}"
            for path, x, y in changed[:8]))
    if stored_id != resolved.spec_id:
        raise StoredSpecError(f"stored spec id {brief(str(stored_id), 40)} is not its spec's id {resolved.spec_id}")
    return resolved


Difference = tuple[tuple[str | int, ...], Any, Any]


def differences(a: Any, b: Any, path: tuple[str | int, ...] = ()) -> list[Difference]:
    """Where two plain data trees (dumps, language views) differ: (path, value in a, value in b)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in dict.fromkeys([*a, *b]) for d in differences(a.get(k), b.get(k), (*path, k))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, (*path, i))]
    return [] if a == b else [(path, a, b)]


FIRST_ID_PREFIX = "sha256:"
# The level settings the first form wrote only where they differed from their built-in default
# (the setting then is that default: not inherited from `defaults`, which is how that release lost
# a level's `conv_bias: true` under `defaults: {conv_bias: false}` when reading its own files).
FIRST_FORM_WRITTEN_WHEN_NOT_DEFAULT = ("conv_bias",)


def _first_form(data: dict[str, Any], stored_id: str | None) -> ResolvedSpec:
    """A spec stored by unetdsl before the resolved form: the language, every level explicit, with
    an id of the first definition (the hash of exactly that data without name and description)."""
    hashed = {k: v for k, v in data.items() if k not in ("name", "description")}
    try:
        canonical = json.dumps(hashed, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise StoredSpecError("its stored spec holds a NaN or an infinity") from None
    first_id = FIRST_ID_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()[:16]
    if stored_id != first_id:
        raise StoredSpecError(f"stored spec id {brief(str(stored_id), 40)} is not its spec's id {first_id}")
    filled = json.loads(json.dumps(data))  # a copy to fill in
    places = [filled.get("middle")]
    for side in ("encoder", "decoder"):
        part = filled.get(side)
        if isinstance(part, dict) and isinstance(part.get("levels"), list):
            places += part["levels"]
    for place in places:
        if isinstance(place, dict):
            for name in FIRST_FORM_WRITTEN_WHEN_NOT_DEFAULT:
                place.setdefault(name, LEVEL_SETTINGS[name].default)
    try:
        return resolve(validate_data(filled))
    except SpecError as exc:
        raise StoredSpecError(f"its stored spec is not a valid spec:\n{exc.render()}") from None
