"""Fuzzing pivot.toml and params.toml: every document either loads, with a graph,
or fails with a one-line ConfigError/UsageError (exit 2). Never anything else.

The long run: PIVOTBUILD_FUZZ_EXAMPLES=10000 python -m pytest tests/reliability -k fuzz
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pivotbuild import dag
from pivotbuild.config import load_project
from pivotbuild.errors import PivotError, UsageError

EXAMPLES = int(os.environ.get("PIVOTBUILD_FUZZ_EXAMPLES", "300"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

VALID = """
[project]
jobs = 2
[vars]
d = "data"
[stages.a]
cmd = "echo ${d} > ${d}/a"
outs = ["${d}/a"]
[stages.b]
cmd = ["cat data/a > b", "echo ${params.x.y}"]
deps = ["data/a"]
params = ["x.y"]
outs = [{path = "b", cache = false}]
[stages.m]
matrix = {v = [1, 2]}
cmd = "echo ${item.v} > m${item.v}"
outs = ["m${item.v}"]
"""
PARAMS = "[x]\ny = 1\n"

NASTY = st.sampled_from([
    "", " ", "\n", "\\", '"', "'", "${", "${x}", "$${", "}", "[", "]", "=", ".", "..", "/",
    "../", "/etc", "\x00", "\x07", "\u202e", "\u00e9", "é/../..", "stages", "[stages.x]",
    "cmd", "deps", "outs", "@", "-", "1e999", "9" * 40, "true", "nan", "inf", "{", "#",
    "\ud7ff", "a" * 300,
])


def _check(pivot: str, params: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pivot.toml").write_text(pivot, encoding="utf-8", errors="surrogatepass")
        if params is not None:
            (root / "params.toml").write_text(params, encoding="utf-8",
                                              errors="surrogatepass")
        try:
            project = load_project(root)
            graph = dag.build_graph(project)
            dag.select(graph, [])
        except UsageError as exc:
            message = str(exc)
            assert exc.exit_code == 2
            assert message and "\n" not in message, repr(message)
        except PivotError as exc:  # pragma: no cover - a wrong error kind
            raise AssertionError(f"config problem reported with exit {exc.exit_code}") from exc
        assert not (root / ".pivotbuild").exists(), "loading wrote something"


@SETTINGS
@given(cut=st.integers(0, len(VALID)), insert=NASTY, params_cut=st.integers(0, len(PARAMS)),
       params_insert=NASTY)
def test_fuzz_mutated_valid_documents(cut, insert, params_cut, params_insert):
    _check(VALID[:cut] + insert + VALID[cut:],
           PARAMS[:params_cut] + params_insert + PARAMS[params_cut:])


TOML_SCALAR = st.one_of(
    st.booleans(), st.integers(-(2 ** 63), 2 ** 63 - 1), st.floats(allow_nan=False),
    st.text(max_size=20),
)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        text = repr(value)
        return {"inf": "inf", "-inf": "-inf"}.get(text, text)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        escaped = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped
                          if ord(c) < 0xD800 or ord(c) > 0xDFFF)
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items()) + "}"
    raise TypeError(value)


VALUES = st.recursive(TOML_SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
KEYS = st.sampled_from(["cmd", "deps", "outs", "params", "wdir", "desc", "always_changed",
                        "frozen", "matrix", "foreach", "bogus", "path", "cache", "persist"])


@SETTINGS
@given(stages=st.dictionaries(
    st.text(min_size=1, max_size=12),
    st.dictionaries(KEYS, VALUES, max_size=6), max_size=4),
    project=st.dictionaries(st.sampled_from(["jobs", "checkout", "cache_dir", "name",
                                             "default_remote", "x"]), VALUES, max_size=3))
def test_fuzz_structured_documents(stages, project):
    lines = ["[project]"] + [f"{k} = {_toml_value(v)}" for k, v in project.items()]
    for name, table in stages.items():
        lines.append(f"[stages.{_toml_value(name)}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    _check("\n".join(lines) + "\n", PARAMS)


@SETTINGS
@given(depth=st.integers(1, 2000))
def test_fuzz_deep_nesting(depth):
    _check("[vars]\nx = " + "[" * depth + "1" + "]" * depth + "\n", None)
    _check(VALID, "a = " + "{b = " * depth + "1" + "}" * depth + "\n")
