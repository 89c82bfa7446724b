"""Tests for glob stage expansion, ${stages.NAME.outs} group references (SPEC §9) and params
files (SPEC §10) in pivot.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from pivotbuild.config import Project, load_project
from pivotbuild.errors import EXIT_USAGE, ConfigError
from pivotbuild.paths import PROJECT_FILE


def write(root: Path, toml: str, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / PROJECT_FILE).write_text(toml)
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def load(root: Path, toml: str, files: dict[str, str] | None = None) -> Project:
    return load_project(write(root, toml, files))


def error(root: Path, toml: str, files: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(root, toml, files)
    assert info.value.exit_code == EXIT_USAGE
    message = str(info.value)
    assert "\n" not in message
    return message


SOURCES = {"src/main.c": "", "src/net/io.c": "", "src/net/io.h": "", "src/amalgam.c": "",
           "src/.hidden.c": "", "other/x.c": ""}

CBUILD = """
[vars]
cc = "gcc"
src = "src"

[stages.link]
cmd = "${cc} -o bin/app ${stages.cc.outs}"
deps = ["${stages.cc.outs}", "main.ld"]
outs = ["bin/app"]

[stages.cc]
foreach = { glob = "${src}/**/*.c", exclude = ["amalgam.c"] }
cmd = "${cc} -c ${item.path} -o build/${item.key}.o  # ${item.name} ${item.stem} ${item.dir}"
deps = ["${item.path}"]
outs = ["build/${item.key}.o"]
"""


# --- globs ------------------------------------------------------------------------------------


def test_glob_foreach_instances_and_fields(tmp_path: Path) -> None:
    project = load(tmp_path, CBUILD, SOURCES)
    assert list(project.stages) == ["link", "cc@main", "cc@net.io"]  # definition order
    io = project.stages["cc@net.io"]
    assert io.cmd == ["gcc -c src/net/io.c -o build/net.io.o  # io.c io src/net"]
    assert io.deps == ["src/net/io.c"]
    assert [o.path for o in io.outs] == ["build/net.io.o"]
    assert io.base == "cc"
    assert project.glob_dirs == ("src", "src/net")


def test_a_new_and_a_deleted_file_change_the_instances(tmp_path: Path) -> None:
    root = write(tmp_path, CBUILD, SOURCES)
    (root / "src/net/tcp.c").write_text("")
    (root / "src/main.c").unlink()
    assert [s for s in load_project(root).stages if s.startswith("cc")] == [
        "cc@net.io", "cc@net.tcp"]


def test_glob_matrix_axis(tmp_path: Path) -> None:
    project = load(tmp_path, """
[stages.t]
matrix = { f = { glob = "src/*.c" }, opt = ["O0", "O2"] }
cmd = "cc -${item.opt} ${item.f.path} -o ${item.f.stem}-${item.opt}"
""", SOURCES)
    assert list(project.stages) == ["t@amalgam-O0", "t@amalgam-O2", "t@main-O0", "t@main-O2"]
    assert project.stages["t@main-O2"].cmd == ["cc -O2 src/main.c -o main-O2"]


def test_a_glob_matching_nothing_gives_no_instance(tmp_path: Path) -> None:
    project = load(tmp_path, """
[stages.t]
foreach = { glob = "nowhere/*.c" }
cmd = "x ${item.path}"

[stages.link]
cmd = "ld ${stages.t.outs}"
deps = ["${stages.t.outs}"]
""")
    assert list(project.stages) == ["link"]
    assert project.stages["link"].cmd == ["ld "]
    assert project.glob_dirs == ("nowhere",)  # its appearance must be noticed


@pytest.mark.parametrize(("foreach", "expected"), [
    ('{ glob = "../*.c" }', ("pivot.toml: stages.t.foreach.glob: glob '../*.c': escapes the "
     "project root")),
    ('{ glob = "src/*.c", exclude = ["a/"] }', ("pivot.toml: stages.t.foreach.exclude[0]: "
     "glob 'a/': ends in '/'")),
    ('{ glob = "${nope}/*.c" }', ("pivot.toml: stages.t.foreach.glob: undefined variable "
     "'${nope}'")),
    ('{ glob = "src/*.c", x = 1 }', "pivot.toml: stages.t.foreach.x: unknown key"),
    ('{ exclude = [] }', "pivot.toml: stages.t.foreach.glob: required key is missing"),
    ('"src/*.c"', ("pivot.toml: stages.t.foreach: expected an array of values or a table "
     "{ glob = PATTERN }, got string 'src/*.c'")),
    ('{ glob = "**/io.*" }', ("pivot.toml: stages.t.foreach.glob: glob '**/io.*': "
     "'src/net/io.c' and 'src/net/io.h' both give the key 'src.net.io'")),
])
def test_glob_errors(tmp_path: Path, foreach: str, expected: str) -> None:
    message = error(tmp_path, f'[stages.t]\nforeach = {foreach}\ncmd = "x"\n', SOURCES)
    assert message.startswith(expected), message


def test_glob_matrix_errors_and_name_problems(tmp_path: Path) -> None:
    message = error(tmp_path, '[stages.t]\nmatrix = { f = { glob = "[" } }\ncmd = "x"\n')
    assert message.startswith("pivot.toml: stages.t.matrix.f.glob: glob '['"), message
    message = error(tmp_path / "b", '[stages.t]\nforeach = { glob = "*.c" }\ncmd = "x"\n',
                    {"a b.c": ""})
    assert message == ("pivot.toml: stages.t.foreach.glob: generated stage name 't@a b' "
                       "contains whitespace")


# --- group references -------------------------------------------------------------------------


def test_group_reference_in_deps_and_cmd(tmp_path: Path) -> None:
    link = load(tmp_path, CBUILD, SOURCES).stages["link"]
    assert link.deps == ["build/main.o", "build/net.io.o", "main.ld"]
    assert link.cmd == ["gcc -o bin/app build/main.o build/net.io.o"]


def test_group_reference_quotes_and_follows_wdir(tmp_path: Path) -> None:
    project = load(tmp_path, """
[stages.gen]
foreach = ["a", "c"]
cmd = "touch out/${item}.txt"
outs = ["out/${item} 1.txt", "out/${item}.log"]

[stages.pack]
wdir = "pkg"
cmd = ["tar cf x.tar ${stages.gen.outs}", "echo '$${stages.gen.outs}'"]
deps = ["${ stages.gen.outs }"]
""")
    pack = project.stages["pack"]
    assert pack.deps == ["out/a 1.txt", "out/a.log", "out/c 1.txt", "out/c.log"]
    assert pack.cmd == [("tar cf x.tar '../out/a 1.txt' ../out/a.log '../out/c 1.txt' "
                        "../out/c.log"), "echo '${stages.gen.outs}'"]


def test_a_dotted_stage_name_can_be_referenced(tmp_path: Path) -> None:
    project = load(tmp_path, """
[stages."gen.v2"]
cmd = "x"
outs = ["o"]

[stages.use]
cmd = "cat ${stages.gen.v2.outs}"
deps = ["${stages.gen.v2.outs}"]
""")
    assert project.stages["use"].cmd == ["cat o"]


@pytest.mark.parametrize(("toml", "expected"), [
    ('[stages.a]\ncmd = "x"\ndeps = ["${stages.ghost.outs}"]\n',
     "pivot.toml: stages.a.deps[0]: '${stages.ghost.outs}': no stage named 'ghost'"),
    ('[stages.a]\ncmd = "x ${stages.a.outs}"\nouts = ["o"]\n',
     "pivot.toml: stages.a.cmd: '${stages.a.outs}' refers to this stage's own outs"),
    (('[stages.a]\ncmd = "x"\ndeps = ["${stages.b.outs}"]\nouts = ["a"]\n'
     '[stages.b]\ncmd = "y ${stages.a.outs}"\nouts = ["b"]\n'),
     "pivot.toml: stages.b.cmd: group references form a cycle: a -> b -> a"),
    (('[stages.a]\ncmd = "x"\nouts = ["o"]\n[stages.b]\ncmd = "y"\n'
     'deps = ["${stages.a.outs}/x"]\n'),
     ("pivot.toml: stages.b.deps[0]: a ${stages.NAME.outs} reference can only be a whole deps "
     "entry or part of cmd")),
    (('[stages.a]\ncmd = "x"\nouts = ["o"]\n[stages.b]\ncmd = "y"\n'
     'outs = ["${stages.a.outs}"]\n'),
     "pivot.toml: stages.b.outs[0]: a ${stages.NAME.outs} reference can only be"),
    (('[stages.a]\ncmd = "x"\nouts = ["o"]\n[stages.b]\ncmd = "y"\n'
     'deps = ["o", "${stages.a.outs}"]\n'),
     "pivot.toml: stages.b.deps[1]: 'o' is listed twice (also deps[0])"),
    ('[vars]\nstages = "x"\n', "pivot.toml: vars.stages: 'stages' is a reserved name"),
])
def test_group_reference_errors(tmp_path: Path, toml: str, expected: str) -> None:
    message = error(tmp_path, toml)
    assert message.startswith(expected), message


# --- params files -----------------------------------------------------------------------------


def test_yaml_params_file_and_file_key_entries(tmp_path: Path) -> None:
    project = load(tmp_path, """
[project]
params_file = "params.yaml"

[stages.train]
cmd = "python train.py --lr ${params.train.lr}"
params = ["train.lr", "conf/eval.json:eval.k", "extra.toml:seed", "params.yaml:train.epochs"]
""", {"params.yaml": "train:\n  lr: 0.1\n  epochs: 3\n",
      "conf/eval.json": '{"eval": {"k": [1, 5]}}', "extra.toml": "seed = 7\n"})
    train = project.stages["train"]
    assert train.cmd == ["python train.py --lr 0.1"]
    assert train.params == ["train.lr", "conf/eval.json:eval.k", "extra.toml:seed",
                            "params.yaml:train.epochs"]
    assert train.param_values == {"train.lr": 0.1, "conf/eval.json:eval.k": [1, 5],
                                  "extra.toml:seed": 7, "params.yaml:train.epochs": 3}
    assert project.params_file == "params.yaml"
    assert project.sources == (PROJECT_FILE, "params.yaml", "conf/eval.json", "extra.toml")


def test_the_yml_extension_and_an_empty_yaml_file(tmp_path: Path) -> None:
    project = load(tmp_path, '[project]\nparams_file = "p.yml"\n', {"p.yml": ""})
    assert project.params == {}


@pytest.mark.parametrize(("toml", "files", "expected"), [
    ('params = ["other.yaml:a"]', {},
     "pivot.toml: stages.s.params[0]: params file 'other.yaml' does not exist"),
    ('params = ["other.yaml:b"]', {"other.yaml": "a: 1\n"},
     "pivot.toml: stages.s.params[0]: 'b' not found in other.yaml"),
    ('params = ["other.txt:b"]', {},
     "pivot.toml: stages.s.params[0]: params file of 'other.txt:b': expected a .toml"),
    ('params = ["../o.yaml:b"]', {},
     "pivot.toml: stages.s.params[0]: params file of '../o.yaml:b': path escapes"),
    ('params = [":b"]', {}, "pivot.toml: stages.s.params[0]: malformed params entry ':b'"),
    ('params = ["pivot.toml:stages"]', {}, ("pivot.toml: stages.s.params[0]: params file of "
     "'pivot.toml:stages': pivot.toml is the pipeline file, not a params file")),
    ('params = ["o.yaml:"]', {}, "pivot.toml: stages.s.params[0]: malformed params key"),
    ('params = ["o.yaml:a"]', {"o.yaml": "a: [1\n"}, "o.yaml: line 2: invalid YAML:"),
    ('params = ["o.yaml:a"]', {"o.yaml": "- 1\n"},
     "o.yaml: expected a table (mapping) at the top, got array"),
    ('params = ["o.json:a"]', {"o.json": "{"}, "o.json: invalid JSON:"),
    ('params = ["o.yaml:d"]', {"o.yaml": "d: 2024-01-01\n"},
     "pivot.toml: stages.s.params[0]: 'd' is a date in o.yaml: a lock records params"),
    ('params = ["o.yaml:a"]\nouts = ["o.yaml"]', {"o.yaml": "a: 1\n"},
     ("pivot.toml: stages.s.outs[0]: path is the params file o.yaml, which can never be an "
     "output")),
])
def test_params_file_errors(tmp_path: Path, toml: str, files: dict[str, str],
                            expected: str) -> None:
    message = error(tmp_path, f'[stages.s]\ncmd = "x"\n{toml}\n', files)
    assert message.startswith(expected), message


def test_another_stage_may_not_write_a_params_file_read(tmp_path: Path) -> None:
    message = error(tmp_path, """
[stages.w]
cmd = "x"
outs = ["conf"]

[stages.r]
cmd = "y"
params = ["conf/p.yaml:a"]
""", {"conf/p.yaml": "a: 1\n"})
    assert message == ("pivot.toml: stages.w.outs[0]: path holds the params file conf/p.yaml, "
                       "which can never be an output: 'conf'")


@pytest.mark.parametrize(("value", "expected"), [
    ('"params.txt"', "pivot.toml: project.params_file: 'params.txt': expected a .toml"),
    ('"../p.yaml"', "pivot.toml: project.params_file: path escapes the project root"),
    ('".pivotbuild/p.yaml"', "pivot.toml: project.params_file: not usable as a params file"),
])
def test_params_file_setting_errors(tmp_path: Path, value: str, expected: str) -> None:
    message = error(tmp_path, f"[project]\nparams_file = {value}\n")
    assert message.startswith(expected), message


def test_the_default_params_file_is_protected_when_renamed(tmp_path: Path) -> None:
    message = error(tmp_path, '[project]\nparams_file = "p.json"\n[stages.s]\ncmd = "x"\n'
                    'outs = ["p.json"]\n', {"p.json": "{}"})
    assert message.startswith("pivot.toml: stages.s.outs[0]: path is the params file p.json")
    # params.toml is an ordinary file then
    assert load(tmp_path / "b", '[project]\nparams_file = "p.json"\n[stages.s]\ncmd = "x"\n'
                'outs = ["params.toml"]\n').stages["s"].outs[0].path == "params.toml"


def test_yaml_exponents_without_a_dot_are_floats(tmp_path: Path) -> None:
    # PyYAML (YAML 1.1) alone reads 1e-3 as a string; DVC and JSON read a number.
    project = load(tmp_path, '[project]\nparams_file = "params.yaml"\n[stages.s]\ncmd = "x"\n'
                   'params = ["lr", "big", "text"]\n',
                   {"params.yaml": 'lr: 1e-3\nbig: -2E+2\ntext: "1e-3"\n'})
    assert project.stages["s"].param_values == {"lr": 0.001, "big": -200.0, "text": "1e-3"}
    import yaml

    assert yaml.safe_load("a: 1e-3") == {"a": "1e-3"}  # the stock loaders are untouched


def test_set_override_reaches_a_glob_pattern(tmp_path: Path) -> None:
    root = write(tmp_path, CBUILD, {**SOURCES, "lib/z.c": ""})
    project = load_project(root, {"src": "lib", "cc": "clang"})
    assert [n for n in project.stages if n.startswith("cc")] == ["cc@z"]
    assert project.stages["link"].cmd == ["clang -o bin/app build/z.o"]
    assert project.glob_dirs == ("lib",)


def test_a_long_chain_of_group_references_loads_in_order(tmp_path: Path) -> None:
    n = 1500  # deeper than Python's default recursion limit
    tables = [f'[stages.s{i}]\ncmd = "x ${{stages.s{i + 1}.outs}}"\ndeps = ["${{stages.s{i + 1}'
              f'.outs}}"]\nouts = ["o{i}"]\n' for i in range(n)]
    tables.append(f'[stages.s{n}]\ncmd = "x"\nouts = ["o{n}"]\n')
    project = load(tmp_path, "\n".join(tables))
    assert list(project.stages)[:2] == ["s0", "s1"]  # definition order
    assert project.stages["s0"].deps == ["o1"]
    assert project.stages["s0"].cmd == ["x o1"]


def test_a_longer_cycle_is_named_in_order(tmp_path: Path) -> None:
    message = error(tmp_path, "".join(
        f'[stages.{a}]\ncmd = "x"\ndeps = ["${{stages.{b}.outs}}"]\nouts = ["{a}"]\n'
        for a, b in (("a", "b"), ("b", "c"), ("c", "a"))))
    assert message == ("pivot.toml: stages.c.deps[0]: group references form a cycle: "
                       "a -> b -> c -> a")
