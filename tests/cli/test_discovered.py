"""Discovered deps end to end (SPEC §9 depfiles, §13 discover = ["python"]): the small C project
of tests/data/cproject built with gcc's depfiles, and Python stages whose imports are recorded.

What a user notices: which stages recompile after a header edit (the same units ``gcc -MM``
lists as its includers), that a comment-only edit leaves objects byte-identical and skips the
link, the ``--explain`` and ``status --json`` reasons, the run cache restoring the objects of
an older header, and the locks' ``discovered`` lists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pivotbuild import depfile
from tests.cli.conftest import run

CPROJECT = Path(__file__).resolve().parent.parent / "data" / "cproject"
CFLAGS = "-Iinclude -Isrc -Ibuild/gen -O2"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def _make_project() -> object:
    """tests/data/cproject/make_project.py as a module (it says what includes what)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_project", CPROJECT / "make_project.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MP = _make_project()


def unit_key(source: str) -> str:
    return source.removeprefix("src/").removesuffix(".c").replace("/", ".")


def write_cproject(root: Path, log: Path) -> list[str]:
    """The C project with a pivot.toml (one stage per translation unit, written out: no glob
    needed), each compile and the link appending its name to ``log``; the cc stage names."""
    MP.write(root)  # type: ignore[attr-defined]
    generated = MP.GENERATED  # type: ignore[attr-defined]
    readers = MP.includers()[generated]  # type: ignore[attr-defined]
    lines = ["[stages.gen]",
             f'cmd = "mkdir -p build/gen && sed s/@VERSION@/1.4.2/ config.in > {generated}"',
             'deps = ["config.in"]', f'outs = ["{generated}"]', ""]
    objects, names = [], []
    for source in MP.SOURCES:  # type: ignore[attr-defined]
        key = unit_key(source)
        obj, dep = f"build/obj/{key}.o", f"build/obj/{key}.d"
        deps = [source] + ([generated] if source in readers else [])
        objects.append(obj)
        names.append(f"cc_{key}")
        lines += [f'[stages."cc_{key}"]',
                  (f'cmd = "gcc {CFLAGS} -MMD -MP -MF {dep} -c {source} -o {obj} '
                   f'&& echo cc_{key} >> {log}"'),
                  f"deps = {json.dumps(deps)}", f'outs = ["{obj}"]', f'depfile = "{dep}"', ""]
    lines += ["[stages.link]", f'cmd = "gcc -o bin/app {" ".join(objects)} && echo link >> {log}"',
              f"deps = {json.dumps(objects)}", 'outs = ["bin/app"]', ""]
    (root / "pivot.toml").write_text("\n".join(lines))
    return names


def gcc_headers(root: Path, source: str) -> set[str]:
    """The project headers ``gcc -MM`` lists for a unit (what Make would rebuild it for)."""
    proc = subprocess.run(["gcc", *CFLAGS.split(), "-MM", source], cwd=root, check=True,
                          capture_output=True)
    return set(depfile.discovered(depfile.parse(proc.stdout), root, ".", [source]))


def ran(log: Path) -> list[str]:
    """The stages that ran since the log was last emptied (and empty it)."""
    names = log.read_text().split() if log.exists() else []
    log.write_text("")
    return names


def lock(root: Path, stage: str) -> dict:
    return json.loads((root / ".pivotbuild" / "locks" / f"{stage}.json").read_text())


def actions(result_out: str) -> dict[str, str]:
    return {s["name"]: s["action"] for s in json.loads(result_out)["stages"]}


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """The C project, fully built once: (root, run log, cc stage names)."""
    root, log = tmp_path / "proj", tmp_path / "runs.log"
    root.mkdir()
    names = write_cproject(root, log)
    result = run(["repro", "-j2"], root)
    assert result.code == 0, result.err
    assert sorted(ran(log)) == sorted([*names, "link"])
    out = subprocess.run([str(root / "bin" / "app")], check=True, capture_output=True, text=True)
    assert out.stdout == MP.expected_output()  # type: ignore[attr-defined]
    return root, log, names


def test_the_locks_record_what_gcc_M_lists_and_the_depfiles_are_gone(built):
    root, _log, _names = built
    for source in MP.SOURCES:  # type: ignore[attr-defined]
        doc = lock(root, f"cc_{unit_key(source)}")
        declared = {d["path"] for d in doc["deps"]}
        assert [d["path"] for d in doc["discovered"]] == sorted(
            gcc_headers(root, source) - declared), source
        assert not (root / "build" / "obj" / f"{unit_key(source)}.d").exists()
    assert "discovered" not in lock(root, "link")  # no depfile: no key
    # a generated header is a declared dep, never a discovered one
    assert "build/gen/config.h" in {d["path"] for d in lock(root, "cc_main")["deps"]}


@pytest.mark.parametrize("header", [
    "include/inner.h",  # read only through outer.h
    "src/util/strbuf.h",  # also reached as ../util/strbuf.h
    "include/third party/vendor.h",  # a space in the path
])
def test_editing_a_header_recompiles_exactly_the_units_gcc_M_names(built, header):
    root, log, _names = built
    expected = {f"cc_{unit_key(s)}" for s in MP.SOURCES  # type: ignore[attr-defined]
                if header in gcc_headers(root, s)}
    assert expected  # every header here has includers
    with open(root / header, "a") as f:
        f.write("#define PB_EDITED 1\nint pb_edited(void);\n")
    status = run(["status", "--json"], root)
    stale = {s["name"] for s in json.loads(status.out)["stages"] if s["status"] == "stale"}
    assert stale - {"link"} == expected
    result = run(["repro", "-j2"], root)
    assert result.code == 0, result.err
    assert set(ran(log)) - {"link"} == expected
    assert run(["status", "-q"], root).code == 0


def test_a_comment_only_header_edit_recompiles_includers_identically_and_skips_the_link(built):
    root, log, names = built
    objects = {p: p.read_bytes() for p in (root / "build" / "obj").glob("*.o")}
    text = (root / "include" / "common.h").read_text()
    (root / "include" / "common.h").write_text(text.replace("generated by", "written by"))
    result = run(["repro", "--json"], root)
    assert result.code == 0, result.err
    assert sorted(ran(log)) == sorted(names)  # every unit includes common.h; no link
    done = actions(result.out)
    assert done["link"] == "skip" and all(done[n] == "run" for n in names)
    assert {p: p.read_bytes() for p in objects} == objects  # byte-identical objects


def test_explain_and_status_json_name_the_discovered_header(built):
    root, _log, _names = built
    with open(root / "include" / "pair.h", "a") as f:
        f.write("/* edited */\n")
    result = run(["repro", "--explain", "--dry-run"], root)
    assert result.code == 0, result.err
    assert "stage 'cc_net.io' run: dep changed: include/pair.h (discovered)" in result.err
    status = json.loads(run(["status", "--json"], root).out)
    reasons = {s["name"]: s["reasons"] for s in status["stages"]}
    assert reasons["cc_net.io"] == [
        {"kind": "dep-changed", "path": "include/pair.h", "detail": "discovered"}]
    (root / "include" / "inner.h").unlink()  # read through outer.h by three units
    status = json.loads(run(["status", "--json"], root).out)
    reasons = {s["name"]: s["reasons"] for s in status["stages"]}
    assert {"kind": "dep-missing", "path": "include/inner.h", "detail": "discovered"} in \
        reasons["cc_util.list"]


def test_the_run_cache_restores_objects_only_for_the_headers_they_were_built_with(built):
    root, log, _names = built
    header = root / "include" / "pair.h"
    original = header.read_text()
    first_obj = (root / "build" / "obj" / "net.io.o").read_bytes()
    header.write_text(original.replace("WEIGHT 1", "WEIGHT 2") + "int pb_more(void);\n")
    assert run(["repro"], root).code == 0
    assert set(ran(log)) - {"link"} == {"cc_net.io", "cc_util.strbuf"}
    header.write_text(original)  # back to the header the first objects were built with
    result = run(["repro", "--json"], root)
    assert result.code == 0, result.err
    done = actions(result.out)
    assert done["cc_net.io"] == done["cc_util.strbuf"] == "run-cache"
    assert ran(log) == []  # nothing compiled
    assert (root / "build" / "obj" / "net.io.o").read_bytes() == first_obj
    pair = [d for d in lock(root, "cc_net.io")["discovered"] if d["path"] == "include/pair.h"]
    assert pair[0]["size"] == len(original.encode())  # the entry's discovered deps, locked
    assert run(["status", "-q"], root).code == 0
    # a header content no run has seen: the run cache is not used
    header.write_text(original + "/* new */\n")
    assert actions(run(["repro", "--json"], root).out)["cc_net.io"] == "run"
    assert "cc_net.io" in ran(log)


def test_the_no_op_fast_path_sees_a_discovered_header_change(built):
    root, _log, _names = built
    assert run(["status"], root).code == 0  # leaves the snapshot the fast path answers from
    assert (root / ".pivotbuild" / "snapshot").exists()
    trace = run(["status"], root, env={"PIVOTBUILD_FASTPATH_TRACE": "1"})
    assert "fast path answered" in trace.err
    with open(root / "include" / "pair.h", "a") as f:
        f.write("/* edited */\n")
    status = run(["status"], root)
    assert "cc_net.io: stale" in status.out and "(discovered)" in status.out
    assert run(["status", "-q"], root).code == 1


def test_a_missing_or_malformed_depfile_fails_the_stage_naming_it(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "a.c").write_text("int a;\n")
    (root / "pivot.toml").write_text(
        '[stages.cc]\ncmd = "gcc -c a.c -o a.o"\ndeps = ["a.c"]\nouts = ["a.o"]\n'
        'depfile = "a.d"\n')
    result = run(["repro"], root)
    assert result.code == 1
    assert "depfile 'a.d' was not written by the stage's commands" in result.err
    assert not (root / ".pivotbuild" / "locks" / "cc.json").exists()
    (root / "pivot.toml").write_text(
        '[stages.cc]\ncmd = "gcc -c a.c -o a.o && printf \'a.o: a.c \\\\\\\\\' > a.d"\n'
        'deps = ["a.c"]\nouts = ["a.o"]\ndepfile = "a.d"\n')
    result = run(["repro"], root)
    assert result.code == 1
    lines = [line for line in result.err.splitlines() if "a.d" in line]
    assert len(lines) == 1 and "depfile 'a.d': line 1:" in lines[0], result.err
    assert "line continuation" in lines[0]
    assert not (root / ".pivotbuild" / "locks" / "cc.json").exists()
    assert (root / "a.d").exists()  # left for the user to look at


def test_a_depfile_declared_as_an_out_is_kept(tmp_path):
    root = tmp_path / "proj"
    (root / "inc").mkdir(parents=True)
    (root / "inc" / "a.h").write_text("#define A 1\n")
    (root / "a.c").write_text('#include "inc/a.h"\nint a = A;\n')
    (root / "pivot.toml").write_text(
        '[stages.cc]\ncmd = "gcc -MMD -MF a.d -c a.c -o a.o"\ndeps = ["a.c"]\n'
        'outs = ["a.o", "a.d"]\ndepfile = "a.d"\n')
    assert run(["repro"], root).code == 0
    assert (root / "a.d").exists()
    assert [d["path"] for d in lock(root, "cc")["discovered"]] == ["inc/a.h"]


def test_commit_records_a_depfile_on_disk_and_keeps_the_locks_list_rehashed(tmp_path):
    root = tmp_path / "proj"
    (root / "inc").mkdir(parents=True)
    (root / "inc" / "a.h").write_text("#define A 1\n")
    (root / "a.c").write_text('#include "inc/a.h"\nint a = A;\n')
    cmd = "gcc -MMD -MF a.d -c a.c -o a.o"
    (root / "pivot.toml").write_text(
        f'[stages.cc]\ncmd = "{cmd}"\ndeps = ["a.c"]\nouts = ["a.o"]\ndepfile = "a.d"\n')
    subprocess.run(cmd, shell=True, cwd=root, check=True)  # built by hand, as make would
    assert run(["commit"], root).code == 0
    assert [d["path"] for d in lock(root, "cc")["discovered"]] == ["inc/a.h"]
    assert (root / "a.d").exists()  # commit changes nothing in the workspace
    assert run(["status", "-q"], root).code == 0
    (root / "a.d").unlink()
    (root / "inc" / "a.h").write_text("#define A 1 /* same value */\n")
    assert run(["status", "-q"], root).code == 1
    assert run(["commit", "cc"], root).code == 0  # no depfile now: the lock's list, rehashed
    found = lock(root, "cc")["discovered"]
    assert [(d["path"], d["size"]) for d in found] == [("inc/a.h", 29)]
    assert run(["status", "-q"], root).code == 0


def test_a_second_clone_pulls_objects_through_the_remote_run_cache_with_their_headers(
        built, tmp_path):
    root, log, names = built
    remote = tmp_path / "remote"
    remote.mkdir()
    with open(root / "pivot.toml", "a") as f:
        f.write(f'\n[project]\ndefault_remote = "origin"\n\n[remotes.origin]\nurl = "{remote}"\n')
    pushed = run(["push", "--run-cache"], root)
    assert pushed.code == 0, pushed.err
    clone = tmp_path / "clone"
    clone.mkdir()
    MP.write(clone)  # type: ignore[attr-defined]
    shutil.copy(root / "pivot.toml", clone / "pivot.toml")  # no locks, no cache
    result = run(["repro", "--pull", "--json"], clone)
    assert result.code == 0, result.err
    done = actions(result.out)
    assert all(done[n] == "run-cache" for n in names), done
    assert ran(log) == []
    for name in names:  # the entries' discovered deps, fetched with them, are locked
        assert lock(clone, name)["discovered"] == lock(root, name)["discovered"]
    # in the clone too, a header edit recompiles its includers only
    with open(clone / "include" / "pair.h", "a") as f:
        f.write("int pb_clone(void);\n")
    stale = {s["name"] for s in json.loads(run(["status", "--json"], clone).out)["stages"]
             if s["status"] == "stale"}
    assert stale == {"cc_net.io", "cc_util.strbuf", "link"}  # link: upstream stale


SPEC_EXAMPLE = """\
[vars]
cc = "gcc"
cflags = "-Iinclude -Isrc -Ibuild/gen -O2"

[pools]
link = 1

[stages.gen]
cmd = "mkdir -p build/gen && sed s/@VERSION@/1.4.2/ config.in > build/gen/config.h"
deps = ["config.in"]
outs = ["build/gen/config.h"]

[stages.cc]
foreach = { glob = "src/**/*.c" }
cmd = "${cc} ${cflags} -MMD -MF build/${item.key}.d -c ${item.path} -o build/${item.key}.o"
deps = ["${item.path}", "build/gen/config.h"]
outs = ["build/${item.key}.o"]
depfile = "build/${item.key}.d"

[stages.link]
cmd = "${cc} -o bin/app ${stages.cc.outs}"
deps = ["${stages.cc.outs}"]
outs = ["bin/app"]
pool = "link"
"""


def test_the_spec_example_with_globs_and_a_group_reference(tmp_path):
    """SPEC §9's pivot.toml as written (glob instances, depfile, group reference, a pool)."""
    root = tmp_path / "proj"
    root.mkdir()
    MP.write(root)  # type: ignore[attr-defined]
    (root / "pivot.toml").write_text(SPEC_EXAMPLE)
    result = run(["repro", "-j2"], root)
    assert result.code == 0, result.err
    out = subprocess.run([str(root / "bin" / "app")], check=True, capture_output=True,
                         text=True)
    assert out.stdout == MP.expected_output()  # type: ignore[attr-defined]
    for source in MP.SOURCES:  # type: ignore[attr-defined]
        doc = lock(root, f"cc@{unit_key(source)}")
        assert [d["path"] for d in doc["discovered"]] == sorted(
            gcc_headers(root, source) - {"build/gen/config.h"})
    with open(root / "src" / "util" / "strbuf.h", "a") as f:
        f.write("int pb_more(void);\n")
    result = run(["repro", "--json"], root)
    assert result.code == 0, result.err
    ran_now = {name for name, action in actions(result.out).items() if action == "run"}
    assert ran_now == {"cc@util.strbuf", "cc@net.proto"}  # gcc -M: both read strbuf.h


# ---- discover = ["python"] (SPEC §13) ----------------------------------------------------------


PY_MAIN = """\
import json
import subprocess
import sys

from pkg import helpers

with open("out.txt", "w") as f:
    f.write(json.dumps(helpers.value()) + "\\n")
subprocess.run([sys.executable, "other.py"], check=True)
with open("runs.log", "a") as f:
    f.write("main\\n")
"""


@pytest.fixture
def pyproject(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "main.py").write_text(PY_MAIN)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "helpers.py").write_text("def value():\n    return 1\n")
    (root / "pkg" / "unrelated.py").write_text("X = 1\n")
    (root / "pkg" / "child.py").write_text("NAME = 'child'\n")
    (root / "other.py").write_text(
        "from pkg import child\nopen('child.txt', 'w').write(child.NAME)\n")
    (root / "pivot.toml").write_text(
        '[stages.py]\ncmd = "python3 main.py"\ndeps = ["main.py"]\n'
        'outs = ["out.txt", "child.txt", {path = "runs.log", cache = false, persist = true}]\n'
        'discover = ["python"]\n')
    result = run(["repro"], root)
    assert result.code == 0, result.err
    return root


def test_python_imports_and_a_child_interpreter_are_discovered(pyproject):
    root = pyproject
    found = [d["path"] for d in lock(root, "py")["discovered"]]
    # main.py is declared; the child's script and its import are covered too
    assert found == ["other.py", "pkg/__init__.py", "pkg/child.py", "pkg/helpers.py"]
    # nothing outside the project (json, subprocess: the standard library) is recorded
    assert all(not os.path.isabs(p) and (root / p).is_file() for p in found)
    records = root / ".pivotbuild" / "tmp" / "discover"
    assert not records.exists() or list(records.iterdir()) == []  # the record is removed


def test_a_changed_imported_module_makes_the_stage_stale_an_unrelated_one_does_not(pyproject):
    root = pyproject
    (root / "pkg" / "unrelated.py").write_text("X = 2\n")
    assert run(["status", "-q"], root).code == 0
    assert run(["repro"], root).code == 0
    assert (root / "runs.log").read_text() == "main\n"  # did not run again
    (root / "pkg" / "helpers.py").write_text("def value():\n    return 2\n")
    status = json.loads(run(["status", "--json"], root).out)
    assert status["stages"][0]["reasons"] == [
        {"kind": "dep-changed", "path": "pkg/helpers.py", "detail": "discovered"}]
    assert run(["repro"], root).code == 0
    assert (root / "out.txt").read_text() == "2\n"
    (root / "pkg" / "child.py").write_text("NAME = 'changed'\n")  # read by the child only
    result = run(["repro", "--explain"], root)
    assert "stage 'py' run: dep changed: pkg/child.py (discovered)" in result.err
    assert (root / "child.txt").read_text() == "changed"
    assert (root / "runs.log").read_text() == "main\n" * 3


def test_a_python_stage_keeps_a_pythonpath_it_was_given(tmp_path):
    root = tmp_path / "proj"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "mod.py").write_text("V = 3\n")
    (root / "pivot.toml").write_text(
        '[stages.py]\ncmd = "python3 -c \'import mod; open(\\"o\\", \\"w\\").write(str(mod.V))\'"'
        '\nouts = ["o"]\ndiscover = ["python"]\n')
    result = run(["repro"], root, env={"PYTHONPATH": str(root / "lib")})
    assert result.code == 0, result.err
    assert [d["path"] for d in lock(root, "py")["discovered"]] == ["lib/mod.py"]
