"""Tests for the config fields of SPEC §9-§13: depfile, discover, pool, [pools], out flags
metric / plot, params_file, sources, [executor] and --set overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from pivotbuild.config import CONSOLE_POOL, Project, load_project
from pivotbuild.errors import EXIT_USAGE, ConfigError, UsageError
from pivotbuild.paths import LOCAL_CONFIG_FILE, PROJECT_FILE


def write(root: Path, toml: str, **files: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / PROJECT_FILE).write_text(toml)
    for name, text in files.items():
        path = root / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def load(root: Path, toml: str, **files: str) -> Project:
    return load_project(write(root, toml, **files))


def error(root: Path, toml: str, **files: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(root, toml, **files)
    assert info.value.exit_code == EXIT_USAGE
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture(autouse=True)
def _no_cache_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIVOTBUILD_CACHE_DIR", raising=False)


# --- stage fields -----------------------------------------------------------------------------


def test_new_stage_fields_default_and_pass_through(tmp_path: Path) -> None:
    project = load(tmp_path, """
[pools]
link = 2

[stages.a]
cmd = "true"

[stages.cc]
foreach = ["x", "y"]
cmd = "cc -MF build/${item}.d"
wdir = "sub"
outs = ["../build/${item}.o"]
depfile = "../build/./${item}.d"
discover = ["python"]
pool = "link"

[stages.play]
cmd = "sh"
pool = "console"
""")
    a = project.stages["a"]
    assert (a.depfile, a.discover, a.pool) == (None, [], None)
    cc = project.stages["cc@y"]
    assert (cc.depfile, cc.discover, cc.pool) == ("build/y.d", ["python"], "link")
    assert project.stages["play"].pool == CONSOLE_POOL
    assert project.pools == {"console": 1, "link": 2}


@pytest.mark.parametrize(("body", "expected"), [
    ('depfile = "pivot.toml"',
     ("pivot.toml: stages.s.depfile: path is the pipeline file pivot.toml, which can never be "
     "an output: 'pivot.toml'")),
    ('depfile = ".pivotbuild/x.d"', ("pivot.toml: stages.s.depfile: path lies inside "
     ".pivotbuild/")),
    ('depfile = "../x.d"', "pivot.toml: stages.s.depfile: path escapes the project root"),
    ('depfile = 3', "pivot.toml: stages.s.depfile: expected a string, got integer 3"),
    ('discover = ["ruby"]',
     "pivot.toml: stages.s.discover[0]: expected one of 'python', got string 'ruby'"),
    ('discover = ["python", "python"]',
     "pivot.toml: stages.s.discover[1]: 'python' is listed twice"),
    ('pool = "link"', "pivot.toml: stages.s.pool: no pool named 'link'"),
])
def test_stage_field_errors(tmp_path: Path, body: str, expected: str) -> None:
    message = error(tmp_path, f'[stages.s]\ncmd = "true"\n{body}\n')
    assert message.startswith(expected), message


@pytest.mark.parametrize(("pools", "expected"), [
    ("console = 2", ("pivot.toml: pools.console: 'console' is built in (size 1) and cannot be "
     "redefined")),
    ("link = 0", "pivot.toml: pools.link: must be at least 1, got integer 0"),
    ('link = "1"', "pivot.toml: pools.link: expected an integer, got string '1'"),
    ('".x" = 1', 'pivot.toml: pools.".x": invalid pool name'),
])
def test_pool_table_errors(tmp_path: Path, pools: str, expected: str) -> None:
    assert error(tmp_path, f"[pools]\n{pools}\n") == expected


def test_console_pool_is_always_there(tmp_path: Path) -> None:
    assert load(tmp_path, "").pools == {"console": 1}
    assert Project(root=tmp_path).pools == {"console": 1}


# --- out flags --------------------------------------------------------------------------------


def test_metric_and_plot_flags(tmp_path: Path) -> None:
    project = load(tmp_path, """
[stages.t]
cmd = "true"
wdir = "w"
outs = [
  { path = "m.json", cache = false, metric = true },
  { path = "loss.csv", plot = { x = "step", y = ["loss"] } },
  { path = "eval", metric = ["eval/summary.json"], plot = ["eval/./curve.csv"] },
  "plain.txt",
]
""")
    outs = project.stages["t"].outs
    assert (outs[0].metric, outs[0].plot, outs[0].cache) == (True, False, False)
    assert outs[1].plot == {"x": "step", "y": ["loss"]}
    assert (outs[2].metric, outs[2].plot) == (["w/eval/summary.json"], ["w/eval/curve.csv"])
    assert (outs[3].metric, outs[3].plot) == (False, False)


@pytest.mark.parametrize(("out", "expected"), [
    ('{ path = "m", metric = "yes" }',
     ("pivot.toml: stages.t.outs[0].metric: expected a boolean, an array of paths, got "
     "string 'yes'")),
    ('{ path = "m", metric = { x = "a" } }',
     "pivot.toml: stages.t.outs[0].metric: expected a boolean, an array of paths, got table"),
    ('{ path = "m", plot = 3 }',
     ("pivot.toml: stages.t.outs[0].plot: expected a boolean, an array of paths or a table "
     "{x, y, title, template}, got integer 3")),
    ('{ path = "m", plot = { z = 1 } }',
     "pivot.toml: stages.t.outs[0].plot.z: unknown key"),
    ('{ path = "m", metric = ["other/x.json"] }',
     ("pivot.toml: stages.t.outs[0].metric[0]: 'other/x.json' is not a file inside the "
     "directory output 'm'")),
    ('{ path = "m", metric = ["m"] }',
     "pivot.toml: stages.t.outs[0].metric[0]: 'm' is not a file inside"),
])
def test_out_flag_errors(tmp_path: Path, out: str, expected: str) -> None:
    message = error(tmp_path, f'[stages.t]\ncmd = "true"\nouts = [{out}]\n')
    assert message.startswith(expected), message


def test_out_flags_do_not_enter_the_input_hash(tmp_path: Path) -> None:
    from pivotbuild.plan import stage_input_hash

    plain = load(tmp_path / "a", '[stages.t]\ncmd = "true"\nouts = ["m.json"]\n')
    flagged = load(tmp_path / "b", '[stages.t]\ncmd = "true"\npool = "console"\n'
                   'outs = [{ path = "m.json", metric = true, plot = true }]\n')
    assert (stage_input_hash(plain.stages["t"], {})
            == stage_input_hash(flagged.stages["t"], {}))


# --- project-level fields ---------------------------------------------------------------------


def test_sources_list_the_files_read(tmp_path: Path) -> None:
    assert load(tmp_path / "a", "").sources == (PROJECT_FILE,)
    project = load(tmp_path / "b", "", **{"params.toml": "a = 1\n"})
    assert project.sources == (PROJECT_FILE, "params.toml")
    assert project.glob_dirs == ()


def test_executor_defaults(tmp_path: Path) -> None:
    executor = load(tmp_path, "").executor
    assert (executor.kind, executor.transfer, executor.retries, executor.insecure) == (
        "local", "remote", 1, False)
    assert (executor.address, executor.cluster, executor.workers, executor.remote) == (
        None, None, None, None)


def test_executor_table_and_local_override(tmp_path: Path) -> None:
    root = write(tmp_path, """
[project]
default_remote = "origin"

[remotes.origin]
url = "/srv/cache"

[executor]
kind = "dask"
address = "tcp://127.0.0.1:8786"
env = ["OMP_NUM_THREADS"]
local = ["report", "cc"]
retries = 2
transfer = "shared"

[stages.report]
cmd = "true"

[stages.cc]
foreach = ["a"]
cmd = "true"
""", **{LOCAL_CONFIG_FILE.replace("/", "__"):
        '[executor]\naddress = "tls://sched:8786"\n'})
    executor = load_project(root).executor
    assert executor.kind == "dask"
    assert executor.address == "tls://sched:8786"
    assert executor.remote == "origin"  # the default remote
    assert (executor.env, executor.local) == (["OMP_NUM_THREADS"], ["report", "cc"])
    assert (executor.retries, executor.transfer) == (2, "shared")


@pytest.mark.parametrize(("body", "expected"), [
    ('kind = "ray"', ("pivot.toml: executor.kind: expected one of 'local', 'dask', got "
     "string 'ray'")),
    ('transfer = "nfs"', "pivot.toml: executor.transfer: expected one of 'remote', 'shared'"),
    ('cluster = "local"\naddress = "tcp://h:1"',
     "pivot.toml: executor.address: 'address' and 'cluster' cannot both be set"),
    ("workers = 2", 'pivot.toml: executor.workers: applies only with cluster = "local"'),
    ('cluster = "local"\nworkers = 0', "pivot.toml: executor.workers: must be at least 1"),
    ('remote = "nope"', "pivot.toml: executor.remote: no remote named 'nope' is defined"),
    ('env = ["A B"]', "pivot.toml: executor.env[0]: not an environment variable name"),
    ('local = ["ghost"]', "pivot.toml: executor.local[0]: no stage named 'ghost'"),
    ("retries = -1", "pivot.toml: executor.retries: must be at least 0"),
    ("threads = 3", "pivot.toml: executor.threads: unknown key"),
])
def test_executor_errors(tmp_path: Path, body: str, expected: str) -> None:
    message = error(tmp_path, f"[executor]\n{body}\n")
    assert message.startswith(expected), message


def test_executor_address_with_credentials_is_refused_unechoed(tmp_path: Path) -> None:
    message = error(tmp_path, '[executor]\naddress = "tls://user:hunter2@sched:8786"\n')
    assert message.startswith("pivot.toml: executor.address: ")
    assert "hunter2" not in message


# --- --set overrides --------------------------------------------------------------------------


TEMPLATED = """
[vars]
cc = "gcc"
flags = { opt = "-O2" }
n = 3

[stages.c]
cmd = "${cc} ${flags.opt} -j${n}"
"""


def test_overrides_replace_vars(tmp_path: Path) -> None:
    root = write(tmp_path, TEMPLATED)
    assert load_project(root).stages["c"].cmd == ["gcc -O2 -j3"]
    project = load_project(root, {"cc": "clang", "flags.opt": "-O0", "n": "8"})
    assert project.stages["c"].cmd == ["clang -O0 -j8"]
    assert project.vars["cc"] == "clang"
    assert load_project(root).vars["flags"] == {"opt": "-O2"}  # the file is untouched


@pytest.mark.parametrize(("name", "expected"), [
    ("cxx", "--set cxx=...: no such variable in [vars] of pivot.toml"),
    ("flags.debug", "--set flags.debug=...: no such variable in [vars] of pivot.toml"),
    ("cc.x", "--set cc.x=...: no such variable in [vars] of pivot.toml"),
    ("flags", "--set flags=...: [vars] flags is table (set one of its values instead)"),
    ("a b", "--set a b=...: malformed name"),
])
def test_override_errors(tmp_path: Path, name: str, expected: str) -> None:
    root = write(tmp_path, TEMPLATED)
    with pytest.raises(UsageError) as info:
        load_project(root, {name: "x"})
    assert info.value.exit_code == EXIT_USAGE
    assert str(info.value).startswith(expected), str(info.value)
