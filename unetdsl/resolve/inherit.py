"""Inheritance: a level's own value, else `defaults`', else the built-in default, with the path
it was set at (problems point there, so the front end can attach `file:line:col`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import Path
from ..spec.models import LevelSettings
from ..spec.settings import DEFAULTS, LEVEL_SETTINGS
from .context import Context

# The resolver's names for the built-in defaults; every value is defined once, in spec/settings.py.
BUILTIN: dict[str, Any] = {
    "norm_type": DEFAULTS["norm.type"],
    "groups": DEFAULTS["norm.groups"],
    "eps": DEFAULTS["norm.eps"],
    "min_group_size": DEFAULTS["norm.min_group_size"],
    **{name: s.default for name, s in LEVEL_SETTINGS.items()},  # activation, order, dropout, ...
    "blocks": DEFAULTS["level.blocks"],
    "middle_blocks": DEFAULTS["middle.blocks"],
    "auto_max_groups": 32,  # groups: auto picks the largest common divisor up to this
}

T = TypeVar("T")


@dataclass(frozen=True)
class Setting:
    """A resolved value and the path it was set at (None: a built-in default)."""

    value: Any
    origin: Path | None


def pick(*candidates: tuple[Any, Path], builtin: Any) -> Setting:
    """The first non-None candidate (most specific first), else the built-in default."""
    for value, path in candidates:
        if value is not None:
            return Setting(value, path)
    return Setting(builtin, None)


def default(value: T | None, fallback: T) -> T:
    return fallback if value is None else value


def setting(ctx: Context, level: LevelSettings, path: Path, name: str) -> Setting:
    return pick((getattr(level, name), (*path, name)), (getattr(ctx.defaults, name), ("defaults", name)),
                builtin=BUILTIN[name])


def plain_settings(ctx: Context, level: LevelSettings, path: Path) -> dict[str, Any]:
    """Every plain level setting (spec/settings.py) of `level`: its own, else defaults', else built in."""
    return {name: setting(ctx, level, path, name).value for name in LEVEL_SETTINGS}
