"""The level settings: what every encoder level, decoder level and the middle inherit from
`defaults` and may override. Each is defined once here (its default, its description, and whether
the spec-id serialisation writes it always or only when it differs from the default); the
pydantic models (and so the JSON Schema and docs/language.md), the resolver and the resolved
form's serialisation all read this table. Adding a plain level setting costs: its entry here, its
typed field in `models.LevelSettings` and `resolved.ResolvedSettings`, and its use in the compiler.

`norm` and `attention` are level settings with structure of their own (merged field by field,
checked against channel counts) and keep their own rules in the resolver."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LevelSetting:
    default: Any
    description: str  # what it does; "Default X." is appended from `default`
    # settings added after format 1's first release are written into the spec-id serialisation
    # only when they differ from the default, so the ids recorded before them stay valid
    written_when_default: bool = True

    def field_description(self) -> str:
        shown = str(self.default).lower() if isinstance(self.default, bool) else f"{self.default:g}" \
            if isinstance(self.default, float) else str(self.default)
        return f"{self.description} Default {shown}."


LEVEL_SETTINGS: dict[str, LevelSetting] = {
    "activation": LevelSetting("silu", "Activation function (closed list)."),
    "order": LevelSetting("pre", "pre: norm->act->conv | post: conv->norm->act."),
    "dropout": LevelSetting(0.0, "Dropout before each ResBlock's second conv, in [0, 1)."),
    "conv_bias": LevelSetting(
        True, "Bias on the ResBlock convolutions a norm follows (true as diffusers, whose weights have it); false "
        "gives the bias-free 3x3 convolutions before GroupNorm of many ResBlock designs. A per-channel norm "
        "(instance, batch) drops it either way.", written_when_default=False),
}


def describe(name: str) -> str:
    return LEVEL_SETTINGS[name].field_description()


def serialised(values: dict[str, Any], *, explicit: bool) -> dict[str, Any]:
    """`values` (name -> resolved value) as the spec-id serialisation writes them: every setting
    when `explicit`, else each unless it is a post-release one at its default."""
    return {name: values[name] for name, s in LEVEL_SETTINGS.items()
            if name in values and (explicit or s.written_when_default or values[name] != s.default)}
