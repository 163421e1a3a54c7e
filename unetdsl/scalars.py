"""YAML 1.2 core-schema resolution of plain (unquoted) scalars, strict about the traps where YAML
1.1 reads the same text differently. Used by the loader to read values and by the validator to
word its hints ("'no' is a string in YAML 1.2"). No PyYAML here."""

from __future__ import annotations

import math
import re
from typing import Any

_NULL = {"", "~", "null", "Null", "NULL"}
_BOOL = {"true": True, "false": False}
# YAML 1.1 booleans that YAML 1.2 reads as strings; kept as strings, flagged by validation hints.
YAML11_BOOLEANS = {
    v
    for w in ("yes", "no", "on", "off", "y", "n", "true", "false")
    for v in (w, w.capitalize(), w.upper())
} - {"true", "false"}
_INT = re.compile(r"[-+]?[0-9]+\Z")
_INT_OCT = re.compile(r"0o[0-7]+\Z")
_INT_HEX = re.compile(r"0x[0-9a-fA-F]+\Z")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)\Z")
_NAN = re.compile(r"\.(nan|NaN|NAN)\Z")
_AMBIGUOUS_INT = re.compile(r"[-+]?(0[0-9]+|[0-9][0-9_]*_[0-9_]*)\Z")


class _ScalarTrap(Exception):
    def __init__(self, message: str, hint: str):
        self.message, self.hint = message, hint


# No setting takes a number anywhere near this long; Python refuses to convert ints of more than
# 4,300 digits at all (a ValueError deep inside int() or repr()), so the loader stops far before.
MAX_INT_DIGITS = 30


def _too_many_digits(text: str) -> _ScalarTrap:
    return _ScalarTrap(f"a number of {len(text)} characters: far larger than any setting allows",
                       "check the value; every number unetdsl reads has at most a few digits")


def resolve_plain(text: str) -> Any:
    """The value of an unquoted scalar under the YAML 1.2 core schema (strict about traps)."""
    if len(text) > MAX_INT_DIGITS and (_INT.match(text) or _INT_OCT.match(text) or _INT_HEX.match(text)
                                       or _AMBIGUOUS_INT.match(text)):
        raise _too_many_digits(text)
    if text in _NULL:
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _AMBIGUOUS_INT.match(text):
        digits = text.replace("_", "").lstrip("+")
        raise _ScalarTrap(
            f"ambiguous number {text!r}: YAML 1.1 and 1.2 read it differently "
            "(leading zeros are octal in 1.1, underscores are digit separators in 1.1 only)",
            f"write {int(digits)} (or quote it if you meant a string)",
        )
    if _INT.match(text):
        return int(text)
    if _INT_OCT.match(text):
        return int(text[2:], 8)
    if _INT_HEX.match(text):
        return int(text[2:], 16)
    if _FLOAT.match(text):
        return float(text)
    if _INF.match(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.match(text):
        return math.nan
    return text
