"""QA of the caches that spare a command its full work (the project cache, the no-op fast
path): each test is a way a demanding user got, or could get, a wrong answer from them."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from .conftest import git, ran, run

COPY = """\
[stages.a]
cmd = "cp in.txt out.txt && echo a >> runs.log"
deps = ["in.txt"]
outs = ["out.txt"]
"""


def _copy_project(root: Path) -> Path:
    (root / "pivot.toml").write_text(COPY)
    (root / "in.txt").write_text("one\n")
    (root / "sub").mkdir()
    return root / "sub"


def test_a_relative_cache_dir_env_means_the_working_directory_of_each_command(
        project: Path) -> None:
    # PIVOTBUILD_CACHE_DIR=cc names ./cc of the shell it is typed in: from sub/ it is sub/cc,
    # whatever the cached project or the snapshot, made from the root, resolved it to.
    sub = _copy_project(project)
    env = {"PIVOTBUILD_CACHE_DIR": "cc"}
    assert run(["repro"], project, env).code == 0
    assert run(["status"], project, env).code == 0  # keeps the project cache and snapshot
    assert (project / ".pivotbuild" / "project-cache").is_file()
    assert run(["verify"], project, env).code == 0
    for extra in ({}, {"PIVOTBUILD_NO_FASTPATH": "1"}):
        result = run(["verify"], sub, {**env, **extra})
        assert result.code == 1 and "cache object" in result.err, (extra, result)
    (project / "out.txt").unlink()
    assert run(["repro"], sub, env).code == 0
    assert list((sub / "cc" / "files").rglob("*")), "the out was not stored in sub/cc"
    assert run(["verify"], sub, env).code == 0


GLOB = """\
[stages.cc]
foreach = { glob = "src/*.c" }
cmd = "cp ${item.path} out/${item.stem}.o && echo ${item.stem} >> runs.log"
deps = ["${item.path}"]
outs = ["out/${item.stem}.o"]
"""


def _stage_names(root: Path, env: dict[str, str] | None = None) -> list[str]:
    result = run(["status", "--json"], root, env)
    assert result.code == 0, result.err
    return [stage["name"] for stage in json.loads(result.out)["stages"]]


def _status_three_ways(root: Path) -> list[list[str]]:
    """The stage names status lists: as a user runs it, without the fast path, and with no
    project cache either: the three must agree."""
    answers = [_stage_names(root), _stage_names(root, {"PIVOTBUILD_NO_FASTPATH": "1"})]
    (root / ".pivotbuild" / "project-cache").unlink(missing_ok=True)
    answers.append(_stage_names(root, {"PIVOTBUILD_NO_FASTPATH": "1"}))
    return answers


def test_a_globbed_symlink_whose_target_appears_or_goes_changes_the_stages(
        project: Path) -> None:
    (project / "pivot.toml").write_text(GLOB)
    for name in ("src", "lib", "out", ".pivotbuild"):
        (project / name).mkdir()
    (project / "src" / "a.c").write_text("a\n")
    (project / "src" / "b.c").symlink_to("../lib/b.c")  # dangling: matches nothing yet
    time.sleep(2.1)  # the glob's directories age out of the racy window (their ctimes)
    assert run(["repro"], project).code == 0
    assert _stage_names(project) == ["cc@a"]  # the project cache and snapshot are kept
    assert (project / ".pivotbuild" / "project-cache").is_file()
    (project / "lib" / "b.c").write_text("b\n")
    assert _status_three_ways(project) == [["cc@a", "cc@b"]] * 3
    assert run(["repro"], project).code == 0
    assert (project / "out" / "b.o").read_text() == "b\n"
    assert _stage_names(project) == ["cc@a", "cc@b"]
    (project / "lib" / "b.c").unlink()
    assert _status_three_ways(project) == [["cc@a"]] * 3


METRIC = """\
[stages.a]
cmd = "echo '{\\"acc\\": 1}' > m.json"
params = ["lr", "seed"]
outs = [{ path = "m.json", metric = true, cache = false }]
"""


@pytest.mark.parametrize("params", ["lr = 0.2\n", "lr = 0.2\nseed = \n"],
                         ids=["key-removed", "not-toml"])
def test_a_params_edit_that_breaks_pivot_toml_is_reported_by_the_compare_commands(
        project: Path, params: str) -> None:
    # The targets memo survives a params edit when no ${...} reads params; an edit that makes
    # pivot.toml invalid (a key a stage lists is gone, the file no longer parses) must still
    # be the config error loading pivot.toml gives, not a diff.
    (project / "pivot.toml").write_text(METRIC)
    (project / "params.toml").write_text("lr = 0.1\nseed = 1\n")
    git(project, "init", "-q")
    assert run(["repro"], project).code == 0
    git(project, "add", "-A")
    git(project, "commit", "-qm", "one")
    for _ in range(2):  # the second one answers from the targets memo
        assert run(["params", "diff"], project).code == 0
    assert (project / ".pivotbuild" / "compare-targets").is_file()
    (project / "params.toml").write_text(params)
    for command in (["params", "diff"], ["metrics", "diff"], ["params", "diff"]):
        result = run(command, project)
        assert result.code == 2 and "params.toml" in result.err, (command, result)
    (project / "params.toml").write_text("lr = 0.2\nseed = 1\n")
    result = run(["params", "diff"], project)
    assert result.code == 0 and "0.2" in result.out and "seed" not in result.out, result


def test_the_compare_commands_resolve_a_home_cache_dir_in_each_home(
        project: Path, tmp_path: Path) -> None:
    # cache_dir = "~/c": another HOME is another cache, which lacks HEAD's metrics object.
    (project / "pivot.toml").write_text(
        '[project]\ncache_dir = "~/c"\n\n[stages.a]\n'
        'cmd = "echo {\\\\\\"acc\\\\\\": $(cat in.txt)} > m.json"\n'
        'deps = ["in.txt"]\nouts = [{ path = "m.json", metric = true }]\n')
    (project / "in.txt").write_text("1\n")
    one, two = {"HOME": str(tmp_path / "h1")}, {"HOME": str(tmp_path / "h2")}
    git(project, "init", "-q")
    assert run(["repro"], project, one).code == 0
    git(project, "add", "pivot.toml", "in.txt", ".pivotbuild")  # m.json: from the cache
    git(project, "commit", "-qm", "one")
    (project / "in.txt").write_text("2\n")
    assert run(["repro"], project, one).code == 0
    for _ in range(2):  # the second one answers from the targets memo
        result = run(["metrics", "diff"], project, one)
        assert result.code == 0 and "+1" in result.out, result
    result = run(["metrics", "diff"], project, two)
    assert result.code == 1 and "not in the cache" in result.err, result


@pytest.mark.parametrize("name", ["project-cache", "snapshot"])
def test_a_damaged_cache_file_is_never_believed(project: Path, name: str) -> None:
    # A per-machine cache damaged on disk (a changed byte, a torn copy) must cost a load,
    # never run a stage from a cmd pivot.toml does not hold, misname a stage or its status,
    # nor fail inside pivotbuild. The project cache is read with the fast path off.
    (project / "pivot.toml").write_text(COPY)
    (project / "in.txt").write_text("one\n")
    (project / ".pivotbuild").mkdir()
    assert run(["repro"], project).code == 0
    env = {"PIVOTBUILD_NO_FASTPATH": "1"} if name == "project-cache" else {}
    reference = run(["status", "--json"], project, env)
    assert reference.code == 0 and '"up-to-date"' in reference.out
    cache = project / ".pivotbuild" / name
    good = cache.read_bytes()
    step = max(1, len(good) // 40)
    at = [good.find(text) for text in (b"up-to-date", b"out.txt", b"in.txt")]
    flips = sorted({*range(0, len(good), step), *(i + 1 for i in at if i >= 0)})
    damaged = [good.replace(b"echo a", b"echo b"), good[:len(good) // 2],
               *(good[:i] + bytes([good[i] ^ 0x04]) + good[i + 1:] for i in flips)]
    for data in damaged:
        cache.write_bytes(data)
        result = run(["status", "--json"], project, env)
        assert (result.code, result.out, result.err) == (0, reference.out, ""), data
        cache.write_bytes(good)  # the fast path's status would otherwise write a new one
    cache.write_bytes(good.replace(b"echo a", b"echo b").replace(b'"a"', b'"b"'))
    assert run(["repro"], project, env).code == 0
    assert ran(project) == ["a"]


def _metric_committed_then_changed(project: Path) -> None:
    """HEAD records m.json's acc as 1 (through its lock and the cache), the workspace has 2;
    ``metrics diff`` has been run twice (the second answered from the targets memo)."""
    (project / "pivot.toml").write_text(
        '[stages.a]\ncmd = "echo {\\\\\\"acc\\\\\\": $(cat in.txt)} > m.json"\n'
        'deps = ["in.txt"]\nouts = [{ path = "m.json", metric = true }]\n')
    (project / "in.txt").write_text("1\n")
    git(project, "init", "-q")
    (project / ".pivotbuild").mkdir()
    assert run(["repro"], project).code == 0
    git(project, "add", "pivot.toml", "in.txt", ".pivotbuild")  # m.json: from the cache
    git(project, "commit", "-qm", "one")
    (project / "in.txt").write_text("2\n")
    assert run(["repro"], project).code == 0
    for _ in range(2):
        result = run(["metrics", "diff"], project)
        assert result.code == 0 and "+1" in result.out, result
    assert (project / ".pivotbuild" / "compare-targets").is_file()


def test_a_copied_project_compares_through_its_own_cache(project: Path, tmp_path: Path) -> None:
    # cp -a copies .pivotbuild/ with its memos; the copy's cache is its own .pivotbuild/cache.
    _metric_committed_then_changed(project)
    copy = tmp_path / "copy"
    shutil.copytree(project, copy, symlinks=True)
    shutil.rmtree(copy / ".pivotbuild" / "cache")
    result = run(["metrics", "diff"], copy)
    assert result.code == 1 and "not in the cache" in result.err, result
    assert run(["metrics", "diff"], project).code == 0


def test_verify_resolves_a_home_cache_dir_in_each_home(project: Path, tmp_path: Path) -> None:
    # The no-op fast path's verify checks the cache the snapshot recorded: under another HOME,
    # cache_dir = "~/c" is another cache, which lacks the out.
    (project / "pivot.toml").write_text('[project]\ncache_dir = "~/c"\n\n' + COPY)
    (project / "in.txt").write_text("one\n")
    (project / ".pivotbuild").mkdir()
    one, two = {"HOME": str(tmp_path / "h1")}, {"HOME": str(tmp_path / "h2")}
    assert run(["repro"], project, one).code == 0
    assert run(["status"], project, one).code == 0
    assert (project / ".pivotbuild" / "snapshot").is_file()
    assert run(["verify"], project, one).code == 0
    result = run(["verify"], project, two)
    assert result.code == 1 and "missing" in result.err, result


def test_a_damaged_targets_memo_is_never_believed(project: Path) -> None:
    _metric_committed_then_changed(project)
    memo = project / ".pivotbuild" / "compare-targets"
    good = memo.read_bytes()
    reference = run(["metrics", "diff", "--json"], project)
    assert reference.code == 0
    at = [good.find(text) for text in (b"m.json", b".pivotbuild/cache", b"in.txt")]
    flips = sorted({*range(0, len(good), max(1, len(good) // 30)), *(i + 1 for i in at if i >= 0)})
    for i in flips:
        memo.write_bytes(good[:i] + bytes([good[i] ^ 0x04]) + good[i + 1:])
        result = run(["metrics", "diff", "--json"], project)
        assert (result.code, result.out, result.err) == (0, reference.out, ""), i


@pytest.mark.parametrize("where", ["params.toml", ".pivotbuild/config.local.toml"])
def test_a_directory_where_a_config_file_may_be_is_no_config_file(
        project: Path, where: str) -> None:
    # Loading pivot.toml reads params.toml and config.local.toml only when they are files;
    # the caches keyed on them must not fail where the load does not.
    (project / "pivot.toml").write_text(COPY)
    (project / "in.txt").write_text("one\n")
    (project / ".pivotbuild").mkdir()
    assert run(["repro"], project).code == 0
    assert run(["status"], project).code == 0  # the project cache and the snapshot are kept
    (project / where).mkdir()
    for env in ({}, {"PIVOTBUILD_NO_FASTPATH": "1"}):
        result = run(["status", "--json"], project, env)
        assert result.code == 0 and '"up-to-date"' in result.out, result
    assert run(["repro"], project).code == 0
    assert ran(project) == ["a"]


def test_a_lock_edited_in_place_with_its_mtime_set_back_is_read_again(project: Path) -> None:
    # Same size, same inode, mtime restored (touch -d): only the ctime tells; the full path
    # reads the lock, so the fast path must not answer from its stat.
    (project / "pivot.toml").write_text(COPY)
    (project / "in.txt").write_text("one\n")
    (project / ".pivotbuild").mkdir()
    assert run(["repro"], project).code == 0
    lock_file = project / ".pivotbuild" / "locks" / "a.json"
    st = lock_file.stat()
    os.utime(lock_file, ns=(st.st_atime_ns, st.st_mtime_ns - 60_000_000_000))
    time.sleep(2.1)  # the lock's ctime ages out of the racy window
    assert run(["status"], project).code == 0  # the snapshot, every entry trusted
    assert '"up-to-date"' in run(["status", "--json"], project).out
    st = lock_file.stat()
    text = lock_file.read_bytes()
    at = text.index(b'"hash": "') + 9
    edited = text[:at] + (b"1" if text[at:at + 1] == b"0" else b"0") + text[at + 1:]
    with open(lock_file, "r+b") as handle:
        handle.write(edited)
    os.utime(lock_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (lock_file.stat().st_ino, lock_file.stat().st_size) == (st.st_ino, st.st_size)
    for env in ({}, {"PIVOTBUILD_NO_FASTPATH": "1"}):
        result = run(["status", "--json"], project, env)
        assert result.code == 0 and '"dep-changed"' in result.out, (env, result)


def test_an_out_that_became_a_git_repository_is_refused_by_the_compare_commands(
        project: Path) -> None:
    # Loading pivot.toml refuses an out directory holding .git; the targets memo must too.
    (project / "pivot.toml").write_text(
        '[stages.a]\ncmd = "mkdir -p od && echo {\\\\\\"acc\\\\\\": 1} > od/m.json"\n'
        'outs = [{ path = "od", metric = ["od/m.json"] }]\n')
    git(project, "init", "-q")
    (project / ".pivotbuild").mkdir()
    assert run(["repro"], project).code == 0
    git(project, "add", "pivot.toml", ".pivotbuild")
    git(project, "commit", "-qm", "one")
    for _ in range(2):  # the second one answers from the targets memo
        assert run(["metrics", "diff"], project).code == 0
    assert (project / ".pivotbuild" / "compare-targets").is_file()
    git(project / "od", "init", "-q")
    for command in (["metrics", "diff"], ["metrics", "show"], ["status"]):
        result = run(command, project)
        assert result.code == 2 and "od/.git" in result.err, (command, result)


@pytest.mark.parametrize("line", ['outs = [{ path = "out.txt", cache = true, }]',
                                  'desc = "a\\e"'], ids=["trailing-comma", "escape-e"])
def test_pivot_toml_is_toml_1_0_whichever_tomli_is_installed(project: Path, line: str) -> None:
    # TOML 1.1 syntax (tomli >= 2.4 takes it; Python's tomllib, the fallback, does not) is a
    # config error, so that a pivot.toml means the same on every install.
    (project / "pivot.toml").write_text(COPY.replace('outs = ["out.txt"]', line))
    (project / "in.txt").write_text("one\n")
    result = run(["status"], project)
    assert result.code == 2 and result.err.startswith("pivotbuild: error: pivot.toml: line "), (
        result)


def _rewrite_while_loading(project: Path, monkeypatch: pytest.MonkeyPatch, during: str,
                           after: str) -> None:
    """Until monkeypatch.undo(): every load of pivot.toml finds ``during`` written there,
    and ``after`` is written back as it ends (a checkout, then its undoing, mid-load)."""
    from pivotbuild import config

    load = config.load_project

    def racing(root: Path, overrides: dict[str, str] | None = None) -> object:
        (project / "pivot.toml").write_text(during)
        try:
            return load(root, overrides)
        finally:
            (project / "pivot.toml").write_text(after)

    monkeypatch.setattr(config, "load_project", racing)


def test_a_pivot_toml_rewritten_while_it_loads_leaves_no_cache(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A checkout or an editor writing pivot.toml while a command loads it, then writing the
    # old text back (git stash; ...; git stash pop): the cache must not pair the old text with
    # the project loaded from the new one.
    from pivotbuild import projectcache

    old = COPY
    new = COPY.replace("echo a", "echo new")
    (project / "pivot.toml").write_text(old)
    (project / ".pivotbuild").mkdir()
    _rewrite_while_loading(project, monkeypatch, new, old)
    assert "echo new" in projectcache.load_project(project).stages["a"].cmd[0]
    monkeypatch.undo()
    assert "echo a " in projectcache.load_project(project).stages["a"].cmd[0]
    assert run(["status", "--json"], project).code == 0


def test_a_pivot_toml_rewritten_while_it_loads_leaves_no_targets_memo(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pivotbuild import compare

    old = '[stages.a]\ncmd = "true"\nouts = [{ path = "m.json", cache = false }]\n'
    new = old.replace("cache = false", "cache = false, metric = true")
    (project / "pivot.toml").write_text(old)
    (project / ".pivotbuild").mkdir()
    _rewrite_while_loading(project, monkeypatch, new, old)
    assert compare.project_targets(project)[0].metrics == ["m.json"]
    monkeypatch.undo()
    assert compare.project_targets(project)[0].metrics == []
