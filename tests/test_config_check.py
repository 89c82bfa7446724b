"""config_check's hand-written acceptor against config_schema's pydantic models.

A document the acceptor takes must be one the models take, with the same values; one the
models refuse must be refused by the acceptor too (and then worded by the models). The two
must not drift apart: same fields, same defaults, same choices.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pivotbuild import config_check, config_schema
from pivotbuild.config import load_project
from pivotbuild.config_check import (
    MODEL_SPECS,
    ExecutorSpec,
    FileSpec,
    GlobSpec,
    LocalExecutorSpec,
    LocalFileSpec,
    LocalProjectSpec,
    OutSpec,
    ProjectSpec,
    StageSpec,
    accept_file,
    accept_local,
    check_file,
    check_local,
    from_model,
)
from pivotbuild.errors import ConfigError
from pivotbuild.paths import CHECKOUT_METHODS

# ---- one source of truth: the models and their twins do not drift -------------------------


# Each model: the smallest document it takes, where that document sits in a file (local: a
# config.local.toml), and how to reach the model's twin in the file's checked values.
MINIMAL: dict[str, tuple[Any, bool, Any, Any]] = {
    "RawFile": ({}, False, lambda d: d, lambda f: f),
    "RawProject": ({}, False, lambda d: {"project": d}, lambda f: f.project),
    "RawExecutor": ({}, False, lambda d: {"executor": d}, lambda f: f.executor),
    "RawRemote": ({"url": "u"}, False, lambda d: {"remotes": {"r": d}},
                  lambda f: f.remotes["r"]),
    "RawStage": ({"cmd": "x"}, False, lambda d: {"stages": {"s": d}}, lambda f: f.stages["s"]),
    "RawOut": ({"path": "o"}, False, lambda d: {"stages": {"s": {"cmd": "x", "outs": [d]}}},
               lambda f: f.stages["s"].outs[0]),
    "RawGlob": ({"glob": "*"}, False, lambda d: {"stages": {"s": {"cmd": "x", "foreach": d}}},
                lambda f: f.stages["s"].foreach),
    "RawLocalFile": ({}, True, lambda d: d, lambda f: f),
    "RawLocalProject": ({}, True, lambda d: {"project": d}, lambda f: f.project),
    "RawLocalExecutor": ({}, True, lambda d: {"executor": d}, lambda f: f.executor),
    "RawLocalRemote": ({}, True, lambda d: {"remotes": {"r": d}}, lambda f: f.remotes["r"]),
}


@pytest.mark.parametrize("model_name", sorted(MODEL_SPECS))
def test_each_model_and_its_twin_have_the_same_fields_and_defaults(model_name: str) -> None:
    """Same field names in the same order; the twin's class defaults (scalars only) and the
    defaults the checks fill (lists and tables too) are the model's."""
    model = getattr(config_schema, model_name)
    spec = MODEL_SPECS[model_name]
    assert list(spec._fields) == list(model.model_fields)
    for name, default in spec._field_defaults.items():
        assert not model.model_fields[name].is_required(), (model_name, name)
        assert repr(default) == repr(model.model_fields[name].get_default()), (model_name, name)
    minimal, local, place, reach = MINIMAL[model_name]
    filled = reach((accept_local if local else accept_file)(place(minimal)))
    assert type(filled) is spec
    by_model = from_model(model.model_validate(minimal))
    assert repr(filled) == repr(by_model)
    for name, info in model.model_fields.items():
        if info.is_required():
            assert name in minimal, (model_name, name)
        else:
            default = from_model(info.get_default(call_default_factory=True))
            assert repr(getattr(filled, name)) == repr(default), (model_name, name)


def test_every_minimal_document_is_minimal() -> None:
    assert set(MINIMAL) == set(MODEL_SPECS)
    for name, (minimal, _, _, _) in MINIMAL.items():
        model = getattr(config_schema, name)
        assert set(minimal) == {n for n, info in model.model_fields.items()
                                if info.is_required()}


def test_every_model_has_a_twin() -> None:
    models = {name for name in dir(config_schema)
              if isinstance(getattr(config_schema, name), type)
              and issubclass(getattr(config_schema, name), config_schema.BaseModel)
              and getattr(config_schema, name) is not config_schema.BaseModel}
    assert models == set(MODEL_SPECS)


def _enums(schema: Any, found: dict[str, list[Any]], where: str = "") -> dict[str, list[Any]]:
    if isinstance(schema, dict):
        if "enum" in schema:
            found[where] = schema["enum"]
        for key, value in schema.items():
            _enums(value, found, f"{where}.{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            _enums(value, found, f"{where}[{i}]")
    return found


# A document holding one value at each place the models offer a choice.
CHOICE_DOCUMENTS = [
    lambda v: {"stages": {"s": {"cmd": "x", "discover": [v]}}},
    lambda v: {"project": {"checkout": [v]}},
    lambda v: {"executor": {"kind": v}},
    lambda v: {"executor": {"cluster": v}},
    lambda v: {"executor": {"transfer": v}},
]


def test_the_choices_agree() -> None:
    """Every value the models' JSON Schema lists (what ``pivotbuild schema`` prints) is
    accepted by both, and values beside them by neither."""
    listed = {value for values in _enums(config_schema.RawFile.model_json_schema(), {}).values()
              for value in values}
    listed |= set(CHECKOUT_METHODS)
    assert {"python", "reflink", "local", "dask", "remote", "shared"} <= listed
    values = sorted(listed) + ["other", "Local", ""]
    for build in CHOICE_DOCUMENTS:
        outcomes = [assert_agree(build(value))[0] for value in values]
        assert "fast" in outcomes and "refused" in outcomes
    for key in ("kind", "cluster"):
        for value in values:
            assert_agree_local({"executor": {key: value}})


# ---- the two judges ------------------------------------------------------------------------


def _schema_outcome(model: Any, data: Any) -> tuple[str, str]:
    try:
        return ("ok", repr(from_model(config_schema.validate(model, data, "pivot.toml"))))
    except ConfigError as exc:
        return ("refused", str(exc))


def assert_agree(data: Any) -> tuple[str, str]:
    """The acceptor never takes what the models refuse; what it takes has the models'
    values (compared by repr: NaN, -0.0 and True vs 1 stay apart); check_file's outcome is
    the models'."""
    schema = _schema_outcome(config_schema.RawFile, data)
    fast = accept_file(data)
    if fast is not None:
        assert schema == ("ok", repr(fast)), data
    if schema[0] == "refused":
        assert fast is None, data
        with pytest.raises(ConfigError) as info:
            check_file(data, "pivot.toml")
        assert str(info.value) == schema[1]
    else:
        assert repr(check_file(data, "pivot.toml")) == schema[1]
    return (schema[0] if fast is None else "fast", schema[1])


def assert_agree_local(data: Any) -> tuple[str, str]:
    schema = _schema_outcome(config_schema.RawLocalFile, data)
    fast = accept_local(data)
    if fast is not None:
        assert schema == ("ok", repr(fast)), data
    if schema[0] == "refused":
        assert fast is None, data
        with pytest.raises(ConfigError) as info:
            check_local(data, "pivot.toml")
        assert str(info.value) == schema[1]
    else:
        assert repr(check_local(data, "pivot.toml")) == schema[1]
    return (schema[0] if fast is None else "fast", schema[1])


FULL = {
    "project": {"name": "p", "jobs": 3, "checkout": ["copy", "reflink"], "cache_dir": "c",
                "default_remote": "r", "params_file": "p.yaml"},
    "remotes": {"r": {"url": "s3://b/x", "endpoint_url": "http://h", "region": "eu"}},
    "vars": {"a": 1, "t": {"u": [1, "x", datetime.date(2020, 1, 2)]}},
    "stages": {
        "s": {"cmd": "echo", "deps": ["a", "b"], "params": ["x.y"], "wdir": "w", "desc": "d",
              "always_changed": True, "frozen": False, "depfile": "d.d",
              "discover": ["python"], "pool": "gpu",
              "outs": ["o", {"path": "m", "cache": False, "persist": True,
                             "metric": ["m/a.json"], "plot": {"x": "step", "y": ["a"]}},
                       {"path": "n", "metric": True, "plot": ["n/p.csv"]}]},
        "m": {"cmd": ["a", "b"], "matrix": {"v": [1, 2.5, "x", True, -0.0, 2**70],
                                            "g": {"glob": "*.c", "exclude": ["x.c"]}}},
        "f": {"cmd": "x", "foreach": {"glob": "src/*.c"}},
        "e": {"cmd": "x", "foreach": []},
    },
    "pools": {"gpu": 2},
    "executor": {"kind": "dask", "address": "tcp://h:1", "cluster": "local", "workers": 4,
                 "transfer": "shared", "remote": "r", "env": ["A"], "local": ["s"],
                 "retries": 0, "insecure": True},
}
FULL_LOCAL = {
    "project": {"jobs": 1, "checkout": ["hardlink"], "cache_dir": "/c", "default_remote": "r"},
    "remotes": {"r": {"url": "s3://b", "endpoint_url": "http://e", "region": "r",
                      "profile": "p"}, "q": {}},
    "executor": {"kind": "local", "address": "a", "cluster": "local", "workers": 1,
                 "insecure": False},
}


def test_a_full_valid_document_is_taken_by_the_acceptor_with_the_models_values() -> None:
    assert assert_agree(FULL)[0] == "fast"
    assert assert_agree_local(FULL_LOCAL)[0] == "fast"
    spec = accept_file(FULL)
    assert spec is not None
    stage = spec.stages["s"]
    assert stage.cmd == ["echo"] and stage.outs[0] == OutSpec(path="o")
    assert stage.outs[1].plot == {"x": "step", "y": ["a"]}
    assert spec.stages["m"].matrix is not None
    assert spec.stages["m"].matrix["g"] == GlobSpec(glob="*.c", exclude=["x.c"])
    assert spec.stages["f"].foreach == GlobSpec(glob="src/*.c", exclude=[])
    assert math.copysign(1, spec.stages["m"].matrix["v"][4]) == -1  # type: ignore[index]


def test_empty_documents_give_the_defaults() -> None:
    executor = ExecutorSpec(kind="local", address=None, cluster=None, workers=None,
                            transfer="remote", remote=None, env=[], local=[], retries=1,
                            insecure=False)
    assert accept_file({}) == FileSpec(project=ProjectSpec(), remotes={}, vars={}, stages={},
                                       pools={}, executor=executor)
    assert accept_local({}) == LocalFileSpec(project=LocalProjectSpec(), remotes={},
                                             executor=LocalExecutorSpec())
    assert assert_agree({})[0] == "fast" and assert_agree_local({})[0] == "fast"
    stage = StageSpec(cmd=["x"], deps=[], outs=[], params=[], wdir=".", desc=None,
                      always_changed=False, frozen=False, matrix=None, foreach=None,
                      depfile=None, discover=[], pool=None)
    spec = accept_file({"stages": {"s": {"cmd": "x"}}})
    assert spec is not None and spec.stages == {"s": stage}
    two = accept_file({"stages": {"a": {"cmd": "x"}, "b": {"cmd": "y"}}})
    assert two is not None
    first, second = two.stages.values()
    assert first.deps == [] and first.deps is not second.deps  # no shared default list


REFUSED = {
    "unknown top key": {"stage": {}},
    "unknown stage key": {"stages": {"s": {"cmd": "x", "command": "y"}}},
    "no cmd": {"stages": {"s": {"deps": []}}},
    "cmd a number": {"stages": {"s": {"cmd": 1}}},
    "cmd a list of numbers": {"stages": {"s": {"cmd": ["a", 1]}}},
    "cmd a table": {"stages": {"s": {"cmd": {}}}},
    "deps a string": {"stages": {"s": {"cmd": "x", "deps": "a"}}},
    "out a number": {"stages": {"s": {"cmd": "x", "outs": [1]}}},
    "outs a string": {"stages": {"s": {"cmd": "x", "outs": "a"}}},
    "out without path": {"stages": {"s": {"cmd": "x", "outs": [{"cache": True}]}}},
    "out unknown key": {"stages": {"s": {"cmd": "x", "outs": [{"path": "a", "kind": 1}]}}},
    "cache an int": {"stages": {"s": {"cmd": "x", "outs": [{"path": "a", "cache": 1}]}}},
    "metric empty": {"stages": {"s": {"cmd": "x", "outs": [{"path": "a", "metric": []}]}}},
    "metric a table": {"stages": {"s": {"cmd": "x", "outs": [{"path": "a", "metric": {}}]}}},
    "metric a string": {"stages": {"s": {"cmd": "x", "outs": [{"path": "a", "metric": "a"}]}}},
    "plot of numbers": {"stages": {"s": {"cmd": "x", "outs": [{"path": "a", "plot": [1]}]}}},
    "frozen a string": {"stages": {"s": {"cmd": "x", "frozen": "yes"}}},
    "always_changed 1": {"stages": {"s": {"cmd": "x", "always_changed": 1}}},
    "wdir a number": {"stages": {"s": {"cmd": "x", "wdir": 1}}},
    "foreach a string": {"stages": {"s": {"cmd": "x", "foreach": "a"}}},
    "foreach a table without glob": {"stages": {"s": {"cmd": "x", "foreach": {"a": 1}}}},
    "foreach exclude only": {"stages": {"s": {"cmd": "x", "foreach": {"exclude": []}}}},
    "foreach glob a number": {"stages": {"s": {"cmd": "x", "foreach": {"glob": 1}}}},
    "foreach glob extra key": {"stages": {"s": {"cmd": "x", "foreach": {"glob": "*",
                                                                         "x": 1}}}},
    "foreach of tables": {"stages": {"s": {"cmd": "x", "foreach": [{}]}}},
    "foreach of dates": {"stages": {"s": {"cmd": "x",
                                          "foreach": [datetime.date(2020, 1, 1)]}}},
    "matrix an array": {"stages": {"s": {"cmd": "x", "matrix": [1]}}},
    "matrix axis a number": {"stages": {"s": {"cmd": "x", "matrix": {"a": 1}}}},
    "discover rust": {"stages": {"s": {"cmd": "x", "discover": ["rust"]}}},
    "discover a string": {"stages": {"s": {"cmd": "x", "discover": "python"}}},
    "stage a string": {"stages": {"s": "x"}},
    "stages an array": {"stages": [{"cmd": "x"}]},
    "jobs 0": {"project": {"jobs": 0}},
    "jobs true": {"project": {"jobs": True}},
    "jobs a float": {"project": {"jobs": 2.0}},
    "checkout unknown": {"project": {"checkout": ["move"]}},
    "checkout a string": {"project": {"checkout": "copy"}},
    "project unknown key": {"project": {"nme": "x"}},
    "project an array": {"project": []},
    "remote without url": {"remotes": {"r": {"region": "x"}}},
    "remote url a number": {"remotes": {"r": {"url": 1}}},
    "remote unknown key": {"remotes": {"r": {"url": "x", "profile": "p"}}},
    "vars an array": {"vars": [1]},
    "a var named by a number": {"vars": {1: 2}},
    "a stage named by a number": {"stages": {1: {"cmd": "x"}}},
    "a matrix axis named by a number": {"stages": {"s": {"cmd": "x", "matrix": {1: [1]}}}},
    "a pool named by a number": {"pools": {1: 2}},
    "pools 0": {"pools": {"p": 0}},
    "pools a string": {"pools": {"p": "2"}},
    "pools true": {"pools": {"p": True}},
    "kind ray": {"executor": {"kind": "ray"}},
    "cluster remote": {"executor": {"cluster": "remote"}},
    "transfer ftp": {"executor": {"transfer": "ftp"}},
    "retries -1": {"executor": {"retries": -1}},
    "workers 0": {"executor": {"workers": 0}},
    "env a string": {"executor": {"env": "A"}},
    "insecure 0": {"executor": {"insecure": 0}},
    "executor unknown key": {"executor": {"host": "x"}},
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_the_models_refuse_the_acceptor_refuses_and_the_models_word(name: str) -> None:
    outcome, message = assert_agree(REFUSED[name])
    assert outcome == "refused", message
    assert message.startswith("pivot.toml: ") and "\n" not in message


LOCAL_REFUSED = {
    "name is not a local key": {"project": {"name": "x"}},
    "params_file is not a local key": {"project": {"params_file": "x"}},
    "transfer is not a local key": {"executor": {"transfer": "shared"}},
    "insecure a string": {"executor": {"insecure": "no"}},
    "workers 0": {"executor": {"workers": 0}},
    "remote url a number": {"remotes": {"r": {"url": 1}}},
    "remote unknown key": {"remotes": {"r": {"bucket": "x"}}},
    "unknown section": {"stages": {}},
}


@pytest.mark.parametrize("name", sorted(LOCAL_REFUSED))
def test_what_the_local_models_refuse_the_acceptor_refuses(name: str) -> None:
    assert assert_agree_local(LOCAL_REFUSED[name])[0] == "refused"


def test_what_only_the_acceptor_refuses_is_taken_from_the_models() -> None:
    """TOML has no null, so the acceptor refuses an explicit None; the models take it as
    the default, and check_file gives their values as the same plain dataclasses."""
    data = {"stages": {"s": {"cmd": "x", "desc": None, "matrix": None}},
            "project": {"jobs": None}}
    assert accept_file(data) is None
    assert check_file(data, "pivot.toml") == accept_file({"stages": {"s": {"cmd": "x"}}})
    assert assert_agree(data)[0] == "ok"
    assert check_local({"executor": {"insecure": None}}, "x") == accept_local({})


# ---- random and mutated documents ----------------------------------------------------------

TEXT = st.text(alphabet="ab/.*${}-_ é", max_size=5)
STRS = st.lists(TEXT, max_size=3)
SCALAR = st.one_of(TEXT, st.integers(), st.floats(), st.booleans())
ODD = st.sampled_from([
    None, True, False, 0, 1, -1, 2, 2**70, 1.5, math.nan, "", "x", "python", "local", "dask",
    "copy", "shared", [], ["a"], [1], [True], [[]], {}, {"glob": "*"}, {"path": "p"},
    {"url": "u"}, {"cmd": "x"}, datetime.date(2020, 1, 1), datetime.time(1, 2),
])
AXIS = st.one_of(st.lists(SCALAR, max_size=3),
                 st.fixed_dictionaries({"glob": TEXT}, optional={"exclude": STRS}))
FLAG = st.one_of(st.booleans(), st.lists(TEXT, max_size=2))
OUT = st.one_of(TEXT, st.fixed_dictionaries({"path": TEXT}, optional={
    "cache": st.booleans(), "persist": st.booleans(), "metric": FLAG,
    "plot": st.one_of(FLAG, st.dictionaries(TEXT, TEXT, max_size=2))}))
STAGE = st.fixed_dictionaries({"cmd": st.one_of(TEXT, STRS)}, optional={
    "deps": STRS, "outs": st.lists(OUT, max_size=3), "params": STRS, "wdir": TEXT,
    "desc": TEXT, "always_changed": st.booleans(), "frozen": st.booleans(),
    "matrix": st.dictionaries(TEXT, AXIS, max_size=2), "foreach": AXIS, "depfile": TEXT,
    "discover": st.lists(st.sampled_from(["python", "rust"]), max_size=2), "pool": TEXT})
SMALL_INT = st.integers(-1, 3)
CHECKOUT = st.lists(st.sampled_from([*CHECKOUT_METHODS, "move"]), max_size=3)
PROJECT = st.fixed_dictionaries({}, optional={
    "name": TEXT, "jobs": SMALL_INT, "checkout": CHECKOUT, "cache_dir": TEXT,
    "default_remote": TEXT, "params_file": TEXT})
EXECUTOR = st.fixed_dictionaries({}, optional={
    "kind": st.sampled_from(["local", "dask", "ray"]), "address": TEXT,
    "cluster": st.sampled_from(["local", "remote"]), "workers": SMALL_INT,
    "transfer": st.sampled_from(["remote", "shared", "ftp"]), "remote": TEXT, "env": STRS,
    "local": STRS, "retries": SMALL_INT, "insecure": st.booleans()})
REMOTE = st.fixed_dictionaries({}, optional={"url": TEXT, "endpoint_url": TEXT,
                                             "region": TEXT})
VARS = st.dictionaries(TEXT, st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=2)
                                          | st.dictionaries(TEXT, inner, max_size=2),
                                          max_leaves=4), max_size=3)
FILE = st.fixed_dictionaries({}, optional={
    "project": PROJECT, "remotes": st.dictionaries(TEXT, REMOTE, max_size=2), "vars": VARS,
    "stages": st.dictionaries(TEXT, STAGE, max_size=3),
    "pools": st.dictionaries(TEXT, SMALL_INT, max_size=2), "executor": EXECUTOR})
LOCAL = st.fixed_dictionaries({}, optional={
    "project": st.fixed_dictionaries({}, optional={
        "jobs": SMALL_INT, "checkout": CHECKOUT, "cache_dir": TEXT, "default_remote": TEXT}),
    "remotes": st.dictionaries(TEXT, st.fixed_dictionaries({}, optional={
        "url": TEXT, "endpoint_url": TEXT, "region": TEXT, "profile": TEXT}), max_size=2),
    "executor": st.fixed_dictionaries({}, optional={
        "kind": st.sampled_from(["local", "dask", "ray"]), "address": TEXT,
        "cluster": st.sampled_from(["local", "x"]), "workers": SMALL_INT,
        "insecure": st.booleans()})})
KEYS = ["cmd", "outs", "path", "glob", "exclude", "metric", "plot", "matrix", "foreach",
        "jobs", "checkout", "url", "kind", "extra", "stages", "vars", "project", "executor"]


def _containers(value: Any, found: list[Any]) -> list[Any]:
    if isinstance(value, (dict, list)):
        found.append(value)
        for item in (value.values() if isinstance(value, dict) else value):
            _containers(item, found)
    return found


def _mutate(data: st.DataObject, doc: dict[str, Any]) -> None:
    """One change somewhere in ``doc``: a value replaced, a key added or dropped."""
    target = data.draw(st.sampled_from(_containers(doc, [])))
    action = data.draw(st.integers(0, 2))
    if isinstance(target, list):
        if target and action < 2:
            target[data.draw(st.integers(0, len(target) - 1))] = data.draw(ODD)
        else:
            target.append(data.draw(ODD))
    elif action == 0 and target:
        del target[data.draw(st.sampled_from(sorted(target)))]
    elif action == 1 and target:
        target[data.draw(st.sampled_from(sorted(target)))] = data.draw(ODD)
    else:
        target[data.draw(st.sampled_from(KEYS))] = data.draw(st.one_of(ODD, STAGE, OUT, AXIS))


PROPERTY = settings(max_examples=250, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@PROPERTY
@given(doc=FILE, mutations=st.integers(0, 2), data=st.data())
def test_random_and_mutated_documents_agree(doc: dict[str, Any], mutations: int,
                                            data: st.DataObject) -> None:
    for _ in range(mutations):
        _mutate(data, doc)
    assert_agree(doc)


@PROPERTY
@given(doc=LOCAL, mutations=st.integers(0, 2), data=st.data())
def test_random_and_mutated_local_documents_agree(doc: dict[str, Any], mutations: int,
                                                  data: st.DataObject) -> None:
    for _ in range(mutations):
        _mutate(data, doc)
    assert_agree_local(doc)


def test_generated_documents_exercise_both_outcomes() -> None:
    """The strategies are not vacuous: both accepted and refused documents come out."""
    seen: set[str] = set()

    @settings(max_examples=120, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(doc=FILE, mutations=st.integers(0, 1), data=st.data())
    def probe(doc: dict[str, Any], mutations: int, data: st.DataObject) -> None:
        for _ in range(mutations):
            _mutate(data, doc)
        seen.add(assert_agree(doc)[0])

    probe()
    assert {"fast", "refused"} <= seen


# ---- through load_project: the fallback gives the same Project ------------------------------

PROJECT_TOML = """
[project]
name = "demo"
jobs = 2
checkout = ["copy"]
[remotes.store]
url = "s3://bucket/prefix"
region = "eu-west-1"
[vars]
n = 3
[pools]
gpu = 1
[executor]
env = ["HOME"]
local = ["gen"]
[stages.gen]
cmd = "python gen.py ${n}"
deps = ["gen.py"]
params = ["train.lr"]
outs = [
  "data/raw.csv",
  { path = "metrics", cache = false, metric = ["metrics/m.json"], plot = {x = "step", y = "loss"} },
]
pool = "gpu"
[stages.cc]
foreach = { glob = "src/*.c" }
cmd = "cc -c ${item.path} -o ${item.stem}.o"
deps = ["${item.path}"]
outs = ["${item.stem}.o"]
depfile = "${item.stem}.d"
[stages.m]
matrix = { v = [1, 2], w = ["a", true] }
cmd = ["echo ${item.v} ${item.w}", "true"]
outs = ["m/${item.v}-${item.w}"]
discover = ["python"]
"""


def _project_root(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.c").write_text("int a;\n")
    (tmp_path / "src" / "b.c").write_text("int b;\n")
    (tmp_path / "pivot.toml").write_text(PROJECT_TOML)
    (tmp_path / "params.toml").write_text("[train]\nlr = 0.5\n")
    (tmp_path / ".pivotbuild").mkdir()
    (tmp_path / ".pivotbuild" / "config.local.toml").write_text(
        '[project]\njobs = 4\n[remotes.store]\nprofile = "dev"\n[executor]\nkind = "dask"\n'
        'cluster = "local"\nworkers = 2\n')
    return tmp_path


def test_a_project_loads_the_same_through_the_models(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIVOTBUILD_CACHE_DIR", raising=False)
    root = _project_root(tmp_path)
    fast = load_project(root)
    assert sorted(fast.stages) == ["cc@a", "cc@b", "gen", "m@1-a", "m@1-true", "m@2-a",
                                   "m@2-true"]
    assert fast.jobs == 4 and fast.executor.kind == "dask" and fast.remotes["store"].profile
    monkeypatch.setattr(config_check, "accept_file", lambda data: None)
    monkeypatch.setattr(config_check, "accept_local", lambda data: None)
    assert load_project(root) == fast
