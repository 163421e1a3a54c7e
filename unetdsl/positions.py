"""Where each value of a spec came from: the file (or `--set` override) and its line and column.
Shared by the loader that records positions, the validator and resolver that report problems at
them, and `extends`, which layers several files' positions. No YAML, no torch here."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Location, Path


@dataclass
class Positions:
    """Where each value (and each mapping key) of a loaded document came from."""

    source: str
    lines: list[str]
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    # `--set` overrides: a value set on the command line, and everything below it, points there.
    overrides: dict[Path, Location] = field(default_factory=dict)
    # where each name of an override's path stands in its `--set` text (unknown-key errors point there)
    override_keys: dict[Path, Location] = field(default_factory=dict)

    def location(self, path: Path, *, key: bool = False) -> Location | None:
        """The location of `path`; of its key when `key` (unknown-key errors point at the key).

        Falls back to the nearest ancestor that has a position (a missing key -> its mapping).
        """
        if key and path in self.override_keys:
            return self.override_keys[path]
        for n in range(len(path), -1, -1):
            if path[:n] in self.overrides:
                return self.overrides[path[:n]]
        found = self.exact(path, key=key)
        if found is not None:
            return found
        # not in the file, but above an override's value (a section the override created, such as
        # a misspelt one): the override made it, so point there
        for set_path, where in self.overrides.items():
            if path and set_path[: len(path)] == path:
                return where
        return self.ancestor(path)

    def exact(self, path: Path, *, key: bool = False) -> Location | None:
        """Where the file wrote `path` (its key when `key`, else its value), if it did."""
        table = self.keys if key else self.values
        return self._loc(*table[path]) if path in table else None

    def ancestor(self, path: Path) -> Location | None:
        """The nearest ancestor of `path` the file wrote."""
        for n in range(len(path) - 1, -1, -1):
            if path[:n] in self.values:
                return self._loc(*self.values[path[:n]])
        return None

    def _loc(self, line: int, col: int) -> Location:
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else None
        return Location(self.source, line, col, text)
