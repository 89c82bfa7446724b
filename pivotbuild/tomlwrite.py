"""Writes TOML keys and values by hand (pivotbuild reads TOML with tomllib but has no writer).

Only what pivot.toml needs: strings, booleans, integers, floats, dates and times, arrays and
inline tables. Strings are TOML basic strings: ``"`` and ``\\`` are escaped, and so is every
control character (``\\b \\t \\n \\f \\r`` by name, the others and DEL as ``\\uXXXX``); any other
character, non-ASCII included, is written as it is (the file is UTF-8). ``None`` has no TOML
spelling and raises ``TomlValueError``, as does any other type.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_NAMED_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r",
                  '"': '\\"', "\\": "\\\\"}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]')


class TomlValueError(ValueError):
    """A value that TOML cannot hold (``None``, or a type TOML has no spelling for)."""


def string(text: str) -> str:
    """``text`` as a TOML basic string, quotes included."""

    def escape(match: re.Match[str]) -> str:
        char = match.group(0)
        return _NAMED_ESCAPES.get(char) or f"\\u{ord(char):04x}"

    return '"' + _NEEDS_ESCAPE.sub(escape, text) + '"'


def key(name: str) -> str:
    """One key: bare when TOML allows it, else quoted."""
    return name if _BARE_KEY.fullmatch(name) else string(name)


def dotted(*names: str) -> str:
    """A dotted key such as ``stages."a.b"``, each part quoted only if it must be."""
    return ".".join(key(n) for n in names)


def _float(number: float) -> str:
    if math.isnan(number):
        return "nan"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    text = repr(number)  # shortest round-trip form: "0.1", "1e+20", "1.5e-07"
    return text if any(c in text for c in ".e") else text + ".0"


def value(item: Any) -> str:
    """One value on one line (arrays and tables inline)."""
    if item is None:
        raise TomlValueError("null has no TOML equivalent")
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float):
        return _float(item)
    if isinstance(item, str):
        return string(item)
    if isinstance(item, (_dt.datetime, _dt.date, _dt.time)):
        return item.isoformat()
    if isinstance(item, Mapping):
        if not item:
            return "{}"
        return "{ " + ", ".join(f"{key(str(k))} = {value(v)}" for k, v in item.items()) + " }"
    if isinstance(item, (list, tuple)):
        return "[" + ", ".join(value(v) for v in item) + "]"
    raise TomlValueError(f"{type(item).__name__} has no TOML equivalent")


def array(items: list[Any], indent: str = "  ", width: int = 100) -> str:
    """An array value, on one line when it fits in ``width`` columns, else one item a line."""
    one_line = value(items)
    if len(one_line) <= width or len(items) < 2:
        return one_line
    return "[\n" + "".join(f"{indent}{value(v)},\n" for v in items) + "]"


def representable(item: Any) -> bool:
    """Whether ``value(item)`` would succeed."""
    try:
        value(item)
    except TomlValueError:
        return False
    return True
