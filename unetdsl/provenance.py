"""The keys unetdsl stores in every file it writes, and how a stored spec is read back.

A stored spec is data from a file someone handed us: it is parsed as JSON with bounded size and
depth, must be a mapping (a string would be taken for a path or YAML text by the spec front end),
and is then validated like any spec. No torch here."""

from __future__ import annotations

import json
from typing import Any

from .errors import UnetdslError

# Every key unetdsl writes into an artifact's metadata (TorchScript extra files, .pt2 extra files,
# ONNX metadata_props, safetensors metadata): the one list writers and readers share.
PREFIX = "unetdsl/"
SPEC_KEY = PREFIX + "spec.json"  # the resolved spec, canonical JSON
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
