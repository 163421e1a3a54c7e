"""YAML text -> plain data + the source position of every value. No torch here.

We read PyYAML's *event stream* and build the data ourselves instead of calling `safe_load`,
because safe_load gets four things wrong for a spec language:

* duplicate keys: safe_load silently keeps the last one; we reject them naming both lines;
* YAML 1.1 scalars: `no`/`on`/`yes` become booleans and `010` the octal 8; we resolve plain
  scalars by the YAML 1.2 core schema, where only `true`/`false` are booleans, and reject the
  ambiguous forms (`010`, `1_000`) outright;
* explicit tags (`!!python/...`, `!!str`, `!foo`): rejected, a spec has no use for them;
* resource bombs: input size, nesting depth and alias expansion are bounded *before* anything
  large is built (the event parser is iterative, so deep nesting cannot overflow the stack).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import Location, Path, Problem, SpecError
from .positions import Positions
from .scalars import _ScalarTrap, resolve_plain

MAX_BYTES = 1 << 20  # 1 MiB: a spec is a few kB
MAX_DEPTH = 32  # mapping/sequence nesting; real specs use ~5
MAX_NODES = 20_000  # values after alias expansion; real specs have a few hundred


@dataclass
class Loaded:
    data: Any
    positions: Positions


class OverBudget(SpecError):
    """The bytes a composition may read are spent."""


@dataclass
class Budget:
    """What one composition may still read: the bounds hold for all the files of an `extends`
    chain together, not per file (16 files of 1 MiB would otherwise be 16 MiB and 16 x the
    values and problems)."""

    bytes: int = MAX_BYTES
    nodes: int = MAX_NODES

    def take_bytes(self, n: int, source: str) -> None:
        if n > self.bytes:
            spent = MAX_BYTES - self.bytes
            raise OverBudget([Problem((), f"the spec is {n} bytes; at most {MAX_BYTES} are read"
                                   + (f" for a spec and the files it extends together ({spent} already read)"
                                      if spent else ""), location=Location(source, 1, 1))])
        self.bytes -= n


# --- the composer ----------------------------------------------------------------------------
@dataclass
class _Node:
    kind: str  # "scalar" | "seq" | "map"
    line: int
    col: int
    value: Any = None  # scalar: resolved value
    items: list[Any] = field(default_factory=list)  # seq: [_Node]; map: [(key_node, value_node)]
    problem: tuple[str, str | None] | None = None  # (message, hint), reported with the node's path


class _Composer:
    def __init__(self, text: str, source: str):
        self.text = text
        self.source = source
        self.lines = text.splitlines()
        self.problems: list[Problem] = []
        self.anchors: dict[str, _Node] = {}

    def loc(self, line: int, col: int) -> Location:
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else None
        return Location(self.source, line, col, text)

    def fail(self, line: int, col: int, message: str, **kw: Any) -> None:
        self.problems.append(Problem((), message, location=self.loc(line, col), **kw))

    def compose(self) -> _Node | None:
        """Events -> a tree of _Node, iteratively, bounding depth; aliases share their node."""
        stack: list[_Node] = []
        pending_key: list[_Node | None] = []
        root: _Node | None = None
        documents = 0
        try:
            for event in yaml.parse(self.text, Loader=yaml.SafeLoader):
                mark = event.start_mark
                line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
                if isinstance(event, yaml.DocumentStartEvent):
                    documents += 1
                    if documents > 1:
                        self.fail(line, col, "a spec file holds one YAML document; found a second")
                        raise SpecError(self.problems)
                    continue
                if isinstance(event, (yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentEndEvent)):
                    continue
                if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                    done = stack.pop()
                    pending_key.pop()
                    self._attach(done, stack, pending_key)
                    if not stack:
                        root = done
                    continue
                tag = getattr(event, "tag", None)
                node: _Node
                if isinstance(event, yaml.AliasEvent):
                    target = self.anchors.get(event.anchor or "")
                    if target is None:  # pragma: no cover - the parser reports undefined aliases
                        self.fail(line, col, f"undefined alias *{event.anchor}")
                        raise SpecError(self.problems)
                    node = target
                elif isinstance(event, yaml.ScalarEvent):
                    node = _Node("scalar", line, col)
                    node.value, node.problem = self._scalar(event)
                elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                    node = _Node("seq" if isinstance(event, yaml.SequenceStartEvent) else "map", line, col)
                    if len(stack) >= MAX_DEPTH:
                        self.fail(line, col, f"nesting deeper than {MAX_DEPTH} levels")
                        raise SpecError(self.problems)
                else:  # pragma: no cover - PyYAML has no other node events
                    continue
                if tag is not None and tag != "!" and not isinstance(event, yaml.AliasEvent):
                    node.problem = (f"explicit YAML tag {tag!r} is not allowed in a spec",
                                    "remove the tag; quote a value to make it a string")
                anchor = getattr(event, "anchor", None)
                if anchor is not None and not isinstance(event, yaml.AliasEvent):
                    self.anchors[anchor] = node
                if node.kind in ("seq", "map") and not isinstance(event, yaml.AliasEvent):
                    stack.append(node)
                    pending_key.append(None)
                    continue
                self._attach(node, stack, pending_key)
                if not stack:
                    root = node
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            what = " ".join(s for s in (exc.context, exc.problem) if s)
            self.fail(line, col, f"not valid YAML: {what}")
        except yaml.reader.ReaderError as exc:  # a character YAML forbids (NUL, most control characters)
            line, col = _line_col(self.text, exc.position)
            code = ord(exc.character) if isinstance(exc.character, str) else int(exc.character)
            self.fail(line, col, f"not valid YAML: character U+{code:04X} is not allowed in YAML text",
                      hint="remove it (a binary file, or a stray control character?)")
        except yaml.YAMLError as exc:  # no position to report
            self.fail(1, 1, f"not valid YAML: {exc}")
        if self.problems:
            raise SpecError(self.problems)
        return root

    def _scalar(self, event: yaml.ScalarEvent) -> tuple[Any, tuple[str, str | None] | None]:
        # Quoted, block and explicitly '!'-tagged scalars are strings; plain ones are resolved.
        if event.style is not None or event.tag == "!":
            return event.value, None
        try:
            return resolve_plain(event.value), None
        except _ScalarTrap as trap:
            return event.value, (trap.message, trap.hint)

    def _attach(self, node: _Node, stack: list[_Node], pending_key: list[_Node | None]) -> None:
        if not stack:
            return
        parent = stack[-1]
        if parent.kind == "seq":
            parent.items.append(node)
        elif pending_key[-1] is None:
            pending_key[-1] = node
        else:
            parent.items.append((pending_key[-1], node))
            pending_key[-1] = None


class _Converter:
    """_Node tree -> plain data, expanding aliases under a node budget (billion-laughs guard).

    Problems (duplicate keys, YAML traps, tags) are collected with their data path; only the
    budget and depth limits stop the walk early.
    """

    def __init__(self, positions: Positions, budget: Budget):
        self.positions = positions
        self.budget = budget
        self.problems: list[Problem] = []

    def at(self, node: _Node) -> Location:
        return self.positions._loc(node.line, node.col)

    def convert(self, node: _Node, path: Path, depth: int) -> Any:
        self.budget.nodes -= 1
        if self.budget.nodes < 0:
            raise SpecError([*self.problems, Problem(
                path, f"the document expands to more than {MAX_NODES} values (an alias expansion bomb?)",
                hint="write the spec out without nested aliases", location=self.at(node))])
        if depth > MAX_DEPTH:
            raise SpecError([*self.problems, Problem(
                path, f"nesting deeper than {MAX_DEPTH} levels (a recursive alias?)", location=self.at(node))])
        self.positions.values.setdefault(path, (node.line, node.col))
        if node.problem is not None:
            message, hint = node.problem
            self.problems.append(Problem(path, message, hint=hint, location=self.at(node)))
        if node.kind == "scalar":
            return node.value
        if node.kind == "seq":
            return [self.convert(child, (*path, i), depth + 1) for i, child in enumerate(node.items)]
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.items:
            if key_node.kind != "scalar":
                self.problems.append(Problem(path, "mapping keys must be plain names", location=self.at(key_node)))
                continue
            key = key_node.value if isinstance(key_node.value, str) else _key_text(key_node.value)
            if key in first_line:
                self.problems.append(Problem(
                    (*path, key),
                    f"duplicate key {key!r}: first given on line {first_line[key]}, again on line {key_node.line}",
                    hint="keep one of them (YAML loaders disagree on which wins)",
                    location=self.at(key_node),
                ))
                continue
            if key_node.problem is not None:
                self.problems.append(Problem((*path, key), key_node.problem[0], hint=key_node.problem[1],
                                             location=self.at(key_node)))
            first_line[key] = key_node.line
            self.positions.keys.setdefault((*path, key), (key_node.line, key_node.col))
            out[key] = self.convert(value_node, (*path, key), depth + 1)
        return out


def _key_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _line_col(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of character `index` of `text`."""
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def load_text(text: str | bytes, source: str = "<string>", *, allow_empty: bool = False,
              budget: Budget | None = None) -> Loaded:
    """Parse one YAML document into plain data with positions. Raises SpecError only.
    `allow_empty`: an empty document or `null` is the value None (a `--set` value), not an error.
    `budget`: the bounds left to a composition this document is part of (a fresh one if None)."""
    budget = budget if budget is not None else Budget()
    if isinstance(text, bytes):
        raw = text
        budget.take_bytes(len(raw), source)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            good = raw[: exc.start].decode("utf-8")  # everything before the bad byte decodes
            line, col = _line_col(good, len(good))
            shown = good.splitlines()[line - 1] if good and not good.endswith("\n") else ""
            raise SpecError.single((), f"not UTF-8 text: byte {raw[exc.start]:#04x} at offset {exc.start} ({exc.reason})",
                                   hint="save the file as UTF-8", location=Location(source, line, col, shown)) from None
    else:
        budget.take_bytes(len(text.encode("utf-8", errors="replace")), source)
    composer = _Composer(text, source)
    root = composer.compose()
    positions = Positions(source, composer.lines)
    if root is None or (root.kind == "scalar" and root.value is None):
        if allow_empty:
            return Loaded(None, positions)
        raise SpecError.single((), "the spec is empty", location=Location(source, 1, 1),
                               hint="start from one of the files in specs/")
    converter = _Converter(positions, budget)
    data = converter.convert(root, (), 0)
    if converter.problems:
        raise SpecError(converter.problems)
    return Loaded(data, positions)


def read_regular(path: str, limit: int) -> bytes:
    """At most `limit` + 1 bytes of the regular file `path`. Opened without blocking and checked
    after opening (not stat-then-open), so a FIFO, device or socket swapped in cannot hang or
    feed the reader. Raises OSError (a non-regular file: errno EINVAL with a plain message)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a directory, device, pipe or socket)")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(limit + 1)
    finally:
        os.close(fd)


def load_file(path: str, budget: Budget | None = None) -> Loaded:
    budget = budget if budget is not None else Budget()
    try:
        raw = read_regular(path, budget.bytes)
    except (OSError, ValueError) as exc:  # ValueError: a name the OS cannot take (NUL, lone surrogates)
        raise SpecError.single((), f"cannot read spec file: {getattr(exc, 'strerror', None) or exc}",
                               location=Location(path, 1, 1)) from None
    return load_text(raw, source=path, budget=budget)
