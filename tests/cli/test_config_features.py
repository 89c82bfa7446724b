"""Whole-command tests of pivot.toml's build features: globs, group references, --set,
params files (YAML, FILE:key) and the one-line errors for bad input (SPEC §9, §10)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import ran, run

# Each stage appends its name to runs.log, so a test can count what ran.
GLOB_PROJECT = """
[vars]
cc = "cp"

[stages.cc]
foreach = { glob = "src/**/*.c", exclude = ["skip_*.c"] }
cmd = "mkdir -p build && ${cc} ${item.path} build/${item.key}.o && echo ${item.key} >> runs.log"
deps = ["${item.path}"]
outs = ["build/${item.key}.o"]

[stages.link]
cmd = "cat ${stages.cc.outs} > app && echo link >> runs.log"
deps = ["${stages.cc.outs}"]
outs = ["app"]
"""


def glob_project(project: Path) -> Path:
    (project / "pivot.toml").write_text(GLOB_PROJECT)
    (project / "src" / "net").mkdir(parents=True)
    (project / "src" / "main.c").write_text("main\n")
    (project / "src" / "net" / "io.c").write_text("io\n")
    (project / "src" / "skip_me.c").write_text("skipped\n")
    return project


def test_glob_instances_and_group_reference_build(project: Path) -> None:
    root = glob_project(project)
    result = run(["repro"], root)
    assert result.code == 0, result.err
    assert sorted(ran(root)) == ["link", "main", "net.io"]
    assert (root / "app").read_text() == "main\nio\n"  # instance order: main, then net.io
    assert (root / ".pivotbuild" / "locks" / "cc@net.io.json").is_file()
    lock = json.loads((root / ".pivotbuild" / "locks" / "link.json").read_text())
    assert [d["path"] for d in lock["deps"]] == ["build/main.o", "build/net.io.o"]


def test_a_new_file_adds_an_instance_and_a_deleted_one_orphans_its_lock(project: Path) -> None:
    # The full path's answers (the no-op fast path keys its snapshot on Project.glob_dirs:
    # tests/cli/test_fastpath.py checks that route).
    env = {"PIVOTBUILD_NO_FASTPATH": "1"}
    root = glob_project(project)
    assert run(["repro"], root).code == 0
    assert run(["status"], root, env).out.endswith("Everything is up to date.\n")

    (root / "src" / "net" / "tcp.c").write_text("tcp\n")
    status = run(["status"], root, env)
    assert "cc@net.tcp: stale" in status.out
    assert "link: stale" in status.out
    (root / "runs.log").unlink()
    assert run(["repro"], root).code == 0
    assert sorted(ran(root)) == ["link", "net.tcp"]  # only the new instance and the link
    assert (root / "app").read_text() == "main\nio\ntcp\n"

    (root / "src" / "main.c").unlink()
    status = run(["status"], root, env)
    assert "cc@main: orphaned" in status.out
    assert "cc@main: stale" not in status.out
    doc = json.loads(run(["status", "--json"], root, env).out)
    assert doc["orphaned"] == ["cc@main"]
    assert "cc@main" not in [s["name"] for s in doc["stages"]]
    (root / "runs.log").unlink()
    assert run(["repro"], root).code == 0
    assert ran(root) == ["link"]
    assert (root / "app").read_text() == "io\ntcp\n"
    # Still listed after the repro, and by the fast path too (no snapshot is left then).
    assert "cc@main: orphaned" in run(["status"], root, env).out
    assert "cc@main: orphaned" in run(["status"], root).out
    assert "cc@main: orphaned" in run(["status"], root).out
    (root / ".pivotbuild" / "locks" / "cc@main.json").unlink()
    assert run(["status"], root, env).out.endswith("Everything is up to date.\n")


def test_group_reference_quoting_in_cmd(project: Path) -> None:
    (project / "pivot.toml").write_text("""
[stages.gen]
foreach = ["a", "b"]
cmd = "echo ${item} > 'out/${item} x.txt'"
outs = ["out/${item} x.txt"]

[stages.join]
cmd = "cat ${stages.gen.outs} > joined.txt"
deps = ["${stages.gen.outs}"]
outs = ["joined.txt"]
""")
    (project / "out").mkdir()
    result = run(["repro"], project)
    assert result.code == 0, result.err
    assert (project / "joined.txt").read_text() == "a\nb\n"


def test_set_overrides_the_cmd_and_makes_the_stage_stale(project: Path) -> None:
    (project / "pivot.toml").write_text("""
[vars]
cc = "gcc"
opt = { level = "2" }

[stages.build]
cmd = "echo ${cc} -O${opt.level} > out.txt && echo build >> runs.log"
outs = ["out.txt"]
""")
    assert run(["repro"], project).code == 0
    assert (project / "out.txt").read_text() == "gcc -O2\n"
    assert run(["status"], project).out.endswith("Everything is up to date.\n")

    status = run(["status", "--set", "cc=clang"], project)
    assert "build: stale" in status.out and "cmd changed" in status.out
    assert run(["repro", "--set", "cc=clang", "--set", "opt.level=0"], project).code == 0
    assert (project / "out.txt").read_text() == "clang -O0\n"
    assert ran(project) == ["build", "build"]
    # pivot.toml is unchanged: without --set the stage is stale again (for the fast path too).
    assert "build: stale" in run(["status"], project).out
    assert "build: stale" in run(["status"], project).out
    assert run(["dag", "--set", "cc=x"], project).code == 0
    assert run(["commit", "--set", "cc=clang", "--set", "opt.level=0"], project).code == 0


def test_set_is_never_served_by_the_fast_path(project: Path) -> None:
    (project / "pivot.toml").write_text('[vars]\nword = "a"\n[stages.s]\n'
                                        'cmd = "echo ${word} > o.txt"\nouts = ["o.txt"]\n')
    assert run(["repro"], project).code == 0
    for _ in range(2):  # the second status may be answered from the snapshot
        assert run(["status"], project).out.endswith("Everything is up to date.\n")
        assert "s: stale" in run(["status", "--set", "word=b"], project).out


def test_set_errors_exit_2_with_one_line(project: Path) -> None:
    (project / "pivot.toml").write_text('[vars]\ncc = "gcc"\n[stages.s]\ncmd = "true"\n')
    for args in (["status", "--set", "cxx=clang"], ["repro", "--set", "cxx=clang"],
                 ["dag", "--set", "cxx=1"], ["commit", "--set", "cxx=1"]):
        result = run(args, project)
        assert result.code == 2, args
        assert result.err == ("pivotbuild: error: --set cxx=...: no such variable in [vars] of "
                              "pivot.toml\n")
    result = run(["status", "--set", "cc"], project)
    assert result.code == 2
    assert "expected NAME=VALUE" in result.err


def test_yaml_params_and_file_key_make_exactly_the_right_stage_stale(project: Path) -> None:
    (project / "pivot.toml").write_text("""
[project]
params_file = "params.yaml"

[stages.train]
cmd = "echo train >> runs.log"
params = ["train.lr"]

[stages.evaluate]
cmd = "echo evaluate >> runs.log"
params = ["conf/eval.json:eval.k"]
""")
    (project / "params.yaml").write_text("train:\n  lr: 0.1\n")
    (project / "conf").mkdir()
    (project / "conf" / "eval.json").write_text('{"eval": {"k": 5}}')
    assert run(["repro"], project).code == 0
    lock = json.loads((project / ".pivotbuild" / "locks" / "evaluate.json").read_text())
    assert lock["params"] == {"conf/eval.json:eval.k": 5}

    (project / "conf" / "eval.json").write_text('{"eval": {"k": 10}}')
    doc = json.loads(run(["status", "--json"], project).out)
    by_name = {s["name"]: s for s in doc["stages"]}
    assert by_name["train"]["status"] == "up-to-date"
    assert by_name["evaluate"]["status"] == "stale"
    assert [r.get("key") for r in by_name["evaluate"]["reasons"]] == ["conf/eval.json:eval.k"]
    (project / "runs.log").unlink()
    assert run(["repro"], project).code == 0
    assert ran(project) == ["evaluate"]

    (project / "params.yaml").write_text("train:\n  lr: 0.2\n")
    text = run(["status"], project).out
    assert "train: stale" in text and "evaluate: up-to-date" in text
    (project / "runs.log").unlink()
    assert run(["repro"], project).code == 0
    assert ran(project) == ["train"]


def test_bad_input_is_one_line_exit_2(project: Path) -> None:
    cases = {
        '[stages.s]\ncmd = "x"\nforeach = { glob = "../*.c" }\n':
            "pivot.toml: stages.s.foreach.glob: glob '../*.c': escapes the project root",
        '[stages.s]\ncmd = "x"\ndeps = ["${stages.nope.outs}"]\n':
            "pivot.toml: stages.s.deps[0]: '${stages.nope.outs}': no stage named 'nope'",
        '[stages.s]\ncmd = "x"\nparams = ["p.yaml:a"]\n':
            "pivot.toml: stages.s.params[0]: params file 'p.yaml' does not exist",
        '[stages.s]\ncmd = "x"\npool = "gpu"\n':
            "pivot.toml: stages.s.pool: no pool named 'gpu'",
        '[project]\nparams_file = "p.yaml"\n[stages.s]\ncmd = "x"\nparams = ["a"]\n':
            "pivot.toml: stages.s.params[0]: 'a' not found in p.yaml (there is no p.yaml)",
    }
    for toml, message in cases.items():
        (project / "pivot.toml").write_text(toml)
        for command in (["status"], ["repro"]):
            result = run(command, project)
            assert result.code == 2, (toml, result.err)
            assert result.err.startswith(f"pivotbuild: error: {message}"), result.err
            assert result.err.count("\n") == 1
    (project / "pivot.toml").write_text('[project]\nparams_file = "p.yaml"\n')
    (project / "p.yaml").write_text("a: [1\n")
    result = run(["status"], project)
    assert result.code == 2
    assert result.err.startswith("pivotbuild: error: p.yaml: line 2: invalid YAML: ")
    assert result.err.count("\n") == 1
