"""`extends: base.yaml`: a spec written as the changes to another spec.

    unetdsl: 1
    extends: ddpm-cifar10.yaml      # relative to this file; chains (the base may extend another)
    name: ddpm-cifar10-wide
    encoder: {levels: [...]}        # mappings merge key by key, lists replace, scalars replace

The base is loaded first, then each file above it is merged in, and `--set` applies last. Every
value keeps the position of the file that wrote it, so an error points at the file and line where
the value was written. `extends` is confined: a relative path, resolved against the extending file, to a regular file
inside the root (the folder of the spec given, or one the caller passes): no absolute paths,
`~`, URLs, devices, pipes or symlinks out of the tree. A file is quoted in messages only once it
is known to be a spec (a mapping with `unetdsl: 1`). At most MAX_CHAIN files deep, and the
loader's bounds (bytes, values) hold for the whole chain together; a cycle is an error naming it.
The merged document is what validation, `resolve` and the spec id see.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any

from .errors import Location, Path, Problem, SpecError, brief, shown_name
from .loader import MAX_BYTES, Budget, Loaded, OverBudget, load_file
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


@dataclass
class Composition:
    """One spec and the files it extends, read as one: confined to `root` (the real path of the
    folder tree every extended file must lie in), under one loader budget for all of them, and
    recording every file read (`files`, real paths, the spec given first) so that no output of
    the command can replace one of them."""

    root: str
    budget: Budget = field(default_factory=Budget)
    files: list[str] = field(default_factory=list)

    @classmethod
    def under(cls, root: str | os.PathLike[str]) -> Composition:
        return cls(os.path.realpath(root))

    def shown(self, real: str) -> str:
        """A path as messages show it: relative to the root (never more of the machine than that)."""
        return shown_name(os.path.relpath(real, self.root))


RELATIVE = "a path relative to this file, inside the folder of the spec given"


def _problem(loaded: Loaded, message: str, **kw: Any) -> SpecError:
    return SpecError([Problem((KEY,), message, location=loaded.positions.location((KEY,)), **kw)])


def _target(loaded: Loaded, base_dir: str, comp: Composition) -> str:
    """The real path of the file `loaded` extends, once it is known to be a regular file inside
    the root. What the reference says is shown only as written in the spec (escaped); what the
    file system says about it only relative to the root."""
    ref = loaded.data[KEY]
    if not isinstance(ref, str) or not ref.strip():
        raise _problem(loaded, "must be the path of the spec this one extends", found=repr(ref)[:80], allowed=RELATIVE)
    found = brief(ref, 200)
    if "://" in ref or ref.startswith(("http:", "https:", "file:")):
        raise _problem(loaded, "only files on this machine can be extended", found=found, allowed=RELATIVE)
    if "\x00" in ref:  # the OS cannot name such a file (os.stat raises ValueError, not OSError)
        raise _problem(loaded, "the path of the extended spec contains a NUL character", found=found, allowed=RELATIVE)
    if os.path.isabs(ref) or ref.startswith("~") or os.path.splitdrive(ref)[0]:
        raise _problem(loaded, "extends takes a relative path, not an absolute one or one from a home folder",
                       found=found, allowed=RELATIVE, hint="write the base's path relative to this file")
    path = os.path.normpath(os.path.join(base_dir, ref))
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError) as exc:
        raise _problem(loaded, f"cannot read the extended spec: {getattr(exc, 'strerror', None) or exc}",
                       found=found) from None
    if os.path.commonpath([real, comp.root]) != comp.root:
        raise _problem(loaded, "the extended spec is outside the folder of the spec given (a symlink or .. that "
                       "leaves it)", found=found, allowed=RELATIVE,
                       hint="move the base next to the spec, or widen the root: --root DIR on the command line, "
                       "root= in the library")
    try:
        info = os.stat(real)
    except (OSError, ValueError) as exc:  # ValueError: a name the file system cannot encode (lone surrogates)
        raise _problem(loaded, f"cannot read the extended spec: {getattr(exc, 'strerror', None) or exc}",
                       found=found) from None
    if not stat.S_ISREG(info.st_mode):
        raise _problem(loaded, "the extended spec is not a regular file", found=found,
                       hint="extends names a spec file (a directory, device or pipe cannot be one)")
    return real


def _load_base(loaded: Loaded, real: str, comp: Composition) -> Loaded:
    """The extended file, read under the composition's budget. Until it is known to be a spec (a
    mapping with the `unetdsl:` version key) nothing of its text is shown: a file that is not a
    spec is never quoted, only named relative to the root."""
    name = comp.shown(real)
    try:
        base = load_file(real, comp.budget)
    except OverBudget:
        raise _problem(loaded, f"the extended file {name} is over what is left of the {MAX_BYTES} bytes read for a "
                       "spec and every file it extends together") from None
    except SpecError as exc:
        n, first = len(exc.problems), exc.problems[0].location
        where = f", the first at {name}:{first.line}:{first.col}" if first else ""
        raise _problem(loaded, f"the extended file {name} is not a readable spec ({n} problem{'s' if n > 1 else ''}"
                       f"{where})",
                       hint="extends names a unetdsl spec file; `unetdsl validate` on that file shows what is wrong") from None
    if not isinstance(base.data, dict) or "unetdsl" not in base.data:
        raise _problem(loaded, f"the extended file {name} is not a unetdsl spec (a spec is a mapping with a "
                       "`unetdsl: 1` line)", hint="extends names a unetdsl spec file")
    comp.files.append(real)
    return base


def resolve_extends(loaded: Loaded, base_dir: str, comp: Composition, chain: tuple[str, ...] = ()) -> Loaded:
    """`loaded` with its `extends` chain merged under it (no-op without the key)."""
    if not isinstance(loaded.data, dict) or KEY not in loaded.data:
        return loaded
    if len(chain) >= MAX_CHAIN:
        raise _problem(loaded, f"more than {MAX_CHAIN} files extend one another",
                       found=" -> ".join(comp.shown(c) for c in chain[:4]) + " ...")
    real = _target(loaded, base_dir, comp)
    if real in chain:
        names = [shown_name(os.path.basename(c)) for c in (*chain, real)]
        raise _problem(loaded, "specs extend one another in a cycle", found=" -> ".join(names),
                       hint="remove one of the extends")
    base = resolve_extends(_load_base(loaded, real, comp), os.path.dirname(real), comp, (*chain, real))
    top = {k: v for k, v in loaded.data.items() if k != KEY}
    # the documents, topmost first, each with the positions of its own file
    below = base.positions.documents if isinstance(base.positions, LayeredPositions) else [(base.positions, base.data)]
    documents = [(loaded.positions, top), *below]
    positions = LayeredPositions(loaded.positions.source, loaded.positions.lines,
                                 origin=origins([d for _, d in documents]), documents=documents)
    return Loaded(merge(base.data, top), positions)
