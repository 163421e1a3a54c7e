"""The two exception types of unetdsl and the located problem they carry.

`SpecError` is the user's fault: something in a spec (file, dict, `--set` override) is wrong.
It carries every problem found, each with a dotted path, what was found, what is allowed and,
when the spec came from text, `file:line:col` and the offending line with a caret.

`InternalError` is ours: an invariant of unetdsl broke. The CLI prints it as a bug report.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

Path = tuple[str | int, ...]


# How much of a value or a source line a message echoes: enough to recognise it, never a 900 kB blob.
ECHO_CHARS = 80
LINE_CHARS = 160


def brief(text: str, limit: int = ECHO_CHARS) -> str:
    """`text` as a quoted literal (control characters escaped), cut to `limit` characters."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"


def describe(value: object) -> str:
    """What a message says was found: short, terminal-safe, and never a failing conversion
    (Python refuses to print an int of more than 4,300 digits)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        digits = int(value.bit_length() * 0.30103) + 1
        return str(value) if digits <= 30 else f"a whole number of about {digits} digits"
    if isinstance(value, float):
        return f"the number {value!r}" if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, str):
        return f"the string {brief(value)}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    return f"a {type(value).__name__}"


def shown_name(name: str) -> str:
    """A file name as a message prints it: as is when printable, else escaped (a name can hold
    terminal escape sequences that would recolour or rewrite the screen)."""
    return name if name.isprintable() else repr(name)[1:-1]


def dotted(path: Path) -> str:
    """`("encoder", "levels", 1, "channels")` -> `encoder.levels.1.channels` (the `--set` syntax)."""
    return ".".join(brief(p, 40)[1:-1] if isinstance(p, str) else str(p) for p in path) if path else "<root>"


@dataclass(frozen=True)
class Location:
    """A 1-based line and column in a named source, with that source line for the caret."""

    source: str
    line: int
    col: int
    text: str | None = None

    def __str__(self) -> str:
        return f"{shown_name(self.source)}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec."""

    path: Path
    message: str
    found: str | None = None
    allowed: str | None = None
    hint: str | None = None
    location: Location | None = None

    @property
    def dotted_path(self) -> str:
        return dotted(self.path)

    def located(self, location: Location | None) -> Problem:
        return self if location is None or self.location is not None else replace(self, location=location)

    def render(self) -> str:
        where = f"{self.location}: " if self.location else ""
        lines = [f"{where}{self.dotted_path}: {self.message}"]
        if self.found is not None:
            lines.append(f"    found:   {self.found}")
        if self.allowed is not None:
            lines.append(f"    allowed: {self.allowed}")
        if self.hint is not None:
            lines.append(f"    hint:    {self.hint}")
        loc = self.location
        if loc is not None and loc.text is not None:
            gutter = f"{loc.line:>5} | "
            text, col = _window(loc.text.rstrip("\n"), loc.col)
            lines.append(gutter + text)
            # Tabs are kept so the caret lines up under the same column in a terminal.
            pad = "".join("\t" if ch == "\t" else " " for ch in text[: max(col - 1, 0)])
            lines.append(" " * (len(gutter) - 2) + "| " + pad + "^")
        return "\n".join(lines)


def _window(text: str, col: int) -> tuple[str, int]:
    """At most LINE_CHARS of a source line around column `col` (1-based), control characters
    shown as '?', and the column of the caret in what is shown."""
    text = "".join(ch if ch == "\t" or ch.isprintable() else "?" for ch in text[: col + LINE_CHARS])
    if len(text) <= LINE_CHARS:
        return text, col
    start = max(0, min(col - 1 - LINE_CHARS // 2, len(text) - LINE_CHARS))
    shown = text[start:start + LINE_CHARS]
    return ("..." if start else "") + shown + ("..." if start + LINE_CHARS < len(text) else ""), col - start + (3 if start else 0)


class UnetdslError(Exception):
    """Base of everything unetdsl raises on purpose."""


class SpecError(UnetdslError):
    """One or more problems with a spec. `problems` lists them all, in source order."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems: list[Problem] = sort_problems(problems)
        if not self.problems:
            raise InternalError("SpecError raised with no problems")
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in spec:"
        return head + "\n" + "\n".join(p.render() for p in self.problems)

    def __str__(self) -> str:
        return self.render()

    @classmethod
    def single(cls, path: Path, message: str, **kw: object) -> SpecError:
        return cls([Problem(path, message, **kw)])  # type: ignore[arg-type]


class InternalError(UnetdslError):
    """A bug in unetdsl (never the user's input). Please report it."""


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Source order first (what a reader scans), then path; located problems before unlocated."""

    def key(p: Problem) -> tuple[int, str, int, int, str]:
        loc = p.location
        if loc is None:
            return (1, "", 0, 0, p.dotted_path)
        return (0, loc.source, loc.line, loc.col, p.dotted_path)

    unique: dict[tuple[Path, str], Problem] = {}
    for p in problems:
        unique.setdefault((p.path, p.message), p)
    return sorted(unique.values(), key=key)


def divisors(n: int, limit: int | None = None) -> list[int]:
    """All positive divisors of n (at most `limit`), ascending: used in 'groups must divide' hints."""
    out = [d for d in range(1, n + 1) if n % d == 0]
    return [d for d in out if limit is None or d <= limit]


def join_allowed(values: Sequence[object]) -> str:
    return ", ".join(str(v) for v in values)
