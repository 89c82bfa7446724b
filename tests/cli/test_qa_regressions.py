"""Regressions found by trying the 2026-12 features as a user would (one test per bug)."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

from tests.cli.conftest import lock, ran, run


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_track_git_add_hint_can_be_pasted_from_a_subdirectory(project: Path) -> None:
    """The 'git add' hint quotes names with spaces and works from the directory track ran in."""
    _git(project, "init", "-q")
    sub = project / "sub dir"
    sub.mkdir()
    (sub / "my data.csv").write_text("a,b\n")
    result = run(["track", "my data.csv"], cwd=sub)
    assert result.code == 0, result.err
    hint = next(line for line in result.err.splitlines() if "To record this in git" in line)
    command = shlex.split(hint.split(": ", 1)[1])
    added = subprocess.run(command, check=False, cwd=sub, capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    staged = subprocess.run(["git", "diff", "--cached", "--name-only", "-z"], cwd=project,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    assert sorted(filter(None, staged)) == ["sub dir/.gitignore", "sub dir/my data.csv.pvt"]
    # After -C DIR the user's shell is still where it was: the hint names the root.
    (sub / "my data.csv").write_text("a,b\n1,2\n")
    moved = run(["-C", str(project), "track", "sub dir/my data.csv"], cwd=project.parent)
    assert moved.code == 0, moved.err
    hint = next(line for line in moved.err.splitlines() if "To record this in git" in line)
    added = subprocess.run(shlex.split(hint.split(": ", 1)[1]), check=False, cwd=project.parent,
                           capture_output=True, text=True)
    assert added.returncode == 0, added.stderr


def test_a_depfile_that_is_a_dep_is_refused_and_the_dep_survives(project: Path) -> None:
    """A depfile is deleted before each run: naming a dep (own or another stage's, or a file
    inside a dep directory) or another stage's out as one is a config error, nothing deleted."""
    (project / "in.c").write_text("int x;\n")
    (project / "src").mkdir()
    (project / "src" / "a.d").write_text("keep me\n")
    cases = {
        "in.c": "[stages.a]\ncmd = 'echo > o'\ndeps = ['in.c']\nouts = ['o']\n",
        "src/a.d": "[stages.a]\ncmd = 'echo > o'\nouts = ['o']\n"
                   "[stages.b]\ncmd = 'echo > p'\ndeps = ['src']\nouts = ['p']\n",
        "p": "[stages.a]\ncmd = 'echo > o'\nouts = ['o']\n"
             "[stages.b]\ncmd = 'echo > p'\nouts = ['p']\n",
    }
    for depfile, toml in cases.items():
        (project / "pivot.toml").write_text(toml.replace(
            "outs = ['o']\n", f"outs = ['o']\ndepfile = '{depfile}'\n"))
        for command in (["repro", "-f"], ["status"]):
            result = run(command, cwd=project)
            assert result.code == 2, (depfile, result.err)
            assert result.err.count("\n") == 1
            assert "stages.a.depfile" in result.err and repr(depfile) in result.err
    assert (project / "in.c").read_text() == "int x;\n"
    assert (project / "src" / "a.d").read_text() == "keep me\n"
    assert not (project / "o").exists()
    # Its own out (or a file inside its own out directory) stays allowed.
    (project / "pivot.toml").write_text(
        "[stages.a]\ncmd = 'mkdir -p b && echo o: in.c > b/a.d && echo > o'\ndeps = ['in.c']\n"
        "outs = ['o', 'b']\ndepfile = 'b/a.d'\n")
    assert run(["repro"], cwd=project).code == 0
    assert (project / "in.c").read_text() == "int x;\n"


def test_a_recursive_or_too_deep_params_file_is_named_not_pivot_toml(project: Path) -> None:
    """A YAML params file whose alias holds itself, or a JSON one nested too deeply, is a
    one-line config error naming that file (it used to blame pivot.toml)."""
    (project / "pivot.toml").write_text(
        "[project]\nparams_file = 'params.yaml'\n"
        "[stages.a]\ncmd = 'echo > o'\nouts = ['o']\nparams = ['train.lr', 'deep.json:k']\n")
    (project / "deep.json").write_text('{"k": 1}')
    (project / "params.yaml").write_text("train: &t\n  lr: 0.1\n  again: *t\n")
    result = run(["status"], cwd=project)
    assert result.code == 2
    assert result.err.startswith("pivotbuild: error: params.yaml: ") and "itself" in result.err
    assert result.err.count("\n") == 1
    # An alias used twice is not a cycle.
    (project / "params.yaml").write_text("base: &b [1, 2]\ntrain:\n  lr: *b\n  also: *b\n")
    assert run(["status"], cwd=project).code == 0
    (project / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    result = run(["status"], cwd=project)
    assert result.code == 2
    assert result.err.startswith("pivotbuild: error: deep.json: ")
    assert result.err.count("\n") == 1


def test_track_through_a_symlinked_directory_records_the_real_path(project: Path) -> None:
    """track dl/a with dl -> d records d/a in d/a.pvt: git can add it (a record written
    'through' dl was beyond a symlink for git), and a second track of either name agrees."""
    _git(project, "init", "-q")
    (project / "d").mkdir()
    (project / "d" / "a").write_text("data\n")
    (project / "dl").symlink_to("d")
    result = run(["track", "dl/a"], cwd=project)
    assert result.code == 0, result.err
    assert "git add d/.gitignore d/a.pvt" in result.err
    assert json.loads((project / "d" / "a.pvt").read_text())["path"] == "a"
    _git(project, "add", "d/.gitignore", "d/a.pvt")
    again = run(["track", "d/a"], cwd=project)
    assert again.code == 0 and "unchanged" in again.out
    status = json.loads(run(["status", "--json"], cwd=project).out)
    assert status["tracked"] == [{"path": "d/a", "status": "up-to-date"}]


def test_a_glob_with_shell_braces_matching_nothing_is_an_error(project: Path) -> None:
    """foreach = { glob = "src/{a,b}.c" } used to give zero instances silently (braces are
    literal), so a link over ${stages.cc.outs} ran on nothing."""
    (project / "src").mkdir()
    for name in ("a.c", "b.c"):
        (project / "src" / name).write_text("int x;\n")
    (project / "pivot.toml").write_text(
        "[stages.cc]\nforeach = { glob = 'src/{a,b}.c' }\ncmd = 'cp ${item.path} ${item.key}.o'\n"
        "deps = ['${item.path}']\nouts = ['${item.key}.o']\n")
    result = run(["list"], cwd=project)
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert "stages.cc.foreach.glob" in result.err and "{a,b}" in result.err
    # A file whose name really holds braces still matches literally.
    (project / "src" / "{a,b}.c").write_text("int y;\n")
    result = run(["list"], cwd=project)
    assert result.code == 0 and len(result.out.split()) == 1, result.err


def test_schema_lists_the_allowed_values_of_choice_fields(project: Path) -> None:
    """pivotbuild schema let an editor accept discover = ["ruby"] or executor.kind = "k8s",
    which loading refuses: the fixed choices are enums in the schema."""
    result = run(["schema"], cwd=project)
    assert result.code == 0
    defs = json.loads(result.out)["$defs"]
    assert defs["RawStage"]["properties"]["discover"]["items"]["enum"] == ["python"]
    assert defs["RawExecutor"]["properties"]["kind"]["enum"] == ["local", "dask"]
    (project / "pivot.toml").write_text("[stages.a]\ncmd = 'true'\ndiscover = ['ruby']\n")
    refused = run(["status"], cwd=project)
    assert refused.code == 2
    assert "stages.a.discover[0]: expected one of 'python', got string 'ruby'" in refused.err


def test_track_refuses_a_stage_depfile(project: Path) -> None:
    """A depfile is deleted before each run of its stage, so tracking it (or a directory
    holding it) is a usage error, as tracking an output is; nothing is recorded."""
    (project / "pivot.toml").write_text(
        "[stages.a]\ncmd = 'echo o: > dd/o.d; echo > o'\nouts = ['o']\ndepfile = 'dd/o.d'\n")
    (project / "dd").mkdir()
    (project / "dd" / "o.d").write_text("o:\n")
    for target in ("dd/o.d", "dd"):
        result = run(["track", target], cwd=project)
        assert result.code == 2, result.err
        assert result.err.count("\n") == 1 and "depfile of stage 'a'" in result.err
    assert not list(project.rglob("*.pvt"))


def test_a_foreach_table_without_glob_says_what_a_foreach_can_be(project: Path) -> None:
    """A DVC-style foreach over a table (or a typo like 'glb') was reported as
    'foreach.glob: required key is missing'; it now says what foreach accepts."""
    for axis, where in (("foreach = { us = 1, eu = 2 }", "stages.a.foreach"),
                        ("matrix = { x = { glb = '*.c' } }", "stages.a.matrix.x")):
        (project / "pivot.toml").write_text(f"[stages.a]\n{axis}\ncmd = 'true'\n")
        result = run(["list"], cwd=project)
        assert result.code == 2
        assert result.err.count("\n") == 1
        assert f"{where}: expected an array of values or a table {{ glob = PATTERN }}" \
            in result.err
        assert "without 'glob'" in result.err and ".glob: required" not in result.err


def test_a_glob_match_whose_name_the_shell_would_run_is_refused(project: Path) -> None:
    """${item.path} enters cmd unquoted: a file named 'src/$(touch pwned).c' ran the
    substitution. Such a match is a config error naming it; nothing runs; exclude works."""
    (project / "src").mkdir()
    (project / "src" / "ok.c").write_text("int x;\n")
    (project / "src" / "$(touch pwned).c").write_text("int y;\n")
    (project / "pivot.toml").write_text(
        "[stages.cc]\nforeach = { glob = 'src/*.c' }\ncmd = 'cat ${item.path} > ${item.stem}.o'\n"
        "deps = ['${item.path}']\nouts = ['${item.stem}.o']\n")
    result = run(["repro"], cwd=project)
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert "stages.cc.foreach.glob" in result.err and "src/$(touch pwned).c" in result.err
    assert not (project / "pwned").exists() and not (project / "ok.o").exists()
    (project / "pivot.toml").write_text((project / "pivot.toml").read_text().replace(
        "glob = 'src/*.c' }", "glob = 'src/*.c', exclude = ['$(*'] }"))
    result = run(["repro"], cwd=project)
    assert result.code == 0, result.err
    assert (project / "ok.o").read_text() == "int x;\n" and not (project / "pwned").exists()


def test_compdb_does_not_offer_a_mkdir_as_the_compile_command(project: Path) -> None:
    """Of a stage's commands, compdb took the first when none named the file: clangd got
    'mkdir -p build'. Now: the one naming the file, else the output, else the stage is left
    out with a warning."""
    (project / "a.c").write_text("int x;\n")
    (project / "pivot.toml").write_text(
        "[stages.gen]\ncmd = ['mkdir -p build', 'python3 gen.py']\ndeps = ['a.c']\n"
        "outs = ['build/a.o']\ndepfile = 'build/a.d'\n"
        "[stages.cc]\ncmd = ['mkdir -p obj', 'cc -MMD -MF obj/b.d -c -o obj/b.o a.c']\n"
        "deps = ['a.c']\nouts = ['obj/b.o']\ndepfile = 'obj/b.d'\n"
        "[stages.out]\ncmd = ['mkdir -p o2', 'tool --out o2/c.o']\ndeps = ['a.c']\n"
        "outs = ['o2/c.o']\ndepfile = 'o2/c.d'\n")
    result = run(["compdb"], cwd=project)
    assert result.code == 0
    entries = {e["output"]: e["command"] for e in json.loads(result.out)}
    assert entries == {"obj/b.o": "cc -MMD -MF obj/b.d -c -o obj/b.o a.c",
                       "o2/c.o": "tool --out o2/c.o"}
    assert "stage 'gen'" in result.err and "left out of compdb" in result.err


def test_a_byte_order_mark_is_named_not_an_invalid_statement(project: Path) -> None:
    """A pivot.toml saved with a BOM (Windows editors) read 'line 1: Invalid statement'; a
    JSON params file with one read 'decode using utf-8-sig'. Both now name the BOM."""
    (project / "pivot.toml").write_bytes(b"\xef\xbb\xbf[stages.a]\r\ncmd = 'true'\r\n")
    result = run(["list"], cwd=project)
    assert result.code == 2 and result.err.count("\n") == 1
    assert result.err.startswith("pivotbuild: error: pivot.toml: line 1: ") and "BOM" in result.err
    (project / "pivot.toml").write_text("[stages.a]\ncmd = 'true'\nparams = ['p.json:x']\n")
    (project / "p.json").write_bytes(b'\xef\xbb\xbf{"x": 1}')
    result = run(["list"], cwd=project)
    assert result.code == 2 and result.err.count("\n") == 1
    assert result.err.startswith("pivotbuild: error: p.json: line 1: ") and "BOM" in result.err


def test_checkout_of_an_older_lock_replaces_content_the_cache_holds(project: Path) -> None:
    """After 'git checkout' of an older .pvt or lock, checkout refused 'would clobber' files
    whose current content was committed (nothing to lose). Now it restores the old version;
    content the cache does not hold, and a stray file in an output directory, stay refused."""
    (project / "pivot.toml").write_text(
        "[stages.a]\ncmd = 'cp in.txt o && mkdir -p d && cp in.txt d/x'\n"
        "deps = ['in.txt']\nouts = ['o', 'd']\n")
    (project / "f").write_text("one\n")
    (project / "in.txt").write_text("one\n")
    assert run(["track", "f"], cwd=project).code == 0
    assert run(["repro"], cwd=project).code == 0
    old_pvt = (project / "f.pvt").read_bytes()
    lock_file = project / ".pivotbuild" / "locks" / "a.json"
    old_lock = lock_file.read_bytes()
    (project / "f").write_text("two\n")
    (project / "in.txt").write_text("two, with d/y\n")
    (project / "pivot.toml").write_text(
        (project / "pivot.toml").read_text().replace("cp in.txt d/x", "cp in.txt d/x && cp in.txt d/y"))
    assert run(["track", "f"], cwd=project).code == 0
    assert run(["repro"], cwd=project).code == 0
    assert (project / "d" / "y").exists()
    (project / "f.pvt").write_bytes(old_pvt)  # as 'git checkout HEAD~1 -- f.pvt' would
    lock_file.write_bytes(old_lock)
    result = run(["checkout"], cwd=project)
    assert result.code == 0, result.err
    assert (project / "f").read_text() == "one\n"
    assert (project / "o").read_text() == "one\n"
    assert sorted(p.name for p in (project / "d").iterdir()) == ["x"]
    assert (project / "d" / "x").read_text() == "one\n"
    # Content the cache does not hold is still refused, named, and left as it was.
    (project / "f").write_text("never committed\n")
    (project / "o").write_text("hand edit\n")
    (project / "d" / "stray").write_text("mine\n")
    result = run(["checkout"], cwd=project)
    assert result.code == 1
    for name in ("f", "o", "d/stray"):
        assert name in result.err
    assert (project / "f").read_text() == "never committed\n"
    assert (project / "o").read_text() == "hand edit\n"
    assert (project / "d" / "stray").read_text() == "mine\n"


def test_a_depfile_prerequisite_that_is_missing_keeps_the_stage_stale(project: Path) -> None:
    """A depfile naming a header that did not exist locked 'discovered: []', and creating the
    header later was never noticed. It is recorded with a null hash: the stage is stale
    (dep-missing, discovered) while it is missing, and runs again once it exists."""
    (project / "in.c").write_text("int x;\n")
    (project / "pivot.toml").write_text(
        "[stages.cc]\ncmd = 'echo cc >> runs.log && echo o: in.c gen.h > o.d && cp in.c o'\n"
        "deps = ['in.c']\nouts = ['o']\ndepfile = 'o.d'\n")
    assert run(["repro"], cwd=project).code == 0
    assert lock(project, "cc")["discovered"] == [{"hash": None, "path": "gen.h", "size": 0}]
    for _ in range(2):  # the no-op snapshot must not call it up to date either
        result = run(["status"], cwd=project)
        assert result.code == 0 and "gen.h" in result.out and "discovered" in result.out
    assert run(["repro"], cwd=project).code == 0
    assert ran(project) == ["cc", "cc"]
    (project / "gen.h").write_text("#define N 1\n")
    assert run(["repro"], cwd=project).code == 0
    assert ran(project) == ["cc", "cc", "cc"]
    assert lock(project, "cc")["discovered"][0]["hash"] is not None
    assert run(["repro"], cwd=project).code == 0
    assert ran(project) == ["cc", "cc", "cc"]


def test_a_glob_in_deps_is_hinted_at_in_status_and_repro(project: Path) -> None:
    """deps = ["src/*.c"] said only 'dep added: src/*.c' and 'missing dependency'; both now
    say that globs are not expanded in deps and point to foreach."""
    (project / "src").mkdir()
    (project / "src" / "a.c").write_text("int a;\n")
    (project / "pivot.toml").write_text(
        "[stages.a]\ncmd = 'echo > o'\ndeps = ['src/*.c']\nouts = ['o']\n")
    hint = "(globs are not expanded in deps; use foreach = { glob = ... })"
    status = run(["status"], cwd=project)
    assert status.code == 0 and f"dep missing: src/*.c {hint}" in status.out
    result = run(["repro"], cwd=project)
    assert result.code == 1 and result.err.count("missing dependency") == 1
    assert f"missing dependency 'src/*.c' {hint}" in result.err
    assert not (project / "o").exists()
    (project / "pivot.toml").write_text(  # a plain missing dep gets no hint
        "[stages.a]\ncmd = 'echo > o'\ndeps = ['src/b.c']\nouts = ['o']\n")
    result = run(["repro"], cwd=project)
    assert result.code == 1 and "globs" not in result.err


def test_import_dvc_names_a_stale_stage_once(project: Path) -> None:
    """'stale: a: a: not in dvc.lock': the reason repeated the stage's name."""
    (project / "pivot.toml").unlink()
    (project / ".dvc").mkdir()
    (project / "dvc.yaml").write_text(
        "stages:\n  a:\n    cmd: echo hi > o\n    outs:\n      - o\n"
        "  m:\n    foreach: [x]\n    do:\n      cmd: echo ${item} > m-${item}\n"
        "      outs:\n        - m-${item}\n")
    result = run(["import-dvc"], cwd=project)
    assert result.code == 0, result.err
    lines = [line for line in (result.out + result.err).splitlines() if "stale" in line]
    assert lines == ["stale: a: not in dvc.lock (DVC never ran it)",
                     "stale: m@x: not in dvc.lock (DVC never ran it)"]


def test_comparing_in_a_repository_without_commits_says_so(project: Path) -> None:
    """metrics diff / params diff / diff before the first commit said only "unknown revision
    'HEAD'"; they now say the repository has no commits yet (still a usage error)."""
    _git(project, "init", "-q")
    for command in (["metrics", "diff"], ["params", "diff"], ["diff"], ["metrics", "diff", "v1"]):
        result = run(command, cwd=project)
        assert result.code == 2, (command, result.err)
        assert result.err.count("\n") == 1 and "has no commits yet" in result.err, command


def test_a_glob_key_outside_the_stage_name_characters_is_a_config_error(project: Path) -> None:
    """'cc@ünï.é' was accepted although stage names are ASCII (SPEC §1): a glob match whose
    key holds another character is a one-line config error naming pivot.toml, the key and
    the file; exclude skips it."""
    (project / "src").mkdir()
    (project / "src" / "ok.c").write_text("int a;\n")
    (project / "src" / "ünï.é.c").write_text("int b;\n")
    (project / "pivot.toml").write_text(
        "[stages.cc]\nforeach = { glob = 'src/*.c' }\ncmd = 'echo ${item.key} >> runs.log'\n"
        "deps = ['${item.path}']\n")
    for command in (["status"], ["repro"], ["list"]):
        result = run(command, cwd=project)
        assert result.code == 2, (command, result.err)
        assert result.err.count("\n") == 1
        assert result.err.startswith("pivotbuild: error: pivot.toml: stages.cc.foreach.glob: ")
        assert "'src/ünï.é.c'" in result.err and "non-ASCII character 'ü'" in result.err
    assert ran(project) == []
    (project / "pivot.toml").write_text((project / "pivot.toml").read_text().replace(
        "'src/*.c' }", "'src/*.c', exclude = ['src/ünï.é.c'] }"))
    assert run(["repro"], cwd=project).code == 0
    assert ran(project) == ["ok"]
