"""Reading pivot.toml, config.local.toml and params files (TOML, YAML, JSON) into plain data.

``read_toml`` and ``read_params`` (TOML, YAML, JSON by extension) parse a file the same way:
every syntax, encoding or I/O problem is a ConfigError naming the file (and the line where the
parser knows it). YAML is read with PyYAML's C safe loader (libyaml, fast) when PyYAML was
built with it, else its pure-Python safe loader: both build only plain data, never objects.
One YAML 1.2 rule is added to PyYAML's YAML 1.1 resolver: ``1e-3`` (an exponent without a dot)
is a float, as DVC (ruamel.yaml) and JSON read it, not the string PyYAML would make of it.
Nothing here imports pydantic: the document is checked by config_check.py.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Any

from pivotbuild import tomlread
from pivotbuild.errors import ConfigError
from pivotbuild.template import toml_type

_BOM = "\ufeff"
_BOM_PROBLEM = "starts with a byte order mark (BOM), which TOML and JSON do not allow: save " \
    "the file as UTF-8 without BOM"


def read_toml(path: Path, label: str) -> dict[str, Any]:
    """Parse one TOML file; syntax, encoding and I/O problems become ConfigError(label, ...)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(label, "", f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(label, "", f"not valid UTF-8 (byte {exc.start})") from None
    if text.startswith(_BOM):
        raise ConfigError(label, "line 1", _BOM_PROBLEM)
    try:
        return tomlread.loads(text)
    except RecursionError:
        raise ConfigError(label, "", "values are nested too deeply") from None
    except tomlread.TOMLDecodeError as exc:
        # Python 3.11's TOMLDecodeError only carries its position inside the message text.
        message = str(exc)
        match = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message, re.DOTALL)
        if match:
            raise ConfigError(label, f"line {match.group(2)}",
                              f"{match.group(1)} (column {match.group(3)})") from None
        match = re.fullmatch(r"(.*) \(at end of document\)", message, re.DOTALL)
        if match:
            raise ConfigError(label, "end of file", match.group(1)) from None
        raise ConfigError(label, "", message) from None


def unrecordable(value: Any, where: str) -> str | None:
    """The first TOML date, time or datetime in a params value (the lock cannot hold one)."""
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return f"{where!r} is a {toml_type(value)}"
    items = (value.items() if isinstance(value, dict) else
             enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        found = unrecordable(item, f"{where}[{key}]" if isinstance(key, int) else
                              f"{where}.{key}")
        if found:
            return found
    return None


PARAMS_EXTENSIONS = (".toml", ".yaml", ".yml", ".json")


def _yaml_loader() -> Any:
    """PyYAML's safe loader (C if built), with ``1e-3`` resolved as a float (YAML 1.2): the
    one ``metrics`` also reads params and metrics files with (``params diff``)."""
    from pivotbuild.metrics import yaml_loader

    return yaml_loader()


def _refuse_cycles(data: Any, label: str) -> None:
    """ConfigError(label) if a YAML value holds itself (``a: &x [*x]``): nothing could use it.
    Each shared value (an alias used twice) is walked once."""
    done: set[int] = set()
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        value, leaving = stack.pop()
        if leaving:
            on_path.discard(id(value))
            done.add(id(value))
            continue
        if not isinstance(value, (dict, list)) or id(value) in done:
            continue
        if id(value) in on_path:
            raise ConfigError(label, "", "a value holds itself (a recursive YAML alias)")
        on_path.add(id(value))
        stack.append((value, True))
        stack.extend((child, False) for child in
                     (value.values() if isinstance(value, dict) else value))


def read_params(root: Path, rel: str, label: str) -> dict[str, Any]:
    """Parse one params file by its extension (TOML, YAML, JSON); its top level must be a
    table. Problems are ConfigError(label, ...)."""
    path = root / rel
    if rel.endswith(".toml"):
        return read_toml(path, label)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(label, "", f"cannot read {rel}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(label, "", f"not valid UTF-8 (byte {exc.start})") from None
    if rel.endswith(".json") and text.startswith(_BOM):
        raise ConfigError(label, "line 1", _BOM_PROBLEM)
    if rel.endswith(".json"):
        import json

        try:
            data = json.loads(text)
        except RecursionError:
            raise ConfigError(label, "", "values are nested too deeply") from None
        except ValueError as exc:
            raise ConfigError(label, "", f"invalid JSON: {str(exc).splitlines()[0]}") from None
    else:
        import yaml

        try:
            data = yaml.load(text, Loader=_yaml_loader())
        except RecursionError:
            raise ConfigError(label, "", "values are nested too deeply") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(label, where, f"invalid YAML: {problem}") from None
        if data is None:
            data = {}
        _refuse_cycles(data, label)
    if not isinstance(data, dict):
        raise ConfigError(label, "", f"expected a table (mapping) at the top, got "
                          f"{toml_type(data)}")
    return data


__all__ = ["PARAMS_EXTENSIONS", "read_params", "read_toml", "unrecordable"]
