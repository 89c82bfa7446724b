"""Tests for pivotbuild.config: pivot.toml / params.toml loading, templating, path rules."""

from __future__ import annotations

import dataclasses
import os
import posixpath
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pivotbuild.config import Out, Project, Stage, load_project
from pivotbuild.errors import EXIT_USAGE, ConfigError, UsageError, key_path
from pivotbuild.paths import (
    PARAMS_FILE,
    PROJECT_FILE,
    PathProblem,
    find_root,
    is_inside,
    normalize_path,
)

REPO = Path(__file__).resolve().parent.parent


def write(root: Path, toml: str, params: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / PROJECT_FILE).write_text(toml)
    if params is not None:
        (root / PARAMS_FILE).write_text(params)
    return root


def load(root: Path, toml: str, params: str | None = None) -> Project:
    return load_project(write(root, toml, params))


def error(root: Path, toml: str, params: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(root, toml, params)
    assert info.value.exit_code == EXIT_USAGE
    message = str(info.value)
    assert "\n" not in message  # always one line
    return message


@pytest.fixture(autouse=True)
def _no_cache_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIVOTBUILD_CACHE_DIR", raising=False)


# --- finding the root ----------------------------------------------------------------------


def test_find_root_walks_up(tmp_path: Path) -> None:
    write(tmp_path, "")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert find_root(nested) == tmp_path.resolve()
    assert find_root(tmp_path) == tmp_path.resolve()


def test_find_root_prefers_nearest(tmp_path: Path) -> None:
    write(tmp_path, "")
    write(tmp_path / "inner", "")
    assert find_root(tmp_path / "inner") == (tmp_path / "inner").resolve()


def test_find_root_missing(tmp_path: Path) -> None:
    start = tmp_path / "nowhere"
    start.mkdir()
    with pytest.raises(UsageError) as info:
        find_root(start)
    assert str(info.value) == (f"no pivot.toml found in {start} or any parent directory "
                               "(run 'pivotbuild init')")
    assert info.value.exit_code == EXIT_USAGE


def test_load_without_pivot_toml(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no pivot.toml in"):
        load_project(tmp_path)


# --- the project table ---------------------------------------------------------------------


def test_empty_project_is_valid_with_defaults(tmp_path: Path) -> None:
    project = load(tmp_path, "")
    assert project.root == tmp_path.resolve()
    assert project.root.is_absolute()
    assert project.name is None and project.jobs is None
    assert project.checkout == ["reflink", "hardlink", "copy"]
    assert project.cache_dir == tmp_path.resolve() / ".pivotbuild" / "cache"
    assert project.default_remote is None
    assert project.remotes == {} and project.vars == {} and project.params == {}
    assert project.stages == {}


def test_project_fields(tmp_path: Path) -> None:
    project = load(tmp_path, """
[project]
name = "demo"
jobs = 3
checkout = ["copy", "hardlink"]
cache_dir = "../shared-cache"
default_remote = "origin"
[remotes.origin]
url = "/srv/cache"
[remotes.s3]
url = "s3://bucket/prefix"
region = "eu-west-1"
""")
    assert project.name == "demo"
    assert project.jobs == 3
    assert project.checkout == ["copy", "hardlink"]
    assert project.cache_dir == tmp_path.resolve().parent / "shared-cache"
    assert project.default_remote == "origin"
    assert project.remotes["origin"].url == "/srv/cache"
    assert project.remotes["s3"].region == "eu-west-1"


def test_jobs_must_be_positive(tmp_path: Path) -> None:
    assert error(tmp_path, "[project]\njobs = 0\n") == (
        "pivot.toml: project.jobs: must be at least 1, got integer 0")


def test_jobs_wrong_type(tmp_path: Path) -> None:
    assert error(tmp_path, '[project]\njobs = "4"\n') == (
        "pivot.toml: project.jobs: expected an integer, got string '4'")
    # TOML booleans are not integers here, even though Python's bool is an int.
    assert error(tmp_path, "[project]\njobs = true\n") == (
        "pivot.toml: project.jobs: expected an integer, got boolean true")


def test_checkout_rules(tmp_path: Path) -> None:
    assert error(tmp_path, "[project]\ncheckout = []\n") == (
        "pivot.toml: project.checkout: must name at least one of reflink, hardlink, copy")
    assert error(tmp_path, '[project]\ncheckout = ["copy", "copy"]\n') == (
        "pivot.toml: project.checkout[1]: 'copy' is listed twice")
    assert error(tmp_path, '[project]\ncheckout = ["copy", "symlink"]\n') == (
        "pivot.toml: project.checkout[1]: expected one of 'reflink', 'hardlink', 'copy', "
        "got string 'symlink'")


def test_default_remote_must_exist(tmp_path: Path) -> None:
    assert error(tmp_path, '[project]\ndefault_remote = "origin"\n') == (
        "pivot.toml: project.default_remote: no remote named 'origin' is defined "
        "(add [remotes.origin] with a url)")


def test_remote_needs_url(tmp_path: Path) -> None:
    assert error(tmp_path, "[remotes.origin]\n") == (
        "pivot.toml: remotes.origin.url: required key is missing")
    assert error(tmp_path, '[remotes.origin]\nurl = ""\n') == (
        "pivot.toml: remotes.origin.url: must not be empty")


def test_remote_credentials_profile_not_allowed_in_pivot_toml(tmp_path: Path) -> None:
    assert error(tmp_path, '[remotes.origin]\nurl = "/x"\nprofile = "me"\n') == (
        "pivot.toml: remotes.origin.profile: unknown key")


# --- cache_dir -----------------------------------------------------------------------------


def test_cache_dir_absolute_outside_project(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    project = load(tmp_path / "p", f'[project]\ncache_dir = "{shared}"\n')
    assert project.cache_dir == shared


def test_cache_dir_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIVOTBUILD_CACHE_DIR", str(tmp_path / "env-cache"))
    project = load(tmp_path / "p", '[project]\ncache_dir = "mine"\n')
    assert project.cache_dir == tmp_path / "env-cache"


def test_cache_dir_env_relative_is_relative_to_cwd(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIVOTBUILD_CACHE_DIR", "c")
    project = load(tmp_path / "p", "")
    assert project.cache_dir == Path(os.path.abspath(tmp_path / "c"))


def test_cache_dir_empty_is_error(tmp_path: Path) -> None:
    assert error(tmp_path, '[project]\ncache_dir = ""\n') == (
        "pivot.toml: project.cache_dir: must not be empty")


def test_config_local_overrides(tmp_path: Path) -> None:
    write(tmp_path, """
[project]
cache_dir = "from-toml"
jobs = 2
[remotes.origin]
url = "/srv/a"
""")
    (tmp_path / ".pivotbuild").mkdir()
    (tmp_path / ".pivotbuild" / "config.local.toml").write_text("""
[project]
cache_dir = "/var/cache/pivot"
jobs = 8
default_remote = "origin"
[remotes.origin]
profile = "ci"
""")
    project = load_project(tmp_path)
    assert project.cache_dir == Path("/var/cache/pivot")
    assert project.jobs == 8
    assert project.default_remote == "origin"
    assert project.remotes["origin"].url == "/srv/a"
    assert project.remotes["origin"].profile == "ci"


def test_config_local_unknown_key(tmp_path: Path) -> None:
    write(tmp_path, "")
    (tmp_path / ".pivotbuild").mkdir()
    (tmp_path / ".pivotbuild" / "config.local.toml").write_text("[project]\nname = 'x'\n")
    with pytest.raises(ConfigError) as info:
        load_project(tmp_path)
    assert str(info.value) == ".pivotbuild/config.local.toml: project.name: unknown key"


def test_loading_writes_nothing(tmp_path: Path) -> None:
    write(tmp_path, '[stages.a]\ncmd = "true"\nouts = ["x"]\n', "[a]\nb = 1\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    load_project(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / ".pivotbuild").exists()


# --- syntax and schema errors ----------------------------------------------------------------


def test_toml_syntax_error(tmp_path: Path) -> None:
    message = error(tmp_path, '[project]\nname = "x\n')
    assert message.startswith("pivot.toml: line 2: ")


def test_toml_duplicate_key_is_syntax_error(tmp_path: Path) -> None:
    message = error(tmp_path, "[stages.a]\ncmd = 'a'\ncmd = 'b'\n")
    assert message.startswith("pivot.toml: line 3: ")


def test_params_syntax_error(tmp_path: Path) -> None:
    message = error(tmp_path, "", "[train]\nlr = = 1\n")
    assert message.startswith("params.toml: line 2: ")


def test_invalid_utf8(tmp_path: Path) -> None:
    (tmp_path / PROJECT_FILE).write_bytes(b"name = '\xff'\n")
    with pytest.raises(ConfigError) as info:
        load_project(tmp_path)
    assert str(info.value) == "pivot.toml: not valid UTF-8 (byte 8)"


@pytest.mark.parametrize(("toml", "where"), [
    ("[projekt]\n", "projekt"),
    ("[project]\nnmae = 'x'\n", "project.nmae"),
    ("[remotes.origin]\nurl = '/x'\nusr = 'y'\n", "remotes.origin.usr"),
    ("[stages.train]\ncmd = 'x'\noutz = ['a']\n", "stages.train.outz"),
    ("[stages.train]\ncmd = 'x'\nouts = ['a', {path = 'b', cahce = false}]\n",
     "stages.train.outs[1].cahce"),
])
def test_unknown_keys_are_errors(tmp_path: Path, toml: str, where: str) -> None:
    assert error(tmp_path, toml) == f"pivot.toml: {where}: unknown key"


@pytest.mark.parametrize(("body", "expected"), [
    ("cmd = 3", "stages.t.cmd: expected a string or an array of strings, got integer"),
    ("cmd = ['a', 3]", "stages.t.cmd[1]: expected a string, got integer 3"),
    ("cmd = 'x'\ndeps = 'a'", "stages.t.deps: expected an array, got string 'a'"),
    ("cmd = 'x'\ndeps = ['a', ['b']]", "stages.t.deps[1]: expected a string, got array"),
    ("cmd = 'x'\nouts = ['a', 3]",
     "stages.t.outs[1]: expected a path string or a table with a path, got integer"),
    ("cmd = 'x'\nouts = [{cache = false}]", "stages.t.outs[0].path: required key is missing"),
    ("cmd = 'x'\nouts = [{path = 'a', cache = 'no'}]",
     "stages.t.outs[0].cache: expected a boolean (true or false), got string 'no'"),
    ("cmd = 'x'\nfrozen = 1", "stages.t.frozen: expected a boolean (true or false), got integer 1"),
    ("cmd = 'x'\nwdir = 1", "stages.t.wdir: expected a string, got integer 1"),
    ("cmd = 'x'\nmatrix = [1]", "stages.t.matrix: expected a table, got array"),
    ("deps = []", "stages.t.cmd: required key is missing"),
])
def test_wrong_types_name_key_and_expected_type(tmp_path: Path, body: str, expected: str) -> None:
    assert error(tmp_path, f"[stages.t]\n{body}\n") == f"pivot.toml: {expected}"


def test_stage_must_be_a_table(tmp_path: Path) -> None:
    assert error(tmp_path, "[stages]\nt = 'x'\n") == (
        "pivot.toml: stages.t: expected a table, got string 'x'")


# --- stages --------------------------------------------------------------------------------


def test_plain_stage_fields(tmp_path: Path) -> None:
    project = load(tmp_path, """
[stages.train]
cmd = "python train.py"
deps = ["train.py", "data/clean.csv"]
outs = ["model/", { path = "metrics.json", cache = false }, { path = "h.db", persist = true }]
params = ["train.lr"]
desc = "train it"
always_changed = true
frozen = true
""", "[train]\nlr = 0.01\n")
    stage = project.stages["train"]
    assert stage.name == "train" and stage.base == "train"
    assert stage.cmd == ["python train.py"]
    assert stage.deps == ["train.py", "data/clean.csv"]
    assert stage.outs == [Out(path="model"), Out(path="metrics.json", cache=False),
                          Out(path="h.db", persist=True)]
    assert stage.params == ["train.lr"]
    assert stage.param_values == {"train.lr": 0.01}
    assert stage.wdir == "."
    assert stage.desc == "train it"
    assert stage.always_changed and stage.frozen


def test_stage_defaults_and_list_cmd(tmp_path: Path) -> None:
    stage = load(tmp_path, "[stages.a]\ncmd = ['one', 'two']\n").stages["a"]
    assert stage.cmd == ["one", "two"]
    assert (stage.deps, stage.outs, stage.params, stage.param_values) == ([], [], [], {})
    assert stage.desc is None and not stage.always_changed and not stage.frozen


def test_stage_is_frozen_model(tmp_path: Path) -> None:
    stage = load(tmp_path, "[stages.a]\ncmd = 'x'\n").stages["a"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        stage.name = "b"  # type: ignore[misc]


def test_stages_keep_definition_order(tmp_path: Path) -> None:
    project = load(tmp_path, "".join(f"[stages.{n}]\ncmd = 'x'\n" for n in "zbya"))
    assert list(project.stages) == ["z", "b", "y", "a"]


@pytest.mark.parametrize("name", ["-x", ".x", "a b", "a@b", "a/b", ""])
def test_invalid_stage_names(tmp_path: Path, name: str) -> None:
    message = error(tmp_path, f'[stages."{name}"]\ncmd = "x"\n')
    where = key_path("stages", name)  # "-x" is a bare TOML key, "a b" needs quotes
    assert message == (f"pivot.toml: {where}: invalid stage name {name!r} (allowed: "
                       "letters, digits, '_', '.', '-', not starting with '.' or '-')")


def test_valid_stage_names(tmp_path: Path) -> None:
    project = load(tmp_path, '[stages."v1.2-x_y"]\ncmd = "x"\n[stages._a]\ncmd = "x"\n')
    assert list(project.stages) == ["v1.2-x_y", "_a"]


def test_dotted_stage_name_is_quoted_in_key_path(tmp_path: Path) -> None:
    assert error(tmp_path, '[stages."v1.2"]\ncmd = "x"\ndeps = ["../x"]\n') == (
        "pivot.toml: stages.\"v1.2\".deps[0]: path escapes the project root: '../x'")


@pytest.mark.parametrize(("cmd", "where"), [
    ('""', "cmd"), ('"   "', "cmd"), ("[]", "cmd"), ('["a", ""]', "cmd[1]"),
])
def test_empty_cmd(tmp_path: Path, cmd: str, where: str) -> None:
    assert error(tmp_path, f"[stages.a]\ncmd = {cmd}\n") == (
        f"pivot.toml: stages.a.{where}: must not be empty")


# --- matrix and foreach --------------------------------------------------------------------


def test_matrix_expansion_names_order_and_items(tmp_path: Path) -> None:
    project = load(tmp_path, """
[vars]
src_dir = "src"
[stages.compile]
matrix = { src = ["main", "util"], opt = ["O0", "O2"] }
cmd = "cc -${item.opt} -c ${src_dir}/${item.src}.c -o build/${item.opt}/${item.src}.o"
deps = ["${src_dir}/${item.src}.c"]
outs = ["build/${item.opt}/${item.src}.o"]
""")
    assert list(project.stages) == [
        "compile@main-O0", "compile@main-O2", "compile@util-O0", "compile@util-O2"]
    stage = project.stages["compile@util-O2"]
    assert stage.base == "compile"
    assert stage.cmd == ["cc -O2 -c src/util.c -o build/O2/util.o"]
    assert stage.deps == ["src/util.c"]
    assert stage.outs == [Out(path="build/O2/util.o")]


def test_matrix_value_formatting(tmp_path: Path) -> None:
    project = load(tmp_path, """
[stages.t]
matrix = { flag = [true, false], n = [1, 2.5] }
cmd = "run --flag=${item.flag} --n=${item.n}"
""")
    assert list(project.stages) == ["t@true-1", "t@true-2.5", "t@false-1", "t@false-2.5"]
    assert project.stages["t@false-2.5"].cmd == ["run --flag=false --n=2.5"]


def test_matrix_axis_order_is_key_order(tmp_path: Path) -> None:
    project = load(tmp_path, "[stages.t]\ncmd = 'x'\nmatrix = { b = ['1', '2'], a = ['x'] }\n")
    assert list(project.stages) == ["t@1-x", "t@2-x"]


def test_foreach(tmp_path: Path) -> None:
    project = load(tmp_path, """
[stages.plot]
foreach = ["loss", "acc", 3]
cmd = "plot ${item}"
outs = ["plots/${item}.svg"]
""")
    assert list(project.stages) == ["plot@loss", "plot@acc", "plot@3"]
    assert project.stages["plot@acc"].cmd == ["plot acc"]
    assert project.stages["plot@3"].outs == [Out(path="plots/3.svg")]
    assert {s.base for s in project.stages.values()} == {"plot"}


def test_matrix_and_foreach_together(tmp_path: Path) -> None:
    assert error(tmp_path, "[stages.t]\ncmd = 'x'\nforeach = [1]\nmatrix = {a = [1]}\n") == (
        "pivot.toml: stages.t: 'matrix' and 'foreach' cannot both be set")


@pytest.mark.parametrize(("spec", "expected"), [
    ("foreach = []", "stages.t.foreach: must not be empty"),
    ("matrix = {}", "stages.t.matrix: must have at least one axis"),
    ("matrix = { a = ['x'], b = [] }", "stages.t.matrix.b: must not be empty"),
    ("matrix = { a = ['x', {k = 1}] }",
     "stages.t.matrix.a[1]: expected a string, integer, float or boolean, got table"),
    ("foreach = [[1]]", ("stages.t.foreach[0]: expected a string, integer, float or boolean, "
     "got array")),
    ("matrix = { a = ['x', 'y/z'] }",
     "stages.t.matrix.a[1]: generated stage name 't@y/z' contains '/'"),
    ("matrix = { a = ['x'], b = ['ok', 'a b'] }",
     "stages.t.matrix.b[1]: generated stage name 't@x-a b' contains whitespace"),
    ('foreach = ["x", "a\\tb"]',
     "stages.t.foreach[1]: generated stage name 't@a\\tb' contains whitespace"),
    ("foreach = [1, '1']", "stages.t.foreach: generates the stage name 't@1' more than once"),
    ("matrix = { a = ['1-2', '1'], b = ['3', '2-3'] }",
     "stages.t.matrix: generates the stage name 't@1-2-3' more than once"),
])
def test_matrix_errors(tmp_path: Path, spec: str, expected: str) -> None:
    assert error(tmp_path, f"[stages.t]\ncmd = 'x'\n{spec}\n") == f"pivot.toml: {expected}"


def test_matrix_axis_name_must_be_bare(tmp_path: Path) -> None:
    message = error(tmp_path, "[stages.t]\ncmd = 'x'\nmatrix = { 'a.b' = [1] }\n")
    assert message.startswith('pivot.toml: stages.t.matrix."a.b": axis names may only contain')


def test_instance_errors_name_the_instance(tmp_path: Path) -> None:
    toml = "[stages.t]\ncmd = 'x'\nforeach = ['a', '..']\nouts = ['${item}/o']\n"
    assert error(tmp_path, toml) == (
        "pivot.toml: stages.t.outs[0]: path escapes the project root: '../o' (in t@..)")


# --- templating ----------------------------------------------------------------------------


def test_templating_vars_nested_and_params(tmp_path: Path) -> None:
    project = load(tmp_path, """
[vars]
src = "lib"
build = { dir = "out", level = 2, debug = false }
[stages.a]
cmd = "make -C ${build.dir} LEVEL=${build.level} DEBUG=${build.debug} LR=${params.train.lr}"
deps = ["${src}/a.c"]
outs = ["${build.dir}/a.o"]
wdir = "${src}/.."
params = ["${params.which}.lr"]
desc = "build ${src}"
""", "which = 'train'\n[train]\nlr = 0.5\n")
    stage = project.stages["a"]
    assert stage.cmd == ["make -C out LEVEL=2 DEBUG=false LR=0.5"]
    assert stage.deps == ["lib/a.c"]
    assert stage.outs == [Out(path="out/a.o")]
    assert stage.params == ["train.lr"]
    assert stage.desc == "build lib"
    assert project.vars["build"]["dir"] == "out"


def test_dollar_dollar_brace_escape(tmp_path: Path) -> None:
    stage = load(tmp_path, """
[vars]
x = "v"
[stages.a]
cmd = ["echo $${HOME} ${x} $$ $HOME", "printf '%s' '$${'"]
""").stages["a"]
    assert stage.cmd == ["echo ${HOME} v $$ $HOME", "printf '%s' '${'"]


def test_whitespace_inside_reference_is_allowed(tmp_path: Path) -> None:
    stage = load(tmp_path, "[vars]\nx = 'v'\n[stages.a]\ncmd = 'echo ${ x }'\n").stages["a"]
    assert stage.cmd == ["echo v"]


@pytest.mark.parametrize(("toml", "expected"), [
    ("[stages.compile]\ncmd = 'cc ${foo}'\n",
     "stages.compile.cmd: undefined variable '${foo}'"),
    ("[stages.compile]\ncmd = ['a', 'cc ${foo}']\n",
     "stages.compile.cmd[1]: undefined variable '${foo}'"),
    ("[vars]\na = {b = 1}\n[stages.s]\ncmd = '${a.c}'\n",
     "stages.s.cmd: undefined variable '${a.c}'"),
    ("[stages.s]\ncmd = 'x'\ndeps = ['${item}']\n",
     "stages.s.deps[0]: undefined variable '${item}'"),
    ("[stages.s]\ncmd = 'x'\nforeach = [1]\nouts = ['${item.a}']\n",
     "stages.s.outs[0]: undefined variable '${item.a}'"),
    ("[stages.s]\ncmd = 'x ${params.nope}'\n", "stages.s.cmd: undefined variable '${params.nope}'"),
    ("[stages.s]\ncmd = 'x'\nwdir = '${w}'\n", "stages.s.wdir: undefined variable '${w}'"),
    ("[stages.s]\ncmd = 'x'\nparams = ['${p}']\n", "stages.s.params[0]: undefined variable '${p}'"),
    ("[vars]\nl = [1, 2]\n[stages.s]\ncmd = 'x ${l}'\n",
     ("stages.s.cmd: cannot interpolate array '${l}' into a string (only strings, numbers and "
     "booleans can be)")),
    ("[vars]\nt = {a = 1}\n[stages.s]\ncmd = 'x ${t}'\n",
     ("stages.s.cmd: cannot interpolate table '${t}' into a string (only strings, numbers and "
     "booleans can be)")),
    ("[stages.s]\ncmd = 'x ${item}'\nmatrix = {a = [1]}\n",
     ("stages.s.cmd: cannot interpolate table '${item}' into a string (only strings, numbers and "
     "booleans can be)")),
    ("[stages.s]\ncmd = 'x ${oops'\n",
     "stages.s.cmd: unterminated '${' (write '$${' for a literal '${')"),
    ("[stages.s]\ncmd = 'x ${a b}'\n",
     "stages.s.cmd: malformed variable '${a b}' (write '$${' for a literal '${')"),
    ("[stages.s]\ncmd = 'x ${}'\n",
     "stages.s.cmd: malformed variable '${}' (write '$${' for a literal '${')"),
    ("[vars]\nitem = 1\n", "vars.item: 'item' is a reserved name in ${...} templates"),
    ("[vars]\nparams = 1\n", "vars.params: 'params' is a reserved name in ${...} templates"),
])
def test_template_errors(tmp_path: Path, toml: str, expected: str) -> None:
    assert error(tmp_path, toml, "[train]\nlr = 1\n") == f"pivot.toml: {expected}"


# --- paths ---------------------------------------------------------------------------------


def test_paths_are_normalised(tmp_path: Path) -> None:
    stage = load(tmp_path, """
[stages.a]
cmd = "x"
deps = ["./a//b/", "c/./d/../e", "f/"]
outs = ["./out//dir/", { path = "./m.json" }]
""").stages["a"]
    assert stage.deps == ["a/b", "c/e", "f"]
    assert [o.path for o in stage.outs] == ["out/dir", "m.json"]


def test_wdir_joining(tmp_path: Path) -> None:
    stage = load(tmp_path, """
[stages.a]
cmd = "x"
wdir = "./sub//dir/"
deps = ["in.txt", "../shared/lib.py", "../../top.txt"]
outs = ["out/"]
""").stages["a"]
    assert stage.wdir == "sub/dir"
    assert stage.deps == ["sub/dir/in.txt", "sub/shared/lib.py", "top.txt"]
    assert stage.outs == [Out(path="sub/dir/out")]


def test_wdir_root_spellings(tmp_path: Path) -> None:
    project = load(tmp_path, "[stages.a]\ncmd = 'x'\nwdir = './'\n[stages.b]\ncmd = 'x'\n"
                   "wdir = 'a/..'\n")
    assert project.stages["a"].wdir == "." and project.stages["b"].wdir == "."


@pytest.mark.parametrize(("body", "expected"), [
    ("outs = ['ok', '../x']", "stages.train.outs[1]: path escapes the project root: '../x'"),
    ("deps = ['a/../../x']", "stages.train.deps[0]: path escapes the project root: 'a/../../x'"),
    ("wdir = 'sub'\ndeps = ['../../x']",
     "stages.train.deps[0]: path escapes the project root: '../../x'"),
    ("wdir = '..'", "stages.train.wdir: path escapes the project root: '..'"),
    ("wdir = ''", "stages.train.wdir: path is empty"),
    ("deps = ['']", "stages.train.deps[0]: path is empty"),
    ("outs = [{path = ''}]", "stages.train.outs[0]: path is empty"),
    ("outs = ['/etc/x']", ("stages.train.outs[0]: absolute paths are not allowed (use a path "
     "relative to the project root): '/etc/x'")),
    ("deps = ['./']", "stages.train.deps[0]: path is the project root itself: './'"),
    ("outs = ['.pivotbuild/cache/x']", ("stages.train.outs[0]: path lies inside .pivotbuild/, "
     "which pivotbuild manages: '.pivotbuild/cache/x'")),
    ("deps = ['a', './a/']", "stages.train.deps[1]: 'a' is listed twice (also deps[0])"),
    ("outs = ['a', {path = 'a'}]", "stages.train.outs[1]: 'a' is listed twice (also outs[0])"),
])
def test_path_errors(tmp_path: Path, body: str, expected: str) -> None:
    assert error(tmp_path, f"[stages.train]\ncmd = 'x'\n{body}\n") == f"pivot.toml: {expected}"


def test_paths_inside_cache_dir_in_project(tmp_path: Path) -> None:
    assert error(tmp_path, "[project]\ncache_dir = 'cache'\n[stages.a]\ncmd = 'x'\n"
                 "outs = ['cache/o']\n") == (
        "pivot.toml: stages.a.outs[0]: path lies inside cache/, which pivotbuild manages: "
        "'cache/o'")


# --- params --------------------------------------------------------------------------------


def test_params_loaded_whole_and_per_stage(tmp_path: Path) -> None:
    project = load(tmp_path, """
[stages.s]
cmd = "x"
params = ["train.lr", "train.opt", "seed"]
""", "seed = 7\n[train]\nlr = 0.1\n[train.opt]\nname = 'adam'\n")
    assert project.params == {"seed": 7, "train": {"lr": 0.1, "opt": {"name": "adam"}}}
    assert project.stages["s"].param_values == {
        "train.lr": 0.1, "train.opt": {"name": "adam"}, "seed": 7}


def test_params_key_missing(tmp_path: Path) -> None:
    assert error(tmp_path, "[stages.train]\ncmd = 'x'\nparams = ['train.lr']\n",
                 "[train]\nepochs = 1\n") == (
        "pivot.toml: stages.train.params[0]: 'train.lr' not found in params.toml")


def test_params_key_without_params_file(tmp_path: Path) -> None:
    assert error(tmp_path, "[stages.train]\ncmd = 'x'\nparams = ['train.lr']\n") == (
        "pivot.toml: stages.train.params[0]: 'train.lr' not found in params.toml "
        "(there is no params.toml)")


def test_params_key_through_a_scalar_is_missing(tmp_path: Path) -> None:
    assert error(tmp_path, "[stages.s]\ncmd = 'x'\nparams = ['a.b']\n", "a = 1\n") == (
        "pivot.toml: stages.s.params[0]: 'a.b' not found in params.toml")


def test_params_key_malformed_or_duplicate(tmp_path: Path) -> None:
    assert error(tmp_path, "[stages.s]\ncmd = 'x'\nparams = ['a..b']\n", "a = 1\n") == (
        "pivot.toml: stages.s.params[0]: malformed params key 'a..b' (expected dotted keys "
        "like 'train.lr', or 'FILE:train.lr' for another params file)")
    assert error(tmp_path, "[stages.s]\ncmd = 'x'\nparams = ['a', 'a']\n", "a = 1\n") == (
        "pivot.toml: stages.s.params[1]: 'a' is listed twice")


# --- helpers and hand-built models ---------------------------------------------------------


def test_key_path_rendering() -> None:
    assert key_path("stages", "train", "outs", 1) == "stages.train.outs[1]"
    assert key_path("stages", "a.b", "cmd") == 'stages."a.b".cmd'
    assert key_path("stages", "c@x-y") == 'stages."c@x-y"'


def test_hand_built_models_have_defaults(tmp_path: Path) -> None:
    stage = Stage(name="a", cmd=["x"])
    assert stage.base == "a" and stage.wdir == "."
    project = Project(root=tmp_path, stages={"a": stage})
    assert project.cache_dir == tmp_path / ".pivotbuild" / "cache"


def test_is_inside() -> None:
    assert is_inside("data/x", "data") and is_inside("data", "data")
    assert not is_inside("database", "data") and not is_inside("data", "data/x")
    assert is_inside("anything", ".")


@pytest.mark.parametrize(("raw", "wdir", "expected"), [
    ("./a//b/", ".", "a/b"), ("a/../b", ".", "b"), ("x", "s/t", "s/t/x"), ("..", "s", "."),
    ("a/b/../../c", ".", "c"), (".", ".", "."),
])
def test_normalize_path_examples(raw: str, wdir: str, expected: str) -> None:
    assert normalize_path(raw, wdir) == expected


_PARTS = st.sampled_from(["a", "b", "dir", ".", "..", "", "x.y"])


@given(parts=st.lists(_PARTS, min_size=1, max_size=8), wdir=st.lists(
    st.sampled_from(["s", "t"]), max_size=3))
def test_normalisation_property(parts: list[str], wdir: list[str]) -> None:
    raw = "/".join(parts)
    if raw == "" or raw.startswith("/"):
        with pytest.raises(PathProblem):
            normalize_path(raw)
        return
    base = "/".join(wdir) or "."
    joined = posixpath.normpath(posixpath.join(base, raw))
    try:
        result = normalize_path(raw, base)
    except PathProblem as exc:
        # It refuses exactly the paths that climb above the root.
        assert joined == ".." or joined.startswith("../")
        assert "escapes the project root" in str(exc)
        return
    assert result == joined  # same as posixpath for everything that stays inside
    assert normalize_path(result) == result  # idempotent
    assert not result.startswith("/")
    assert ".." not in result.split("/") and "" not in result.split("/")


# --- the shipped example -------------------------------------------------------------------


def test_example_file_loads(tmp_path: Path) -> None:
    shutil.copy(REPO / "pivot.toml.example", tmp_path / PROJECT_FILE)
    (tmp_path / PARAMS_FILE).write_text(
        "[prepare]\nseed = 42\n[train]\nlr = 0.01\nepochs = 10\n")
    (tmp_path / "src" / "net").mkdir(parents=True)
    (tmp_path / "src" / "main.c").write_text("")
    (tmp_path / "src" / "net" / "io.c").write_text("")
    (tmp_path / "src" / "test_x.c").write_text("")
    project = load_project(tmp_path)
    assert project.name == "demo"
    assert project.default_remote == "origin"
    assert set(project.remotes) == {"origin", "s3"}
    assert list(project.stages) == [
        "prepare", "train", "compile@main-O0", "compile@main-O2", "compile@util-O0",
        "compile@util-O2", "plot@loss", "plot@accuracy", "cc@main", "cc@net.io", "link"]
    assert project.pools == {"console": 1, "link": 1}
    assert project.stages["cc@net.io"].depfile == "build/net.io.d"
    assert project.stages["link"].deps == ["build/main.o", "build/net.io.o"]
    assert project.stages["link"].cmd == ["cc -o bin/app build/main.o build/net.io.o"]
    metrics, loss = project.stages["train"].outs[1:3]
    assert (metrics.metric, loss.plot) == (True, {"x": "step", "y": ["loss"], "title": "loss",
                                                  "template": "linear"})
    assert project.stages["prepare"].cmd == ["python prepare.py --seed 42"]
    assert project.stages["train"].param_values == {"train.lr": 0.01, "train.epochs": 10}
    plot = project.stages["plot@loss"]
    assert plot.wdir == "scripts"
    assert plot.deps == ["metrics.json", "scripts/plot.py"]
    assert plot.outs == [Out(path="plots/loss.svg")]
    assert "${TMPDIR}" in plot.cmd[0]


# --- SPEC §8: the project's own files are never outs ---------------------------------------


@pytest.mark.parametrize(("out", "problem"), [
    (".git", "path is or lies inside a git repository (.git), which can never be an output"),
    (".git/config", "path is or lies inside a git repository (.git)"),
    ("a/.git/x", "path is or lies inside a git repository (.git)"),
    (".GIT", "path is or lies inside a git repository (.git)"),
    ("pivot.toml", "path is the pipeline file pivot.toml, which can never be an output"),
    ("Pivot.TOML", "path is the pipeline file pivot.toml"),
    ("params.toml", "path is the params file params.toml, which can never be an output"),
    ("x.pvt", "path is a tracked-path record (*.pvt), which can never be an output"),
    ("d/x.PVT", "path is a tracked-path record (*.pvt)"),
    (".pivotbuild/x", "path lies inside .pivotbuild/, which pivotbuild manages"),
])
def test_project_files_are_never_outs(tmp_path: Path, out: str, problem: str) -> None:
    message = error(tmp_path, f'[stages.s]\ncmd = "c"\nouts = ["ok", "{out}"]\n')
    assert message.startswith(f"pivot.toml: stages.s.outs[1]: {problem}")
    assert message.endswith((f"which can never be an output: {out!r}",
                             f"which pivotbuild manages: {out!r}"))


def test_project_files_as_outs_through_wdir_and_matrix(tmp_path: Path) -> None:
    assert error(tmp_path, '[stages.s]\ncmd = "c"\nwdir = "sub"\nouts = ["../params.toml"]\n') == (
        "pivot.toml: stages.s.outs[0]: path is the params file params.toml, which can never be "
        "an output: '../params.toml'")
    assert error(tmp_path, '[stages.s]\nforeach = ["a", ".git"]\ncmd = "c"\n'
                 'outs = ["${item}/x"]\n') == (
        "pivot.toml: stages.s.outs[0]: path is or lies inside a git repository (.git), which "
        "can never be an output: '${item}/x' (in s@.git)")


def test_an_out_directory_holding_a_git_repository_is_refused(tmp_path: Path) -> None:
    (tmp_path / "vendor" / "lib").mkdir(parents=True)
    (tmp_path / "vendor" / "lib" / ".git").write_text("gitdir: ../../.git/modules/lib\n")
    message = error(tmp_path, '[stages.s]\ncmd = "c"\nouts = ["vendor/lib"]\n')
    assert message == ("pivot.toml: stages.s.outs[0]: path holds a git repository "
                       "(vendor/lib/.git), which can never be an output: 'vendor/lib'")
    # Deps may be anything in the project, pivot.toml, .git and records included.
    project = load(tmp_path, '[stages.s]\ncmd = "c"\ndeps = ["pivot.toml", "vendor/lib", '
                             '"x.pvt", ".git/HEAD"]\nouts = ["vendor/out"]\n')
    assert project.stages["s"].deps == ["pivot.toml", "vendor/lib", "x.pvt", ".git/HEAD"]


def test_protected_files_lists_params_files() -> None:
    from pivotbuild.paths import protected_files

    assert protected_files(["params.toml", "conf/params.yaml"]) == {
        "pivot.toml": "the pipeline file pivot.toml",
        "params.toml": "the params file params.toml",
        "conf/params.yaml": "the params file conf/params.yaml",
    }


# --- SPEC §8: stage names that fit their lock file's name -----------------------------------


def test_stage_name_length_limit(tmp_path: Path) -> None:
    assert "a" * 250 in load(tmp_path, f'[stages.{"a" * 250}]\ncmd = "c"\n').stages
    message = error(tmp_path, f'[stages.{"a" * 251}]\ncmd = "c"\n')
    assert message.startswith(f"pivot.toml: stages.{'a' * 251}: stage name ")
    assert message.endswith("is 251 bytes: too long for its lock file's name (at most 250 bytes)")
    wide = "é" * 124  # "m@" + 248 bytes
    assert f"m@{wide}" in load(tmp_path, f'[stages.m]\nforeach = ["{wide}"]\ncmd = "c"\n').stages
    message = error(tmp_path, f'[stages.m]\nforeach = ["x", "{wide}é"]\ncmd = "c"\n')
    assert message.startswith("pivot.toml: stages.m.foreach[1]: stage name 'm@éé")
    assert "is 252 bytes: too long" in message
    message = error(tmp_path, f'[stages.m]\nmatrix = {{a = ["{"x" * 200}"], b = ["{"y" * 60}"]}}'
                              '\ncmd = "c"\n')
    assert message.startswith("pivot.toml: stages.m.matrix.a[0]: stage name ")
    assert "is 263 bytes" in message


# --- SPEC §8: credentials never in a remote URL ---------------------------------------------

SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY"


@pytest.mark.parametrize("url", [
    f"s3://AKIDEXAMPLE:{SECRET}@bucket/prefix",
    f"s3://AKIDEXAMPLE:{SECRET[:10]}/{SECRET[10:]}@bucket/prefix",
    f"s3://token{SECRET}@bucket/prefix",
    f"https://user:{SECRET}@host/cache",
    f"https://user:a/{SECRET}@host:8080/cache",
    f"s3://bucket/p?secret_key={SECRET}",
    f"s3://bucket/p?region=eu&aws_secret_access_key={SECRET}",
    f"https://host/p?X-Amz-Signature={SECRET}",
    f"https://host/p?sig={SECRET}",
    f"https://host/p?password={SECRET}",
    f"https://host/p?apiKey={SECRET}",
    f"https://host/p#access_token={SECRET}",
    f"s3://bucket/AKIAIOSFODNN7EXAMPLE/{SECRET}",
])
def test_credentials_in_a_url_are_refused_without_echoing_them(tmp_path: Path, url: str) -> None:
    message = error(tmp_path, f'[remotes.origin]\nurl = "{url}"\n')
    assert message.startswith("pivot.toml: remotes.origin.url: the URL holds ")
    assert "credentials never go in a URL" in message
    assert SECRET[:10] not in message and SECRET[10:] not in message and "AKIA" not in message
    local = tmp_path / ".pivotbuild" / "config.local.toml"
    local.parent.mkdir(exist_ok=True)
    local.write_text(f'[remotes.origin]\nurl = "{url}"\n')
    message = error(tmp_path, '[remotes.origin]\nurl = "s3://bucket/p"\n')
    assert message.startswith(".pivotbuild/config.local.toml: remotes.origin.url: the URL holds ")
    assert SECRET[:10] not in message and SECRET[10:] not in message
    local.unlink()
    message = error(tmp_path, f'[remotes.origin]\nurl = "s3://b/p"\nendpoint_url = "{url}"\n')
    assert message.startswith("pivot.toml: remotes.origin.endpoint_url: the URL holds ")


@pytest.mark.parametrize("url", [
    "/srv/cache", "../cache@2", "file:///srv/cache", "s3://bucket/prefix",
    "s3://bucket/p?region=eu-west-1", "https://host:8080/a@b/cache", "sftp://deploy@host/srv",
    "gs://bucket/prefix?passive=1", "abfs://container@account.dfs.core.windows.net/p",
])
def test_urls_without_secrets_are_accepted(tmp_path: Path, url: str) -> None:
    assert load(tmp_path, f'[remotes.origin]\nurl = "{url}"\n').remotes["origin"].url == url


def test_a_url_typed_into_the_wrong_key_is_not_echoed(tmp_path: Path) -> None:
    message = error(tmp_path, '[project]\njobs = "s3://k:hunter2@b"\n')
    assert "hunter2" not in message and message.startswith("pivot.toml: project.jobs: ")


@pytest.mark.parametrize(("url", "shown"), [
    ("s3://KEY:se/cret@bucket/p", "s3://***@bucket/p"),
    ("https://user:pw@host:8080/c?region=eu&token=abc",
     "https://***@host:8080/c?region=eu&token=***"),
    ("sftp://deploy@host/srv", "sftp://***@host/srv"),
    ("https://host:8080/a@b", "https://host:8080/a@b"),
    ("/srv/cache", "/srv/cache"),
    ("s3://bucket/AKIAIOSFODNN7EXAMPLE/x", "s3://bucket/***/x"),
])
def test_redact_url(url: str, shown: str) -> None:
    from pivotbuild.urls import redact_url

    assert redact_url(url) == shown


def test_redact_text_masks_every_userinfo_in_a_message() -> None:
    from pivotbuild.urls import redact_text

    assert redact_text("cannot reach 'https://u:p@h/x' nor s3://K:S/x@b/p: no") == (
        "cannot reach 'https://***@h/x' nor s3://***@b/p: no")
    assert redact_text("plain message, mail me@example.com") == (
        "plain message, mail me@example.com")


def test_a_params_value_a_lock_cannot_record_is_a_config_error(tmp_path: Path) -> None:
    toml = '[stages.s]\ncmd = "c"\nparams = ["seed", "train"]\n'
    assert error(tmp_path, toml, "seed = 1\n[train]\nlr = 0.1\nsteps = [1, 07:30:00]\n") == (
        "pivot.toml: stages.s.params[1]: 'train.steps[1]' is a time in params.toml: a lock "
        "records params as JSON, which has no dates or times (write it as a string)")
    assert error(tmp_path, '[stages.s]\ncmd = "c"\nparams = ["when"]\n',
                 "when = 2024-01-01T00:00:00Z\n").startswith(
        "pivot.toml: stages.s.params[0]: 'when' is a datetime in params.toml")
    # A date used only in ${params...} templating is fine: it becomes text.
    project = load(tmp_path, '[stages.s]\ncmd = "echo ${params.when}"\n', "when = 2024-01-01\n")
    assert project.stages["s"].cmd == ["echo 2024-01-01"]
