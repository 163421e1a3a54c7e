"""`extends: base.yaml`: a spec written as the changes to another spec.

    unetdsl: 1
    extends: ddpm-cifar10.yaml      # relative to this file; chains (the base may extend another)
    name: ddpm-cifar10-wide
    encoder: {levels: [...]}        # mappings merge key by key, lists replace, scalars replace

The base is loaded first, then each file above it is merged in, and `--set` applies last. Every
value keeps the position of the file that wrote it, so an error points at the file and line where
the value was written. Only regular files on the local filesystem are read (no URLs, no devices or
pipes), at most MAX_CHAIN files deep, each within the loader's size bounds; a cycle is an error
naming the chain. The merged document is what validation, `resolve` and the spec id see.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any

from .errors import Location, Path, Problem, SpecError
from .loader import Loaded, load_file
from .positions import Positions

KEY = "extends"
MAX_CHAIN = 16


@dataclass
class LayeredPositions(Positions):
    """Positions of a merged document. `origin` says which file (an index into `documents`, the
    extending file first) wrote each path of the merged data; that file answers for it."""

    origin: dict[Path, int] = field(default_factory=dict)
    documents: list[tuple[Positions, Any]] = field(default_factory=list)  # each file's positions and own data

    def exact(self, path: Path, *, key: bool = False) -> Location | None:
        return self.documents[self.origin[path]][0].exact(path, key=key) if path in self.origin else None

    def ancestor(self, path: Path) -> Location | None:
        for n in range(len(path) - 1, -1, -1):
            if path[:n] in self.origin:
                return self.documents[self.origin[path[:n]]][0].exact(path[:n])
        return None


def merge(base: Any, top: Any) -> Any:
    """`top` over `base`: mappings merge key by key (recursively), anything else replaces."""
    if isinstance(base, dict) and isinstance(top, dict):
        merged = dict(base)
        for k, v in top.items():
            merged[k] = merge(base[k], v) if k in base else v
        return merged
    return top


def origins(datas: list[Any]) -> dict[Path, int]:
    """For each path of `merge`'s result over `datas` (topmost first), the index of the document
    its value comes from: the topmost one holding it, where every mapping above merged."""
    origin: dict[Path, int] = {}

    def whole(value: Any, path: Path, owner: int) -> None:  # a replaced value: all of it is one file's
        origin[path] = owner
        children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for k, v in children:
            whole(v, (*path, k), owner)

    def walk(path: Path, values: list[tuple[int, Any]]) -> None:  # (document, its value at path), topmost first
        owner, value = values[0]
        if not isinstance(value, dict):
            whole(value, path, owner)
            return
        origin[path] = owner
        merging: list[tuple[int, dict[Any, Any]]] = []
        for i, v in values:  # the mappings that merge here: down to the first non-mapping below them
            if not isinstance(v, dict):
                break
            merging.append((i, v))
        keys = dict.fromkeys(k for _, v in reversed(merging) for k in v)
        for k in keys:
            walk((*path, k), [(i, v[k]) for i, v in merging if k in v])

    walk((), list(enumerate(datas)))
    return origin


def _problem(loaded: Loaded, message: str, **kw: Any) -> SpecError:
    return SpecError([Problem((KEY,), message, location=loaded.positions.location((KEY,)), **kw)])


def _target(loaded: Loaded, base_dir: str) -> str:
    ref = loaded.data[KEY]
    if not isinstance(ref, str) or not ref.strip():
        raise _problem(loaded, "must be the path of the spec this one extends", found=repr(ref)[:80],
                       allowed="a file path, relative to this file")
    if "://" in ref or ref.startswith(("http:", "https:", "file:")):
        raise _problem(loaded, "only files on this machine can be extended", found=ref[:200],
                       allowed="a file path, relative to this file")
    if "\x00" in ref:  # the OS cannot name such a file (os.stat raises ValueError, not OSError)
        raise _problem(loaded, "the path of the extended spec contains a NUL character", found=repr(ref)[:200],
                       allowed="a file path, relative to this file")
    path = os.path.normpath(os.path.join(base_dir, os.path.expanduser(ref)))
    try:
        info = os.stat(path)
    except (OSError, ValueError) as exc:  # ValueError: a name the file system cannot encode (lone surrogates)
        raise _problem(loaded, f"cannot read the extended spec: {getattr(exc, 'strerror', None) or exc}",
                       found=path if path.isprintable() else repr(path)[:200]) from None
    if not stat.S_ISREG(info.st_mode):
        raise _problem(loaded, "the extended spec is not a regular file", found=path,
                       hint="extends names a spec file (a directory, device or pipe cannot be one)")
    return path


def resolve_extends(loaded: Loaded, base_dir: str, chain: tuple[str, ...] = ()) -> Loaded:
    """`loaded` with its `extends` chain merged under it (no-op without the key)."""
    if not isinstance(loaded.data, dict) or KEY not in loaded.data:
        return loaded
    if len(chain) >= MAX_CHAIN:
        raise _problem(loaded, f"more than {MAX_CHAIN} files extend one another", found=" -> ".join(chain[:4]) + " ...")
    path = _target(loaded, base_dir)
    real = os.path.realpath(path)
    if real in chain:
        names = [os.path.basename(c) for c in (*chain, real)]
        raise _problem(loaded, "specs extend one another in a cycle", found=" -> ".join(names),
                       hint="remove one of the extends")
    base = resolve_extends(load_file(path), os.path.dirname(path), (*chain, real))
    if not isinstance(base.data, dict):
        raise _problem(loaded, "the extended spec is not a mapping of settings", found=path)
    top = {k: v for k, v in loaded.data.items() if k != KEY}
    # the documents, topmost first, each with the positions of its own file
    below = base.positions.documents if isinstance(base.positions, LayeredPositions) else [(base.positions, base.data)]
    documents = [(loaded.positions, top), *below]
    positions = LayeredPositions(loaded.positions.source, loaded.positions.lines,
                                 origin=origins([d for _, d in documents]), documents=documents)
    return Loaded(merge(base.data, top), positions)
