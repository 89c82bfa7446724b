"""``${...}`` templating and the expansion of a stage table into its instances (matrix, foreach).

pivot.toml's strings may name values: ``${name}`` (a ``[vars]`` entry), ``${params.train.lr}``
(params.toml), ``${item}`` / ``${item.axis}`` (the current foreach value / matrix combination).
Dotted names walk into tables; only strings, numbers, booleans (written the TOML way:
``true``) and dates can be interpolated; ``$${`` is a literal ``${``. ``render`` raises
``TemplateProblem`` (the problem without file or key) and config.py locates it.

``instances`` turns one stage table's ``matrix`` (the product of its axes, in the order
written) or ``foreach`` (one value each) into ``(stage name, item)`` pairs: the instance of
base ``train`` for ``{model = "cnn", lr = 0.1}`` is ``train@cnn-0.1``. A value may also be a
glob match (a table with ``path``, ``name``, ``stem``, ``dir``, ``key``: config_build.py walks
the glob with globs.py), named by its ``key``: ``cc@net.io``. A generated name must be usable
as a lock file's name; problems are ConfigErrors pointing at the value that caused them.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import re
from collections.abc import Mapping
from typing import Any

from pivotbuild.errors import BARE_KEY_RE, ConfigError, key_path
from pivotbuild.lock import stage_name_size_problem
from pivotbuild.paths import PROJECT_FILE

# One regex scans a template left to right: the ``$${`` escape, a ``${...}`` reference, or an
# unterminated ``${``; anything else is copied through untouched.
_TEMPLATE_RE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
DOTTED_KEY_RE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


class TemplateProblem(ValueError):
    """A ``${...}`` could not be resolved; ``str()`` is the problem, without file or key."""


def toml_type(value: Any) -> str:
    """The TOML name of a parsed value's type, for error messages."""
    names: list[tuple[type, str]] = [
        (bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"),
        (list, "array"), (dict, "table"), (_dt.datetime, "datetime"), (_dt.date, "date"),
        (_dt.time, "time"),
    ]
    for kind, name in names:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _render_scalar(value: Any, ref: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # TOML spelling, not Python's True/False
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    raise TemplateProblem(f"cannot interpolate {toml_type(value)} '{ref}' into a string "
                          "(only strings, numbers and booleans can be)")


def lookup(context: Mapping[str, Any], expr: str) -> Any:
    """Walk a dotted name through nested tables; KeyError if any step is missing."""
    node: Any = context
    for part in expr.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(expr)
        node = node[part]
    return node


def render(template: str, context: Mapping[str, Any]) -> str:
    """Substitute every ``${name}`` in ``template`` from ``context``; ``$${`` gives ``${``.

    ``context`` maps the top-level names (vars, ``params``, ``item``) to values; dotted names
    walk into tables. Raises ``TemplateProblem`` for undefined, malformed or non-scalar refs.
    """
    if "$" not in template:  # the common case: nothing to do
        return template

    def substitute(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "$${":
            return "${"
        expr = match.group(1)
        if expr is None:
            raise TemplateProblem("unterminated '${' (write '$${' for a literal '${')")
        expr = expr.strip()
        ref = "${" + expr + "}"
        if not DOTTED_KEY_RE.fullmatch(expr):
            raise TemplateProblem(f"malformed variable '{ref}' (write '$${{' for a literal "
                                  "'${')")
        try:
            value = lookup(context, expr)
        except KeyError:
            raise TemplateProblem(f"undefined variable '{ref}'") from None
        return _render_scalar(value, ref)

    return _TEMPLATE_RE.sub(substitute, template)


# ---- matrix / foreach expansion -------------------------------------------------------------


def _name_problem(name: str) -> str | None:
    """Why a generated stage name cannot be used (it names a lock file), or None."""
    if "/" in name:
        return f"generated stage name {name!r} contains '/'"
    if any(ch.isspace() for ch in name):
        return f"generated stage name {name!r} contains whitespace"
    if any(not ch.isprintable() for ch in name):
        return f"generated stage name {name!r} contains a control character"
    if name.startswith("."):
        return f"generated stage name {name!r} starts with '.'"
    return stage_name_size_problem(name)


def _name_part(value: Any) -> str:
    if isinstance(value, Mapping):  # a glob match: its key names it (SPEC §9)
        return str(value["key"])
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def instances(base: str, matrix: Mapping[str, list[Any]] | None,
              foreach: list[Any] | None) -> list[tuple[str, Any]]:
    """The (stage name, item) pairs the stage table ``base`` expands to, in expansion order:
    ``[(base, None)]`` for a plain table."""
    where = ("stages", base)
    if matrix is not None and foreach is not None:
        raise ConfigError(PROJECT_FILE, key_path(*where),
                          "'matrix' and 'foreach' cannot both be set")
    if foreach is not None:
        if not foreach:
            raise ConfigError(PROJECT_FILE, key_path(*where, "foreach"), "must not be empty")
        axes: dict[str, list[Any]] = {"": list(foreach)}
    elif matrix is not None:
        if not matrix:
            raise ConfigError(PROJECT_FILE, key_path(*where, "matrix"),
                              "must have at least one axis")
        for axis, values in matrix.items():
            if not BARE_KEY_RE.fullmatch(axis):
                raise ConfigError(PROJECT_FILE, key_path(*where, "matrix", axis),
                                  "axis names may only contain letters, digits, '_' and '-' "
                                  "(so that ${item.<axis>} can name them)")
            if not values:
                raise ConfigError(PROJECT_FILE, key_path(*where, "matrix", axis),
                                  "must not be empty")
        axes = dict(matrix)
    else:
        return [(base, None)]

    names = list(axes)
    seen: set[str] = set()
    result: list[tuple[str, Any]] = []
    # product() over index tuples lets an error point at the exact value that caused it.
    for combo in itertools.product(*(range(len(axes[a])) for a in names)):
        values = [axes[a][i] for a, i in zip(names, combo, strict=True)]
        name = f"{base}@" + "-".join(_name_part(v) for v in values)
        problem = _name_problem(name)
        if problem is not None:
            axis_i = next((k for k, v in enumerate(values) if _name_problem(_name_part(v))),
                          0)
            axis = names[axis_i]
            index: str | int = ("glob" if isinstance(values[axis_i], Mapping)
                                else combo[axis_i])
            key = (key_path(*where, "foreach", index) if axis == "" else
                   key_path(*where, "matrix", axis, index))
            raise ConfigError(PROJECT_FILE, key, problem)
        if name in seen:
            key = key_path(*where, "foreach" if "" in axes else "matrix")
            raise ConfigError(PROJECT_FILE, key, f"generates the stage name {name!r} more "
                              "than once")
        seen.add(name)
        item = values[0] if "" in axes else dict(zip(names, values, strict=True))
        result.append((name, item))
    return result


__all__ = ["DOTTED_KEY_RE", "TemplateProblem", "instances", "lookup", "render", "toml_type"]
