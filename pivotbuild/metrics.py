"""Metrics and params files: load, flatten, show and diff them, as text, Markdown and JSON.

The CLI reads the bytes (the workspace from disk, a revision through ``gitrev``) and calls:

- ``show({path: bytes}) -> {"metrics.json": {"acc": 0.9, "nested.loss": 0.5}}``
  (SPEC §11), rendered by ``render_show_text`` / ``render_show_md``;
- ``diff(old_doc, new_doc)`` -> ``{"metrics.json": {"acc": {"old": 0.8, "new": 0.9,
  "diff": 0.1}}}``, rendered by ``render_diff_text`` / ``render_diff_md``;
- ``load_params`` + ``params_diff`` for ``params diff``, keyed by params file, same shape.

Loading. A file is parsed by its extension: ``.json``; ``.yaml``/``.yml`` (PyYAML's C safe
loader); ``.toml``; any other extension as YAML, which also reads JSON. Nested objects are
flattened with dots (``{"a": {"b": 1}}`` -> ``a.b``), lists by index (``a.0``); empty objects and
lists add no key. Numbers, booleans, strings and null are kept as values; a date or time (TOML,
YAML) becomes its ISO text; a non-finite float (NaN, Infinity, which JSON and YAML allow)
becomes the string ``"nan"``, ``"inf"`` or ``"-inf"``, so every document is valid JSON and such
a value is compared, never subtracted. A file that cannot be parsed, or whose top level is
not an object or a list, is an ``OperationError`` (exit 1) naming the file and the revision.

Diffing. Keys are compared per file; a key (or a whole file) on one side only has ``null``
on the other. ``diff`` is present only when both values are numbers (booleans are not
numbers); it is computed on the values' shortest decimal forms (``repr``), exactly, and then
turned into the nearest float, so 0.9 - 0.8 is ``0.1`` (not 0.09999999999999998), as a person
subtracting the printed numbers would get; two integers give an integer. By default only keys
whose value changed (or that one side lacks) are listed, as ``dvc metrics diff`` does;
``all=True`` lists every key, unchanged ones with ``diff`` 0.

Params. ``load_params`` reads the dotted keys a pipeline uses from one params file (TOML,
YAML or JSON by extension); a key naming a table yields the whole table, a value is not
flattened (a list param stays one value). ``param_keys_from_locks`` gathers the keys the locks
record (``FILE:key`` for a file other than the default one); ``param_keys_from_lock_files``
does the same from lock files' bytes.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from pivotbuild import tomlread
from pivotbuild.errors import OperationError

__all__ = [
    "MetricsError", "diff", "flatten", "format_value", "load", "load_params",
    "param_keys_from_lock_files", "param_keys_from_locks", "params_diff", "parse_document",
    "plain", "render_diff_md", "render_diff_text", "render_show_md", "render_show_text",
    "select_params", "show", "yaml_loader",
]

Scalar = int | float | bool | str | None
MISSING = "-"  # how the tables show a value one side lacks


class MetricsError(OperationError):
    """A metrics or params file that cannot be read (exit 1); the message names it."""


def _where(path: str, rev: str | None) -> str:
    return f"{path} at {rev}" if rev else path


# ---- parsing --------------------------------------------------------------------------------


def _format_of(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    return {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml"}.get(ext, "yaml")


def parse_document(path: str, data: bytes, rev: str | None = None) -> Any:
    """The parsed content of a JSON, YAML or TOML file (by ``path``'s extension).

    ``rev`` (e.g. ``"HEAD (3f2a9c1)"``) only names the revision in error messages."""
    where = _where(path, rev)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MetricsError(f"{where}: not UTF-8 text") from None
    kind = _format_of(path)
    try:
        if kind == "json":
            return json.loads(text)
        if kind == "toml":
            return tomlread.loads(text)
        return _load_yaml(text)
    except json.JSONDecodeError as exc:
        raise MetricsError(f"{where}: not valid JSON: {exc.msg} at line {exc.lineno} "
                           f"column {exc.colno}") from None
    except tomlread.TOMLDecodeError as exc:
        raise MetricsError(f"{where}: not valid TOML: {_one_line(str(exc))}") from None
    except RecursionError:
        raise MetricsError(f"{where}: nested too deeply to read") from None
    except _YamlProblem as exc:
        raise MetricsError(f"{where}: not valid YAML: {exc}") from None


class _YamlProblem(Exception):
    pass


_LOADER: list[Any] = []


def yaml_loader() -> Any:
    """PyYAML's safe loader (C if built), with ``1e-3`` resolved as a float (YAML 1.2), as
    pivot.toml's params are read (config_schema uses this one): a params value compared
    across revisions is the value the stage got."""
    if not _LOADER:
        import re

        import yaml  # imported here: only YAML files pay for it

        base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        loader: Any = type("ParamsLoader", (base,), {})
        # add_implicit_resolver copies the inherited table first: base loaders are untouched.
        loader.add_implicit_resolver(
            "tag:yaml.org,2002:float",
            re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
            list("-+0123456789"))
        _LOADER.append(loader)
    return _LOADER[0]


def _load_yaml(text: str) -> Any:
    import yaml

    loader = yaml_loader()
    try:
        return yaml.load(text, Loader=loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise _YamlProblem(f"{exc.problem or exc.context or 'malformed'}{at}") from None
    except yaml.YAMLError as exc:
        raise _YamlProblem(_one_line(str(exc))) from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _scalar(value: Any) -> Scalar:
    """A JSON-safe scalar for a parsed leaf (see the module docstring)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, (_dt.date, _dt.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def flatten(value: Any, prefix: str = "") -> dict[str, Scalar]:
    """``{"a": {"b": 1}, "l": [2]}`` -> ``{"a.b": 1, "l.0": 2}`` (keys in file order)."""
    out: dict[str, Scalar] = {}
    stack: list[tuple[str, Any]] = [(prefix, value)]
    # Iterative, depth first, children in file order: a deep file cannot exhaust the stack.
    while stack:
        key, item = stack.pop()
        if isinstance(item, Mapping):
            children = [(f"{key}.{k}" if key else str(k), v) for k, v in item.items()]
        elif isinstance(item, (list, tuple, set, frozenset)):
            children = [(f"{key}.{i}" if key else str(i), v) for i, v in enumerate(item)]
        else:
            out[key] = _scalar(item)
            continue
        stack.extend(reversed(children))
    return out


def load(path: str, data: bytes, rev: str | None = None) -> dict[str, Scalar]:
    """One metrics file's flattened ``dotted.key -> value``."""
    parsed = parse_document(path, data, rev)
    if not isinstance(parsed, (dict, list)):
        what = "empty" if parsed is None else f"a single {type(parsed).__name__} value"
        raise MetricsError(f"{_where(path, rev)}: expected an object of metrics, the file is "
                           f"{what}")
    return flatten(parsed)


def show(files: Mapping[str, bytes | None], rev: str | None = None
         ) -> dict[str, dict[str, Scalar]]:
    """``{path: {dotted.key: value}}`` for every metrics file, in the order given.

    A None content (the file does not exist) is an error naming it; use ``diff`` on documents
    where a missing side is expected."""
    doc: dict[str, dict[str, Scalar]] = {}
    for path, data in files.items():
        if data is None:
            where = f"in revision {rev}" if rev else "in the workspace"
            raise MetricsError(f"{path}: metrics file not found {where} (has its stage run?)")
        doc[path] = load(path, data, rev)
    return doc


# ---- diffing --------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _difference(old: float, new: float) -> int | float | None:
    if isinstance(old, int) and isinstance(new, int):
        return new - old
    try:
        exact = Decimal(repr(new)) - Decimal(repr(old))
    except InvalidOperation:
        return None
    result = float(exact)
    return result if math.isfinite(result) else None


def _compare(old: Any, new: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"old": old, "new": new}
    if _is_number(old) and _is_number(new):
        change = _difference(old, new)
        if change is not None:
            entry["diff"] = change
    return entry


def _same(old: Any, new: Any) -> bool:
    # 1 and 1.0 are the same number; True and 1 are not the same value.
    return type(old) is type(new) and old == new or (
        _is_number(old) and _is_number(new) and old == new)


def diff(old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]],
         all: bool = False) -> dict[str, dict[str, dict[str, Any]]]:
    """Compare two ``show`` documents (old: a revision, new: usually the workspace).

    Files and keys come in the new document's order, then those only the old one has."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for path in _union(new, old):
        old_keys, new_keys = old.get(path, {}), new.get(path, {})
        entries: dict[str, dict[str, Any]] = {}
        for key in _union(new_keys, old_keys):
            old_value, new_value = old_keys.get(key), new_keys.get(key)
            present = (key in old_keys, key in new_keys)
            if not all and present == (True, True) and _same(old_value, new_value):
                continue
            entries[key] = _compare(old_value, new_value)
        if entries:
            out[path] = entries
    return out


def _union(first: Iterable[str], second: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))


# ---- params ---------------------------------------------------------------------------------


def load_params(path: str, data: bytes, keys: Iterable[str] | None = None,
                rev: str | None = None) -> dict[str, Any]:
    """``{dotted.key: value}`` of one params file: the given keys (those the file lacks are
    left out), or with ``keys=None`` every leaf, flattened as metrics are."""
    parsed = parse_document(path, data, rev)
    if parsed is None:
        parsed = {}
    if not isinstance(parsed, dict):
        raise MetricsError(f"{_where(path, rev)}: expected a table of params at the top level")
    if keys is None:
        return flatten(parsed)
    return select_params(parsed, keys)


def select_params(parsed: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """``{dotted.key: value}`` for the keys an already parsed params file has (the
    workspace's params, which config.py has parsed anyway, need no second parse)."""
    values: dict[str, Any] = {}
    for key in keys:
        found, value = _lookup(parsed, key)
        if found:
            values[key] = plain(value)
    return values


def _lookup(data: Any, dotted: str) -> tuple[bool, Any]:
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def plain(value: Any) -> Any:
    """A params value made JSON-safe all the way down (tables and lists kept whole)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return _scalar(value)


def param_keys_from_locks(params: Iterable[Mapping[str, Any]], default_file: str
                          ) -> dict[str, set[str]]:
    """``{params file: {dotted keys}}`` from locks' ``params`` mappings, whose keys are
    ``dotted.key`` (the default file) or ``FILE:dotted.key``."""
    keys: dict[str, set[str]] = {}
    for mapping in params:
        for given in mapping:
            name, sep, key = given.rpartition(":")
            keys.setdefault(name if sep else default_file, set()).add(key)
    return keys


def param_keys_from_lock_files(files: Mapping[str, bytes | None], default_file: str
                               ) -> dict[str, set[str]]:
    """``param_keys_from_locks`` straight from lock files' bytes (e.g. a revision's, read by
    ``gitrev``): only each lock's ``params`` object is read, without the full validation of
    ``pivotbuild.lock`` (a thousand locks in a fifth of the time). A lock that is not JSON or
    has no ``params`` object adds no key: the lock module reports it where it matters."""
    found: list[Mapping[str, Any]] = []
    for data in files.values():
        try:
            doc = json.loads(data) if data else None
        except (ValueError, RecursionError):
            continue
        params = doc.get("params") if isinstance(doc, dict) else None
        if isinstance(params, dict):
            found.append(params)
    return param_keys_from_locks(found, default_file)


def params_diff(old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]],
                all: bool = False) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"params.toml": {"train.lr": {"old": 0.1, "new": 0.2, "diff": 0.1}}}`` from two
    ``{params file: {key: value}}`` mappings (``load_params`` per file); same rules as
    ``diff``."""
    return diff(old, new, all=all)


# ---- rendering ------------------------------------------------------------------------------


def format_value(value: Any, precision: int | None = None) -> str:
    """How a value reads in a table: shortest float form (or ``precision`` significant
    digits), ``true``/``false``, JSON for a table or list, ``-`` for a missing value."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.{precision}g}" if precision is not None else repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(", ", ": "))
    return str(value)


def _format_change(entry: Mapping[str, Any], precision: int | None) -> str:
    if "diff" not in entry:
        return ""
    change = entry["diff"]
    text = format_value(change, precision)
    return text if change == 0 or text.startswith("-") else f"+{text}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ") or " "


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(c) for c in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _show_rows(doc: Mapping[str, Mapping[str, Any]], precision: int | None) -> list[list[str]]:
    return [[path, key, format_value(value, precision)]
            for path, keys in doc.items() for key, value in keys.items()]


def render_show_text(doc: Mapping[str, Mapping[str, Any]], precision: int | None = None) -> str:
    """Per file: its path, then ``  dotted.key  value`` lines, keys aligned."""
    if not doc:
        return "no metrics\n"
    blocks = []
    for path, keys in doc.items():
        width = max((len(k) for k in keys), default=0)
        lines = [path] + [f"  {k.ljust(width)}  {format_value(v, precision)}"
                          for k, v in keys.items()]
        blocks.append("\n".join(lines) + "\n")
    return "".join(blocks)


def render_show_md(doc: Mapping[str, Mapping[str, Any]], precision: int | None = None) -> str:
    """A Markdown table ``| Path | Metric | Value |``."""
    return _md_table(["Path", "Metric", "Value"], _show_rows(doc, precision))


def _diff_rows(doc: Mapping[str, Mapping[str, Mapping[str, Any]]], precision: int | None
               ) -> list[list[str]]:
    return [[path, key, format_value(e["old"], precision), format_value(e["new"], precision),
             _format_change(e, precision)]
            for path, keys in doc.items() for key, e in keys.items()]


def render_diff_text(doc: Mapping[str, Mapping[str, Mapping[str, Any]]], old_label: str = "HEAD",
                     new_label: str = "workspace", kind: str = "Metric",
                     precision: int | None = None) -> str:
    """An aligned table ``Path  Metric  <old>  <new>  Change`` (``kind="Param"`` for params);
    one line saying so when nothing changed."""
    if not doc:
        return f"no {kind.lower()} changed between {old_label} and {new_label}\n"
    header = ["Path", kind, old_label, new_label, "Change"]
    return _table(header, _diff_rows(doc, precision))


def render_diff_md(doc: Mapping[str, Mapping[str, Mapping[str, Any]]], old_label: str = "HEAD",
                   new_label: str = "workspace", kind: str = "Metric",
                   precision: int | None = None) -> str:
    """The same as a Markdown table, for a pull request (an empty table when nothing
    changed)."""
    header = ["Path", kind, old_label, new_label, "Change"]
    return _md_table(header, _diff_rows(doc, precision))
