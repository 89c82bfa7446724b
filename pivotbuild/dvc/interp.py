"""DVC's ``${...}`` interpolation: resolving it as DVC does, and spelling it for pivotbuild.

DVC finds ``${inner}`` not preceded by a backslash (``\\${`` is a literal ``${``); ``inner`` is
a name walked with ``.key`` and ``[index]``. A reference that is the whole string keeps its
value's type; inside text a value is written as DVC's ``to_str`` writes it (``true``/``false``
for booleans, ``str()`` otherwise) and a table, only in ``cmd``, as ``--key value`` arguments.

``translate`` gives pivotbuild template text that renders to the same string: a scalar from
params.yaml becomes ``${params.KEY}``, a scalar var that ``[vars]`` holds stays ``${NAME}``,
``${item}`` of a list foreach and ``${item.AXIS}`` of a matrix stay; anything else is written
out as the text DVC would produce (when that text came from a file, it is remembered in
``lossy``, since later edits to the file no longer reach the stage). A literal ``${`` is written
``$${``. A stage that would need an item reference written out raises ``NeedsUnroll``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from pivotbuild import tomlwrite
from pivotbuild.errors import ConfigError

DVC_YAML = "dvc.yaml"
_KEYCRE = re.compile(r"(?<!\\)\$\{(?P<inner>.*?)\}")
_PIVOT_PART = re.compile(r"[A-Za-z0-9_-]+")  # what pivotbuild allows between dots in ${...}
_FROM_FILE = ("params", "file:", "stagefile:")


class NeedsUnroll(Exception):
    """A templated stage uses its item in a way pivotbuild's foreach / matrix cannot express."""


def lookup(data: Any, expr: str) -> Any:
    """Walk ``a.b.0`` through tables and lists as DVC does; KeyError if a step is missing."""
    for part in expr.split("."):
        part = part.strip()
        is_int = part.lstrip("-").isdigit()
        if isinstance(data, dict) and part in data:
            data = data[part]
            continue
        index = int(part) if is_int else None
        in_dict = isinstance(data, dict) and index in data
        in_list = isinstance(data, list) and index is not None and -len(data) <= index < len(data)
        if not (in_dict or in_list):
            raise KeyError(expr)
        data = data[index]
    return data


def to_str(value: Any, in_cmd: bool = False, parsing: dict[str, str] | None = None) -> str:
    """A value as DVC writes it into a string; ValueError / TypeError for what DVC refuses."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        if not in_cmd:
            raise ValueError("a table can only be interpolated into cmd")
        return _as_args(value, parsing or {})
    if isinstance(value, (list, tuple)):
        raise TypeError("a list cannot be interpolated into a string")
    return str(value)


def _flatten(data: dict[Any, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _as_args(table: dict[Any, Any], parsing: dict[str, str]) -> str:
    """DVC's dictionary unpacking in cmd (config ``parsing.bool`` and ``parsing.list``)."""
    words: list[str] = []
    append = parsing.get("list", "nargs") == "append"
    for k, v in _flatten(table).items():
        if isinstance(v, bool):
            if v:
                words.append(f"--{k}")
            elif parsing.get("bool", "store_true") == "boolean_optional":
                words.append(f"--no-{k}")
        elif isinstance(v, str):
            words.append(f"--{k} {shlex.quote(v)}")
        elif isinstance(v, (list, tuple)):
            for n, i in enumerate(v):
                if isinstance(i, (list, tuple, dict)):
                    raise TypeError(f"cannot interpolate the nested list in '{k}'")
                text = shlex.quote(i) if isinstance(i, str) else str(i)
                words.append(text if n and not append else f"--{k} {text}")
        else:
            words.append(f"--{k} {v}")
    return " ".join(words)


@dataclass
class Scope:
    """The names a ``${...}`` can see, and where each top-level name came from.

    Sources: ``params`` (params.yaml), ``vars`` (inline, global), ``file:PATH`` (a global vars
    file), ``stage`` / ``stagefile:`` (a stage's own vars), ``item`` (foreach / matrix).
    """

    values: dict[str, Any]
    source: dict[str, str]
    mode: str = "plain"  # "plain": item refs are written out; "foreach"/"matrix": kept;
    # "keys": a dict foreach as a foreach over its keys (``${key}`` kept as ``${item}``)
    axes: tuple[str, ...] = ()

    def child(self, values: dict[str, Any], source: str, mode: str | None = None,
              axes: tuple[str, ...] | None = None) -> Scope:
        return Scope({**self.values, **values}, {**self.source, **dict.fromkeys(values, source)},
                     mode or self.mode, self.axes if axes is None else axes)


class Interpolator:
    """Resolves and translates ``${...}`` for one project; errors name dvc.yaml and the key."""

    def __init__(self, parsing: dict[str, str], pivot_vars: dict[str, Any]) -> None:
        self.parsing = parsing
        self.pivot_vars = pivot_vars  # what [vars] of pivot.toml will hold
        self.lossy: set[str] = set()

    def value(self, inner: str, scope: Scope, where: str) -> Any:
        expr = inner.replace("[", ".").replace("]", "").strip()
        try:
            return lookup(scope.values, expr)
        except KeyError:
            raise ConfigError(DVC_YAML, where, f"undefined variable '${{{inner}}}'") from None

    def _text(self, inner: str, scope: Scope, where: str, in_cmd: bool) -> str:
        try:
            return to_str(self.value(inner, scope, where), in_cmd, self.parsing)
        except (ValueError, TypeError) as exc:
            raise ConfigError(DVC_YAML, where, f"'${{{inner}}}': {exc}") from None

    def resolve(self, text: Any, scope: Scope, where: str, in_cmd: bool = False) -> Any:
        """``text`` as DVC resolves it; a lone ``${x}`` keeps the value's type."""
        if not isinstance(text, str):
            return text
        matches = list(_KEYCRE.finditer(text))
        if len(matches) == 1 and matches[0].group(0) == text:
            return self.value(matches[0].group("inner"), scope, where)
        out, pos = [], 0
        for m in matches:
            out.append(text[pos:m.start()] + self._text(m.group("inner"), scope, where, in_cmd))
            pos = m.end()
        return ("".join(out) + text[pos:]).replace("\\${", "${")

    def translate(self, text: str, scope: Scope, where: str, in_cmd: bool = False) -> str:
        """``text`` as pivotbuild template text that renders to what DVC resolves it to."""
        out: list[str] = []
        literal = ""  # pending literal text, escaped only when a kept reference follows
        pos = 0
        for m in [*_KEYCRE.finditer(text), None]:
            end = len(text) if m is None else m.start()
            literal += text[pos:end].replace("\\${", "${")
            if m is None:
                break
            pos = m.end()
            inner = m.group("inner")
            # After a literal "$", pivotbuild would read "$${" as an escape: write it out.
            kept = None if literal.endswith("$") else self._pivot_ref(inner, scope, where)
            if kept is not None:
                out.append(literal.replace("${", "$${") + "${" + kept + "}")
                literal = ""
                continue
            head = inner.replace("[", ".").split(".")[0].strip()
            source = scope.source.get(head, "")
            if source == "item" and scope.mode != "plain":
                raise NeedsUnroll
            literal += self._text(inner, scope, where, in_cmd)
            if source.startswith(_FROM_FILE):
                self.lossy.add(f"${{{inner}}}")
        out.append(literal.replace("${", "$${"))
        return "".join(out)

    def _pivot_ref(self, inner: str, scope: Scope, where: str) -> str | None:
        """How pivotbuild spells the reference, or None when it must be written out."""
        parts = inner.split(".")
        if not all(_PIVOT_PART.fullmatch(p) for p in parts):
            return None  # list indexes, spaces, characters pivotbuild names do not allow
        source = scope.source.get(parts[0])
        if source == "item":
            if scope.mode == "foreach" and inner == "item":
                return "item"
            if scope.mode == "keys" and inner == "key":
                return "item"  # a dict foreach written as a foreach over its keys
            if scope.mode == "matrix" and len(parts) == 2 and parts[0] == "item" and (
                    parts[1] in scope.axes):
                return inner
            return None
        value = self.value(inner, scope, where)
        if isinstance(value, (dict, list)) or value is None:
            return None
        if source == "params":
            return "params." + inner
        if source == "vars" or (source or "").startswith("file:"):
            held = parts[0] in self.pivot_vars and parts[0] not in ("item", "params")
            return inner if held and tomlwrite.representable(self.pivot_vars[parts[0]]) else None
        return None
