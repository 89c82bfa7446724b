"""The no-op fast path (fastpath.py, snapshot.py): same answers as the full path, and every
change that can make a stage stale sends the next command to the full path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pivotbuild import fastpath

from .conftest import Result, run

TRACE = {"PIVOTBUILD_FASTPATH_TRACE": "1"}
FULL = {"PIVOTBUILD_NO_FASTPATH": "1"}

PIPELINE = """\
[stages.gen]
cmd = "python3 -c \\"import sys; open('data.txt','w').write(open('src.txt').read()*2)\\""
deps = ["src.txt"]
outs = ["data.txt"]
params = ["gen.n"]

[stages.tree]
cmd = "mkdir -p tree && cp data.txt tree/a && echo b > tree/b"
deps = ["data.txt"]
outs = ["tree"]

[stages.sq]
foreach = ["x", "y"]
cmd = "cat tree/a > out-${item}.txt"
deps = ["tree"]
outs = ["out-${item}.txt"]

[stages.ice]
cmd = "echo never > ice.txt"
outs = ["ice.txt"]
frozen = true
"""


def fast(args: list[str], cwd: Path) -> Result:
    return run(args, cwd, env=TRACE)


def answered(result: Result) -> bool:
    return "pivotbuild: fast path answered" in result.err


def strip(text: str) -> str:
    """stderr without the trace line and the wall time of the summary."""
    lines = [line for line in text.splitlines() if "fast path" not in line]
    return "\n".join(line.rsplit(" in ", 1)[0] if line.startswith("pivotbuild: 0 ran") else line
                     for line in lines)


@pytest.fixture
def built(project: Path) -> Path:
    (project / "pivot.toml").write_text(PIPELINE)
    (project / "params.toml").write_text("[gen]\nn = 1\n")
    (project / "src.txt").write_text("hello\n")
    result = run(["repro"], project)
    assert result.code == 0, result.err
    return project


def settle(root: Path) -> None:
    """Let the files age past the racy window and let a full status leave a snapshot."""
    time.sleep(2.1)
    assert run(["status"], root, env=FULL).code == 0


@pytest.mark.parametrize("args", [
    ["status"], ["status", "--json"], ["status", "-q"], ["-q", "status"], ["status", "sq"],
    ["status", "sq@x", "ice"], ["repro"], ["repro", "--json"], ["repro", "-n"],
    ["repro", "-n", "--json"], ["repro", "-s", "sq@y", "--json"], ["-v", "repro"],
    ["repro", "-j", "2", "--explain"], ["verify"], ["verify", "--json"], ["dag"],
    ["dag", "--dot"], ["dag", "--mermaid"], ["dag", "--json"], ["dag", "tree"],
])
def test_fast_path_answers_as_the_full_path_does(built: Path, args: list[str]) -> None:
    settle(built)
    quick = fast(args, built)
    assert answered(quick), quick.err
    full = run(args, built, env=FULL)
    assert (quick.code, quick.out, strip(quick.err)) == (full.code, full.out, strip(full.err))


def test_fresh_outputs_are_rehashed_and_then_trusted(built: Path) -> None:
    # Right after a repro every output is inside the racy window: the snapshot marks them
    # untrusted, the fast path reads them again, and once they have aged it trusts them.
    assert run(["status"], built, env=FULL).code == 0
    first = fast(["status", "--json"], built)
    assert answered(first)
    time.sleep(2.1)
    assert answered(fast(["status"], built))
    snap = (built / ".pivotbuild" / "snapshot").read_bytes()
    assert answered(fast(["status"], built))
    assert (built / ".pivotbuild" / "snapshot").read_bytes() == snap  # nothing left to age


def stale_names(root: Path) -> dict[str, list[dict[str, str]]]:
    doc = json.loads(fast(["status", "--json"], root).out)
    return {s["name"]: s["reasons"] for s in doc["stages"] if s["status"] == "stale"}


def same_size_same_time(path: Path, old: str, new: str) -> None:
    """Rewrite a file's text without changing its size or its mtime."""
    st = path.stat()
    text = path.read_text()
    assert len(old) == len(new) and old in text
    path.write_text(text.replace(old, new))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_editing_pivot_toml_in_the_same_second_is_seen(built: Path) -> None:
    settle(built)
    same_size_same_time(built / "pivot.toml", "echo b > tree/b", "echo c > tree/b")
    result = fast(["status", "--json"], built)
    assert not answered(result)
    assert stale_names(built)["tree"] == [{"kind": "cmd-changed"}]


def test_editing_a_params_file_is_seen(built: Path) -> None:
    settle(built)
    same_size_same_time(built / "params.toml", "n = 1", "n = 2")
    assert stale_names(built)["gen"] == [{"kind": "params-changed", "key": "gen.n"}]


def test_removing_and_adding_a_lock_is_seen(built: Path) -> None:
    settle(built)
    lock = built / ".pivotbuild" / "locks" / "tree.json"
    saved = lock.read_bytes()
    lock.unlink()
    assert stale_names(built)["tree"] == [{"kind": "never-run"}]
    lock.write_bytes(saved)
    assert stale_names(built) == {}
    extra = built / ".pivotbuild" / "locks" / "ghost.json"
    extra.write_bytes(saved.replace(b'"stage": "tree"', b'"stage": "ghost"'))
    result = fast(["status"], built)
    assert not answered(result) and "the locks changed" in result.err


def test_git_checkout_of_older_locks_is_seen(built: Path) -> None:
    if shutil.which("git") is None:
        pytest.fail("git is required")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=built, check=True)
    subprocess.run([*git, "add", "-A", "-f", ".pivotbuild/locks", "src.txt"], cwd=built,
                   check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=built, check=True)
    (built / "src.txt").write_text("changed\n")
    assert run(["repro"], built).code == 0
    settle(built)
    subprocess.run([*git, "checkout", "-q", "HEAD", "--", ".pivotbuild/locks"], cwd=built,
                   check=True)
    stale = stale_names(built)
    assert {"gen", "tree", "sq@x", "sq@y"} <= set(stale)


def test_an_edit_inside_the_racy_window_is_seen(built: Path) -> None:
    # The snapshot is taken while src.txt is fresh; an edit that keeps size and mtime
    # must still be seen, because a fresh stat signature is never trusted. (Its mtime is
    # set ahead of the clock so that it stays inside the racy window however slowly the
    # commands below run; a file edited after its window has passed gets a new mtime.)
    (built / "src.txt").write_text("fresh\n")
    ahead = time.time_ns() + 60 * 10**9
    os.utime(built / "src.txt", ns=(ahead, ahead))
    assert run(["repro"], built).code == 0
    assert run(["status"], built, env=FULL).code == 0
    assert answered(fast(["status"], built))
    same_size_same_time(built / "src.txt", "fresh", "FRESH")
    assert stale_names(built)["gen"] == [{"kind": "dep-changed", "path": "src.txt"}]


def test_touched_and_changed_paths_go_to_the_full_path(built: Path) -> None:
    settle(built)
    os.utime(built / "src.txt")
    result = fast(["repro"], built)
    assert not answered(result) and result.code == 0
    assert "0 ran" in result.err
    settle(built)
    (built / "tree" / "b").chmod(0o644)
    (built / "tree" / "b").write_text("B\n")
    assert stale_names(built)["tree"] == [{"kind": "out-changed", "path": "tree"}]


def test_verify_with_a_missing_object_goes_to_the_full_path(built: Path) -> None:
    settle(built)
    objects = sorted((built / ".pivotbuild" / "cache" / "files").glob("*/*"))
    victim = next(p for p in objects if not p.name.endswith(".dir"))
    victim.chmod(0o644)
    victim.unlink()
    result = fast(["verify"], built)
    assert not answered(result) and result.code == 1


def test_a_held_project_lock_goes_to_the_full_path(built: Path) -> None:
    import fcntl

    settle(built)
    with open(built / ".pivotbuild" / "writer.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        result = fast(["repro"], built)
    assert result.code == 1 and "another pivotbuild is writing" in result.err


@pytest.mark.parametrize("argv", [
    ["status", "--remote"], ["repro", "-f"], ["repro", "--pull"], ["verify", "--cache"],
    ["--help"], ["status", "--help"], ["repro", "-j", "0"], ["dag", "--dot", "--json"],
    ["history"], ["-C"], ["repro", "--wait", "3"], [],
])
def test_command_lines_the_fast_path_leaves_to_click(argv: list[str]) -> None:
    assert fastpath.parse(argv) is None


def test_targets_that_are_paths_go_to_the_full_path(built: Path) -> None:
    settle(built)
    result = fast(["status", "tree"], built)
    assert answered(result)
    result = fast(["status", "tree/a"], built)
    assert not answered(result) and result.code == 0 and "tree: up-to-date" in result.out


# ---- property: for random pipelines and random edits, fast and full answers agree ----------

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

EDITS = ("edit-src", "touch-src", "edit-out", "delete-out", "edit-cmd", "edit-param",
         "delete-lock", "repro", "full-status", "wait")


def _pipeline(deps: list[list[int]]) -> str:
    tables = []
    for i, ups in enumerate(deps):
        inputs = ["src.txt", *(f"o{u}.txt" for u in ups)]
        tables.append(
            f'[stages.s{i}]\ncmd = "cat {" ".join(inputs)} > o{i}.txt"\n'
            f"deps = {json.dumps(inputs)}\nouts = [\"o{i}.txt\"]\nparams = [\"p.s{i}\"]\n")
    return "\n".join(tables)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[list[int]], list[tuple[str, int]]]:
    n = draw(st.integers(min_value=1, max_value=4))
    deps = [sorted(draw(st.sets(st.integers(0, i - 1), max_size=2))) if i else []
            for i in range(n)]
    edits = draw(st.lists(st.tuples(st.sampled_from(EDITS), st.integers(0, n - 1)),
                          min_size=2, max_size=6))
    return deps, edits


@pytest.mark.slow
@hypothesis.settings(max_examples=8, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(scenarios())
def test_fast_and_full_paths_agree_after_random_edits(
        tmp_path_factory: pytest.TempPathFactory,
        scenario: tuple[list[list[int]], list[tuple[str, int]]]) -> None:
    deps, edits = scenario
    root = tmp_path_factory.mktemp("prop")
    (root / "pivot.toml").write_text(_pipeline(deps))
    (root / "params.toml").write_text("[p]\n" + "".join(f"s{i} = 0\n" for i in range(len(deps))))
    (root / "src.txt").write_text("0\n")
    assert run(["repro"], root).code == 0
    assert run(["status"], root, env=FULL).code == 0
    for step, (edit, i) in enumerate(edits):
        if edit == "edit-src":
            same_size_same_time(root / "src.txt", (root / "src.txt").read_text()[0],
                                str(step % 10))
        elif edit == "touch-src":
            os.utime(root / "src.txt")
        elif edit == "edit-out" and (root / f"o{i}.txt").exists():
            out = root / f"o{i}.txt"
            out.unlink()
            out.write_text("tampered\n")
        elif edit == "delete-out":
            (root / f"o{i}.txt").unlink(missing_ok=True)
        elif edit == "edit-cmd":
            text = (root / "pivot.toml").read_text()
            (root / "pivot.toml").write_text(text.replace(f"> o{i}.txt", f">  o{i}.txt", 1))
        elif edit == "edit-param":
            text = (root / "params.toml").read_text()
            (root / "params.toml").write_text(text.replace(f"s{i} = ", f"s{i} = 1", 1))
        elif edit == "delete-lock":
            (root / ".pivotbuild" / "locks" / f"s{i}.json").unlink(missing_ok=True)
        elif edit == "repro":
            assert run(["repro"], root).code == 0
        elif edit == "full-status":
            run(["status"], root, env=FULL)
        else:
            time.sleep(2.1)
        for args in (["status", "--json"], ["dag", "--json"], ["verify", "--json"]):
            quick = fast(args, root)
            full = run(args, root, env=FULL)
            assert (quick.code, quick.out) == (full.code, full.out), (edit, args, quick.err)


def test_a_dep_reached_through_a_symlink_gets_no_snapshot(project: Path) -> None:
    (project / "real").mkdir()
    (project / "real" / "in.txt").write_text("x\n")
    (project / "link").symlink_to("real")
    (project / "pivot.toml").write_text(
        '[stages.a]\ncmd = "cat link/in.txt > out.txt"\ndeps = ["link/in.txt"]\n'
        'outs = ["out.txt"]\n')
    assert run(["repro"], project).code == 0
    settle(project)
    result = fast(["status"], project)
    assert not answered(result) and "a: up-to-date" in result.out
    assert not (project / ".pivotbuild" / "snapshot").exists()


# ---- a directory dep: checked by its memo and its directory stamps ---------------------------

TREE_PIPELINE = """\
[stages.count]
cmd = "find data -type f | sort > count.txt"
deps = ["data"]
outs = ["count.txt"]
"""
OLD_NS = 1_000_000_000 * 1_000_000_000  # 2001: far outside the racy window


def _age(top: Path) -> None:
    """Old mtimes for everything below top (and top), deepest first."""
    for dirpath, _dirs, files in os.walk(top, topdown=False):
        for name in files:
            os.utime(os.path.join(dirpath, name), ns=(OLD_NS, OLD_NS))
        os.utime(dirpath, ns=(OLD_NS, OLD_NS))


@pytest.fixture
def tree_project(project: Path) -> Path:
    (project / "pivot.toml").write_text(TREE_PIPELINE)
    for rel in ("data/a/x", "data/a/b/y", "data/top"):
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(rel + "\n")
    (project / "data" / "empty").mkdir()
    assert run(["repro"], project).code == 0
    _age(project / "data")
    assert run(["status"], project, env=FULL).code == 0  # a snapshot with trusted stamps
    return project


def test_a_directory_dep_is_checked_by_its_memo_and_stamps(tree_project: Path) -> None:
    from pivotbuild import snapshot

    root = tree_project
    doc = snapshot.load(os.path.realpath(root))
    assert doc is not None
    [(rel, _hash, tree)] = doc["stages"][0][5]
    assert rel == "data" and tree is not None
    assert sorted(s[0] for s in tree[2]) == ["", "a", "a/b", "empty"]
    assert all(trusted for *_, trusted in tree[2])
    assert answered(fast(["status"], root))
    # A directory whose mtime moved without a change of names: listed again, still fast.
    os.utime(root / "data" / "a")
    quick = fast(["status", "--json"], root)
    assert answered(quick) and quick.out == run(["status", "--json"], root, env=FULL).out


@pytest.mark.parametrize("change", [
    "new file deep", "new file in an empty directory", "new directory with a file",
    "renamed", "file replaced by a directory", "edited", "removed",
])
def test_a_change_inside_a_directory_dep_is_seen(tree_project: Path, change: str) -> None:
    data = tree_project / "data"
    if change == "new file deep":
        (data / "a" / "b" / "new").write_text("n\n")
    elif change == "new file in an empty directory":
        (data / "empty" / "new").write_text("n\n")
    elif change == "new directory with a file":
        (data / "empty" / "sub").mkdir()
        (data / "empty" / "sub" / "f").write_text("n\n")
    elif change == "renamed":
        (data / "a" / "x").rename(data / "a" / "z")
    elif change == "file replaced by a directory":
        (data / "top").unlink()
        (data / "top").mkdir()
        (data / "top" / "f").write_text("data/top\n")
    elif change == "edited":
        (data / "a" / "b" / "y").write_text("changed\n")
    else:
        (data / "a" / "b" / "y").unlink()
    result = fast(["status", "--json"], tree_project)
    assert not answered(result)
    assert stale_names(tree_project)["count"] == [{"kind": "dep-changed", "path": "data"}]


def test_a_new_empty_directory_in_a_directory_dep_changes_nothing(tree_project: Path) -> None:
    (tree_project / "data" / "a" / "new").mkdir()  # a manifest lists files only
    result = fast(["status"], tree_project)
    assert not answered(result) and "count: up-to-date" in result.out
    assert answered(fast(["status"], tree_project))  # the full path left a new snapshot


def test_a_memo_rewritten_after_an_edit_is_not_trusted(tree_project: Path) -> None:
    # `hash` reads the edited file and rewrites the directory's memo, whose records then
    # match every file's stat: the snapshot must not take the new memo's word for it.
    target = tree_project / "data" / "a" / "x"
    target.write_text(target.read_text().upper())
    os.utime(target, ns=(OLD_NS + 10**9, OLD_NS + 10**9))  # a new mtime, yet not racy
    assert run(["hash", "data"], tree_project).code == 0
    result = fast(["status", "--json"], tree_project)
    assert not answered(result)
    assert stale_names(tree_project)["count"] == [{"kind": "dep-changed", "path": "data"}]


# ---- start-up hygiene: what each command line imports ---------------------------------------

HEAVY = ("click", "pydantic", "networkx", "rich", "sqlite3")


def modules_after(args: list[str], cwd: Path) -> tuple[Result, set[str]]:
    """Run pivotbuild's entry point in a fresh interpreter; what it printed and which modules
    it had imported by the time it exited."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.__stderr__.write('MODULES ' + ' '.join(sys.modules)))\n"
        "from pivotbuild.entry import main\n"
        f"sys.argv = ['pivotbuild', *{args!r}]\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **TRACE}, timeout=300, check=False)
    err, _, names = proc.stderr.rpartition("MODULES ")
    return Result(proc.returncode, proc.stdout, err), set(names.split())


def test_version_and_help_import_no_command_module(project: Path) -> None:
    result, modules = modules_after(["--version"], project)
    assert result.code == 0 and result.out == "pivotbuild, version 0.1.0\n"
    assert {m for m in modules if m.startswith("pivotbuild")} == {"pivotbuild",
                                                                 "pivotbuild.entry"}
    result, modules = modules_after(["--help"], project)
    assert result.code == 0 and "status " in result.out and "repro " in result.out
    loaded = {m for m in modules if m.startswith("pivotbuild.cli.")}
    assert loaded <= {"pivotbuild.cli.common"}, loaded
    assert not {"pydantic", "networkx", "rich", "pivotbuild.fastpath"} & modules


def test_a_no_op_answered_fast_imports_nothing_heavy(built: Path) -> None:
    settle(built)
    result, modules = modules_after(["status"], built)
    assert answered(result) and "Everything is up to date." in result.out
    assert not {*HEAVY, "json", "pivotbuild.config"} & modules, {*HEAVY, "json"} & modules
    result, modules = modules_after(["repro", "--json"], built)
    assert answered(result) and json.loads(result.out)["ok"] is True
    assert not set(HEAVY) & modules, set(HEAVY) & modules


def test_the_lazy_command_table_matches_the_commands() -> None:
    import importlib

    import click

    from pivotbuild import cli
    from pivotbuild.cli import tools

    defined: dict[str, tuple[str, click.Command]] = {}
    here = Path(cli.__file__).parent
    for source in sorted(here.glob("*.py")):
        module = importlib.import_module(f"pivotbuild.cli.{source.stem}")
        if source.stem != "__init__" and hasattr(module, "COMMANDS"):
            assert source.stem in cli.COMMAND_MODULES, f"cli/{source.name} is not in the table"
            defined.update((c.name, (source.stem, c)) for c in module.COMMANDS)
    assert sorted(defined) == sorted(name for name, _, _ in cli.COMMAND_TABLE)
    for name, module_name, text in cli.COMMAND_TABLE:
        module, command = defined[name]
        assert module == module_name, name
        for limit in (20, 45, 74, 1000):  # what --help prints at any terminal width
            listed = click.Command(name, help=text).get_short_help_str(limit)
            assert listed == command.get_short_help_str(limit), name
    assert cli.COMPLETE_VAR == tools.COMPLETE_VAR


def test_help_lists_the_commands_as_their_modules_say(project: Path) -> None:
    lazy = run(["--help"], project)
    code = ("import sys\n"
            "from pivotbuild import cli\n"
            "for module in cli.COMMAND_MODULES:\n"
            "    cli.cli.load(module)  # every command loaded: listed from the commands\n"
            "sys.argv = ['pivotbuild', '--help']\n"
            "cli.main()\n")
    eager = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True,
                           text=True, timeout=300, check=False)
    assert lazy.code == 0 and eager.returncode == 0
    assert lazy.out == eager.stdout


# ---- the expansion's other inputs: params files of any kind, FILE:key files, globs -----------

def test_a_new_glob_match_is_seen(project: Path) -> None:
    (project / "pivot.toml").write_text(
        '[stages.cc]\nforeach = { glob = "src/**/*.c" }\n'
        'cmd = "mkdir -p out && cp ${item.path} out/${item.key}.o"\n'
        'deps = ["${item.path}"]\nouts = ["out/${item.key}.o"]\n')
    (project / "src" / "net").mkdir(parents=True)
    (project / "src" / "a.c").write_text("a\n")
    (project / "src" / "net" / "io.c").write_text("io\n")
    assert run(["repro"], project).code == 0
    settle(project)
    assert answered(fast(["status"], project))
    (project / "src" / "net" / "b.c").write_text("b\n")  # a match one level down
    result = fast(["status", "--json"], project)
    assert not answered(result) and "a directory a glob walked changed" in result.err
    assert stale_names(project) == {"cc@net.b": [{"kind": "never-run"}]}
    assert run(["repro"], project).code == 0
    settle(project)
    assert answered(fast(["status"], project))
    (project / "src" / "a.c").unlink()  # a match gone: its instance goes with it
    result = fast(["status"], project)
    assert not answered(result)
    assert "cc@a: orphaned" in result.out and "cc@net.b: up-to-date" in result.out


@pytest.mark.parametrize("params_file, text, edited", [
    ("params.yaml", "train:\n  lr: 1\n", "train:\n  lr: 2\n"),
    ("params.json", '{"train": {"lr": 1}}\n', '{"train": {"lr": 2}}\n'),
])
def test_editing_a_yaml_or_json_params_file_is_seen(project: Path, params_file: str, text: str,
                                                   edited: str) -> None:
    (project / "pivot.toml").write_text(
        f'[project]\nparams_file = "{params_file}"\n\n'
        '[stages.train]\ncmd = "echo trained > model.txt"\nparams = ["train.lr"]\n'
        'outs = ["model.txt"]\n')
    (project / params_file).write_text(text)
    assert run(["repro"], project).code == 0
    settle(project)
    assert answered(fast(["status"], project))
    same_size_same_time(project / params_file, text, edited)
    assert stale_names(project)["train"] == [{"kind": "params-changed", "key": "train.lr"}]


def test_editing_a_file_key_params_file_is_seen(project: Path) -> None:
    (project / "pivot.toml").write_text(
        '[stages.train]\ncmd = "echo trained > model.txt"\nparams = ["conf/other.yaml:lr"]\n'
        'outs = ["model.txt"]\n')
    (project / "conf").mkdir()
    (project / "conf" / "other.yaml").write_text("lr: 1\n")
    assert run(["repro"], project).code == 0
    settle(project)
    assert answered(fast(["status"], project))
    same_size_same_time(project / "conf" / "other.yaml", "lr: 1", "lr: 3")
    assert stale_names(project)["train"] == [
        {"kind": "params-changed", "key": "conf/other.yaml:lr"}]


def test_the_launcher_runs_the_entry_point(project: Path) -> None:
    launcher = Path(__file__).resolve().parents[2] / "scripts" / "pivotbuild"
    source = launcher.read_text()
    assert "import re" not in source  # what pip's entry-point wrapper would cost every run
    proc = subprocess.run([sys.executable, str(launcher), "--version"], cwd=project,
                          capture_output=True, text=True, timeout=300, check=False)
    assert (proc.returncode, proc.stdout) == (0, "pivotbuild, version 0.1.0\n")
    proc = subprocess.run([sys.executable, str(launcher), "status"], cwd=project,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and proc.stdout == "Everything is up to date.\n"
