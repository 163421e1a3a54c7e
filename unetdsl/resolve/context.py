"""What every resolution step shares: the spec, the problems and warnings found so far, and the
GroupNorm bookkeeping that is reported once at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import Path, Problem
from ..spec.models import LevelSettings, Spec


@dataclass
class Context:
    spec: Spec
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    # origin path of a `groups` value -> (groups, is_builtin_default, every channel count it
    # normalises, the (count, place) pairs it does not divide): reported once, by norms.report_groups
    group_uses: dict[Path, tuple[int, bool, list[int], list[tuple[int, str]]]] = field(default_factory=dict)

    @property
    def defaults(self) -> LevelSettings:
        return self.spec.defaults or LevelSettings()

    def fail(self, path: Path, message: str, **kw: Any) -> None:
        self.problems.append(Problem(path, message, **kw))

    def warn(self, path: Path, message: str, **kw: Any) -> None:
        self.warnings.append(Problem(path, message, **kw))
