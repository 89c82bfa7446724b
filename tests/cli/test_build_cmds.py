"""The Makefile-style build of SPEC §9 end to end on tests/data/cproject, and `clean` / `compdb`.

The project's pivot.toml is the one a C developer would write: a glob foreach compile with a
depfile, a generated header, and a link in a pool of one that takes the compiles' outs by a
group reference. What a user notices: the build links a working program; editing a header
recompiles exactly the units that include it (the set Make's -MMD depfiles and `gcc -M` give);
`clean` deletes outputs and nothing else (a later repro restores them from the cache without
running); `compdb` prints a compilation database whose commands build the objects.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import cproject_generator, run

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")

PIVOT_TOML = """\
[pools]
link = 1

[vars]
cc = "cc"
cflags = "-O2 -Wall"
log = "{log}"

[stages.config]
cmd = "sed s/@VERSION@/1.4.2/ config.in > build/gen/config.h"
deps = ["config.in"]
outs = ["build/gen/config.h"]

[stages.cc]
foreach = {{ glob = "src/**/*.c" }}
cmd = "${{cc}} -Iinclude -Isrc -Ibuild/gen ${{cflags}} -MMD -MP -MF build/obj/${{item.key}}.d \
-c ${{item.path}} -o build/obj/${{item.key}}.o && echo cc@${{item.key}} >> ${{log}}"
deps = ["${{item.path}}", "build/gen/config.h"]
outs = ["build/obj/${{item.key}}.o"]
depfile = "build/obj/${{item.key}}.d"

[stages.link]
cmd = "${{cc}} ${{cflags}} -o bin/app ${{stages.cc.outs}} && echo link >> ${{log}}"
deps = ["${{stages.cc.outs}}"]
outs = ["bin/app"]
pool = "link"
"""


GEN = cproject_generator()


def unit(source: str) -> str:
    """The cc instance of a source: src/net/io.c → cc@net.io."""
    return "cc@" + source.removeprefix("src/").removesuffix(".c").replace("/", ".")


def ran(log: Path) -> list[str]:
    """The stages whose command ran since the last call (the log is emptied)."""
    names = log.read_text().split() if log.exists() else []
    log.write_text("")
    return names


def write_project(root: Path, log: Path) -> None:
    GEN.write(root)
    (root / "pivot.toml").write_text(PIVOT_TOML.format(log=log))


def tree(root: Path, below: str) -> dict[str, bytes]:
    base = root / below
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The C project built once with `repro -j2`: (root, run log)."""
    base = tmp_path_factory.mktemp("cbuild")
    root, log = base / "proj", base / "runs.log"
    root.mkdir()
    write_project(root, log)
    result = run(["repro", "-j2"], root)
    assert result.code == 0, result.err
    assert sorted(ran(log)) == sorted([*(unit(s) for s in GEN.SOURCES), "link"])
    return root, log


def app_output(root: Path) -> str:
    return subprocess.run([str(root / "bin" / "app")], capture_output=True, text=True,
                          check=True).stdout


# ---- the build -------------------------------------------------------------------------------


def test_the_glob_depfile_group_reference_config_builds_a_working_program(built):
    root, log = built
    assert app_output(root) == GEN.expected_output()
    assert run(["status", "-q"], root).code == 0
    assert run(["repro", "-j2"], root).code == 0
    assert ran(log) == []  # up to date: nothing runs


@pytest.mark.parametrize("header", ["include/pair.h", "include/inner.h", "src/util/strbuf.h",
                                    "include/third party/vendor.h"])
def test_editing_a_header_recompiles_exactly_its_includers(built, header: str):
    """The units that recompile are the header's includers as gcc -M lists them (the
    generator's include graph, checked against gcc -M and Make in tests/test_depfile.py):
    a header of two units, one reached only through another header, one reached as
    ``../util/strbuf.h``, one in a directory whose name has a space."""
    root, log = built
    path = root / header
    before = path.read_bytes()
    try:
        path.write_bytes(before + b"int pb_edited_declaration(void);\n")
        result = run(["repro", "-j2"], root)
        assert result.code == 0, result.err
        assert set(ran(log)) - {"link"} == {unit(s) for s in GEN.includers()[header]}
        assert app_output(root) == GEN.expected_output()
    finally:
        path.write_bytes(before)
    result = run(["repro", "-j2"], root)  # back as it was: objects from the run cache
    assert result.code == 0, result.err
    assert ran(log) == []
    assert run(["status", "-q"], root).code == 0


# ---- clean -----------------------------------------------------------------------------------


def test_clean_deletes_every_output_and_nothing_else_then_repro_restores_without_running(
        tmp_path: Path):
    root, log = tmp_path / "proj", tmp_path / "runs.log"
    root.mkdir()
    write_project(root, log)
    assert run(["repro", "-j2"], root).code == 0
    ran(log)
    state_before = tree(root, ".pivotbuild")
    sources_before = tree(root, "src") | tree(root, "include")
    outs = ["build/gen/config.h", *(f"build/obj/{unit(s)[3:]}.o" for s in GEN.SOURCES),
            "bin/app"]
    assert all((root / o).exists() for o in outs)

    dry = run(["clean", "--dry-run"], root)
    assert dry.code == 0, dry.err
    assert sorted(dry.out.splitlines()) == sorted(f"Would remove {o}" for o in outs)
    assert all((root / o).exists() for o in outs)  # a dry run deletes nothing

    result = run(["clean"], root)
    assert result.code == 0, result.err
    assert {line for line in result.out.splitlines() if not line.endswith("(left empty)")} \
        == {f"Removed {o}" for o in outs}
    assert not any((root / o).exists() for o in outs)
    assert not (root / "build").exists() and not (root / "bin").exists()  # left empty
    state_after = tree(root, ".pivotbuild")
    state_after.pop(".pivotbuild/writer.lock", None)
    state_before.pop(".pivotbuild/writer.lock", None)
    assert state_after == state_before  # locks, cache, run cache: untouched
    assert tree(root, "src") | tree(root, "include") == sources_before

    result = run(["repro", "-j2"], root)
    assert result.code == 0, result.err
    assert ran(log) == []  # restored from the cache, nothing compiled
    assert app_output(root) == GEN.expected_output()


def test_clean_targets_a_stage_a_glob_base_or_an_output_path_only(built):
    root, log = built
    objects = sorted(str(p.relative_to(root)) for p in (root / "build/obj").glob("*.o"))
    result = run(["clean", "cc@net.io"], root)
    assert (result.code, result.out) == (0, "Removed build/obj/net.io.o\n")
    result = run(["clean", "bin/app"], root)  # an output path selects its stage
    assert (result.code, result.out) == (0, "Removed bin/app\nRemoved bin/ (left empty)\n")
    assert (root / "build/obj/main.o").exists() and (root / "build/gen/config.h").exists()
    result = run(["clean", "cc"], root)  # a base name: every instance, not the upstream
    assert result.code == 0
    assert sorted(result.out.splitlines()) == sorted(
        [*(f"Removed {o}" for o in objects if o != "build/obj/net.io.o"),
         "Removed build/obj/ (left empty)"])
    assert (root / "build/gen/config.h").exists()
    assert run(["repro", "-j2"], root).code == 0
    assert ran(log) == []  # all restored
    assert app_output(root) == GEN.expected_output()


def test_clean_of_an_unknown_target_exits_2_and_deletes_nothing(built):
    root, _log = built
    result = run(["clean", "cc@main", "nosuch"], root)
    assert result.code == 2
    assert result.err.strip() == "pivotbuild: error: unknown stage or output: 'nosuch'"
    assert (root / "build/obj/main.o").exists()


def test_clean_never_deletes_through_a_symlinked_directory_leading_outside(tmp_path: Path):
    root, outside = tmp_path / "proj", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "pivot.toml").write_text('[stages.a]\ncmd = "echo a > out/a.txt"\n'
                                     'outs = ["out/a.txt"]\n\n'
                                     '[stages.b]\ncmd = "echo b > b.txt"\nouts = ["b.txt"]\n')
    assert run(["repro"], root).code == 0
    shutil.rmtree(root / "out")
    (outside / "a.txt").write_text("precious\n")
    (root / "out").symlink_to(outside)
    result = run(["clean"], root)
    assert result.code == 1
    assert "out/a.txt: its directory resolves outside the project" in result.err
    assert (outside / "a.txt").read_text() == "precious\n"
    assert not (root / "b.txt").exists()  # the other stage is still cleaned


def test_clean_with_set_cleans_the_paths_the_override_names(tmp_path: Path):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pivot.toml").write_text('[vars]\nout = "first"\n\n[stages.a]\n'
                                     'cmd = "echo a > ${out}.txt"\nouts = ["${out}.txt"]\n')
    assert run(["repro"], root).code == 0
    (root / "second.txt").write_text("mine\n")
    result = run(["clean", "--set", "out=second"], root)
    assert (result.code, result.out) == (0, "Removed second.txt\n")
    assert (root / "first.txt").exists() and not (root / "second.txt").exists()
    assert run(["clean", "--set", "nosuch=1"], root).code == 2
    assert (root / "first.txt").exists()


def test_clean_keeps_a_frozen_stages_outputs_unless_it_is_named(tmp_path: Path):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pivot.toml").write_text('[stages.a]\ncmd = "echo a > a.txt"\nouts = ["a.txt"]\n')
    assert run(["repro"], root).code == 0
    (root / "pivot.toml").write_text('[stages.a]\ncmd = "echo a > a.txt"\nouts = ["a.txt"]\n'
                                     'frozen = true\n')
    result = run(["clean"], root)
    assert result.code == 0 and result.out == ""
    assert "kept the outputs of frozen stage 'a'" in result.err
    assert (root / "a.txt").exists()
    assert run(["clean", "a.txt"], root).out == "Removed a.txt\n"  # named by its output
    assert not (root / "a.txt").exists()


# ---- compdb ----------------------------------------------------------------------------------


def test_compdb_lists_every_translation_unit_with_a_command_that_builds_it(built, tmp_path):
    root, log = built
    result = run(["compdb"], root)
    assert result.code == 0, result.err
    entries = json.loads(result.out)
    assert sorted(e["file"] for e in entries) == sorted(GEN.SOURCES)  # the depfile stages
    for entry in entries:
        assert set(entry) == {"directory", "command", "file", "output"}
        assert entry["directory"] == str(root)
        key = entry["file"].removeprefix("src/").removesuffix(".c").replace("/", ".")
        assert entry["output"] == f"build/obj/{key}.o"
        assert entry["command"].startswith(f"cc -Iinclude -Isrc -Ibuild/gen -O2 -Wall -MMD -MP "
                                           f"-MF build/obj/{key}.d -c {entry['file']} -o ")
    # The command, run where the entry says, compiles its file to its output.
    entry = next(e for e in entries if e["file"] == "src/net/io.c")
    before = (root / entry["output"]).read_bytes()
    os.unlink(root / entry["output"])
    subprocess.run(entry["command"], shell=True, cwd=entry["directory"], check=True,
                   env={**os.environ, "PATH": os.environ["PATH"]})
    assert (root / entry["output"]).read_bytes() == before
    (root / "build/obj/net.io.d").unlink()  # what the command wrote beside it
    ran(log)


def test_compdb_named_stages_set_overrides_and_wdir(built, tmp_path: Path):
    root, _log = built
    result = run(["compdb", "--set", "cc=clang", "--set", "cflags=-O0", "cc@main", "link"],
                 root)
    assert result.code == 0, result.err
    entries = json.loads(result.out)
    assert [e["file"] for e in entries] == ["src/main.c", "build/obj/app.cli.o"]
    assert entries[0]["command"].startswith("clang -Iinclude -Isrc -Ibuild/gen -O0 -MMD")
    assert entries[1]["output"] == "bin/app" and entries[1]["command"].startswith("clang -O0")
    assert run(["compdb", "nosuch"], root).code == 2
    assert run(["compdb", "--set", "nosuch=1"], root).code == 2

    other = tmp_path / "wdir"
    (other / "sub").mkdir(parents=True)
    (other / "pivot.toml").write_text(
        '[stages.cc]\nwdir = "sub"\ncmd = "cc -c a.c -o ../obj/a.o"\n'
        'deps = ["a.c"]\nouts = ["../obj/a.o"]\ndepfile = "../obj/a.d"\n')
    entries = json.loads(run(["compdb"], other).out)
    assert entries == [{"directory": str(other / "sub"), "command": "cc -c a.c -o ../obj/a.o",
                        "file": "a.c", "output": "../obj/a.o"}]


# ---- examples/cbuild: what its comment says to try ------------------------------------------


def test_the_cbuild_examples_instructions_hold(tmp_path: Path):
    project = tmp_path / "cbuild"
    shutil.copytree(Path(__file__).resolve().parents[2] / "examples" / "cbuild", project,
                    ignore=shutil.ignore_patterns(".pivotbuild", "build", "bin",
                                                  "test-report.txt", "compile_commands.json"))
    first = run(["repro", "-j", "4", "--json"], project)
    assert first.code == 0, first.err
    assert len(json.loads(first.out)["stages"]) == 6  # compile@ x 4, link, selftest
    with open(project / "include" / "check.h", "a") as f:
        f.write("/* a comment */\n")
    status = json.loads(run(["status", "--json"], project).out)["stages"]
    assert [s["name"] for s in status if s["status"] == "stale"] == [
        "compile@selftest", "link", "selftest"]  # link and selftest: upstream-stale
    again = run(["repro", "--json"], project)
    actions = {s["name"]: s["action"] for s in json.loads(again.out)["stages"]}
    assert actions["compile@selftest"] == "run"
    assert actions["link"] == "skip" and actions["selftest"] == "skip"  # identical object
    entries = json.loads(run(["compdb"], project).out)
    assert sorted(e["file"] for e in entries) == [
        "src/main.c", "src/numbers.c", "src/primes.c", "src/selftest.c"]
    result = run(["clean"], project)
    assert result.code == 0 and not (project / "bin").exists()
    assert not (project / "test-report.txt").exists()
    restored = run(["repro", "--json"], project)
    actions = {s["name"]: s["action"] for s in json.loads(restored.out)["stages"]}
    assert actions.pop("selftest") == "run"  # its report is not cached
    assert set(actions.values()) == {"restore"}
