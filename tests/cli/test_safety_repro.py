"""What `repro` (and `checkout`) touch: never a path whose directory resolves outside the
project (SPEC §8), and what a failed stage says and leaves in the history and in
`repro --json` (SPEC §4, §8)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cli.conftest import history, run


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the project with files a careless stage could destroy."""
    where = tmp_path / "outside"
    (where / "sub").mkdir(parents=True)
    (where / "o").write_text("keep me\n")
    (where / "sub" / "f").write_text("keep me too\n")
    return where


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): p.read_text() if p.is_file() else "<dir>"
            for p in sorted(directory.rglob("*"))}


def wipe(directory: Path) -> None:
    """Delete an output directory (its files may be read-only cache links)."""
    for path in sorted(directory.rglob("*"), reverse=True):
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
    directory.rmdir()


# ---- hole 1: outs through a symlinked parent directory ----------------------------------


def test_outs_through_a_symlinked_directory_are_refused_and_nothing_outside_is_touched(
        project, outside):
    before = snapshot(outside)
    (project / "linkdir").symlink_to(outside)
    (project / "pivot.toml").write_text(
        '[stages.file]\ncmd = "echo ran >> ran-file; echo new > linkdir/o"\n'
        'outs = ["linkdir/o"]\n\n'
        '[stages.tree]\ncmd = "echo ran >> ran-tree; mkdir -p linkdir/sub"\n'
        'outs = ["linkdir/sub"]\n\n'
        '[stages.keep]\ncmd = "echo ran >> ran-keep; touch linkdir/p"\n'
        'outs = [{path = "linkdir/p", persist = true}]\n\n'
        '[stages.deep]\ncmd = "echo ran >> ran-deep"\nouts = ["linkdir/new/deeper/o"]\n')
    result = run(["repro", "-k"], project)
    assert result.code == 1
    assert snapshot(outside) == before  # nothing deleted, written or created out there
    for stage in ("file", "tree", "keep", "deep"):
        assert not (project / f"ran-{stage}").exists(), f"stage {stage} ran"
    errors = [line for line in result.err.splitlines() if "failed:" in line]
    assert len(errors) == 4
    for stage, path in (("file", "linkdir/o"), ("tree", "linkdir/sub"), ("keep", "linkdir/p"),
                        ("deep", "linkdir/new/deeper/o")):
        line = next(e for e in errors if f"stage '{stage}' failed" in e)
        assert f"{path}: its directory resolves outside the project" in line
        assert line.count(f"'{stage}'") == 1  # the stage is named once (hole 15)
    assert not (project / ".pivotbuild" / "locks").exists() or not list(
        (project / ".pivotbuild" / "locks").iterdir())


def test_a_dangling_symlinked_directory_creates_nothing_where_it_points(project, tmp_path):
    target = tmp_path / "nowhere-yet"
    (project / "linkdir").symlink_to(target)
    (project / "pivot.toml").write_text(
        '[stages.a]\ncmd = "echo ran >> ran"\nouts = ["linkdir/x/o"]\n')
    result = run(["repro"], project)
    assert result.code == 1
    assert "linkdir/x/o: its directory resolves outside the project" in result.err
    assert not target.exists() and not os.path.lexists(tmp_path / "nowhere-yet" / "x")
    assert not (project / "ran").exists()


def test_a_symlinked_directory_inside_the_project_is_fine(project):
    (project / "real").mkdir()
    (project / "linkdir").symlink_to("real")
    (project / "pivot.toml").write_text(
        '[stages.a]\ncmd = "echo hi > linkdir/o"\nouts = ["linkdir/o"]\n')
    result = run(["repro"], project)
    assert result.code == 0, result.err
    assert (project / "real" / "o").read_text() == "hi\n"


def test_restore_through_a_symlinked_directory_deletes_nothing_outside(project, outside):
    """The inputs match the lock but the out's directory became a link out of the project:
    the restore refuses it instead of deleting what lies there."""
    before = snapshot(outside)
    (project / "pivot.toml").write_text(
        '[stages.a]\ncmd = "mkdir -p d && echo hi > d/o"\nouts = ["d/o"]\n')
    assert run(["repro"], project).code == 0
    wipe(project / "d")
    (project / "d").symlink_to(outside)
    result = run(["repro"], project)
    assert result.code == 1
    assert "d/o: " in result.err
    assert snapshot(outside) == before


def test_checkout_force_deletes_nothing_through_a_symlinked_directory(project, outside):
    before = snapshot(outside)
    (project / "pivot.toml").write_text(
        '[stages.a]\ncmd = "mkdir -p d && echo hi > d/o"\nouts = ["d/o"]\n\n'
        '[stages.b]\ncmd = "mkdir -p e/sub && echo x > e/sub/g"\nouts = ["e/sub"]\n')
    assert run(["repro"], project).code == 0
    for name in ("d", "e"):
        wipe(project / name)
        (project / name).symlink_to(outside)
    for args in (["checkout"], ["checkout", "--force"]):
        result = run(args, project)
        assert result.code == 1, (args, result.err)
        assert snapshot(outside) == before, args
    assert "d/o" in result.err and "e/sub" in result.err


# ---- hole 15: what a failed stage says --------------------------------------------------


def test_an_unreadable_file_in_a_dep_directory_is_named(project):
    (project / "depdir").mkdir()
    (project / "depdir" / "ok").write_text("fine\n")
    (project / "depdir" / "secret").write_text("no\n")
    os.chmod(project / "depdir" / "secret", 0)
    (project / "pivot.toml").write_text(
        '[stages.a]\ncmd = "echo ran >> ran; cat depdir/ok > o"\ndeps = ["depdir"]\n'
        'outs = ["o"]\n')
    result = run(["repro"], project, obey_permissions=True)
    assert result.code == 1
    assert ("pivotbuild: error: stage 'a' failed: dependency cannot be read "
            "(depdir/secret: Permission denied)") in result.err.splitlines()
    assert not (project / "ran").exists()
    commit = run(["commit"], project, obey_permissions=True)
    assert "depdir/secret: Permission denied" in commit.err


def test_a_failure_after_the_run_names_the_stage_once(project, tmp_path):
    """The commit writer's error (here: an out that became a link out of the project)
    reaches the user as "stage 'a' failed: <path>: <problem>"."""
    (tmp_path / "elsewhere").write_text("x\n")
    (project / "pivot.toml").write_text(
        f'[stages.a]\ncmd = "ln -s {tmp_path / "elsewhere"} o"\nouts = ["o"]\n')
    result = run(["repro"], project)
    assert result.code == 1
    line = next(x for x in result.err.splitlines() if "failed" in x)
    assert line.startswith("pivotbuild: error: stage 'a' failed: o: ")
    assert line.count("stage 'a'") == 1


# ---- hole 16: the input hash on every result, a history record for every failure --------


def test_skipped_stages_carry_their_input_hash(project):
    (project / "src").write_text("1\n")
    (project / "pivot.toml").write_text(
        '[stages.a]\ncmd = "cp src a"\ndeps = ["src"]\nouts = ["a"]\n\n'
        '[stages.b]\ncmd = "cp a b"\ndeps = ["a"]\nouts = ["b"]\n\n'
        '[stages.c]\ncmd = "echo c > c"\nouts = ["c"]\n')
    first = json.loads(run(["repro", "--json"], project).out)
    hashes = {s["name"]: s["input_hash"] for s in first["stages"]}
    assert all(hashes.values())
    second = json.loads(run(["repro", "--json"], project).out)
    assert {s["name"]: (s["action"], s["input_hash"]) for s in second["stages"]} == {
        name: ("skip", h) for name, h in hashes.items()}
    # b is re-decided after a runs again and leaves its deps byte-identical: still a skip
    # with its hash.
    (project / "src").write_text("1\n")
    (project / "pivot.toml").write_text((project / "pivot.toml").read_text().replace(
        'cmd = "cp src a"', 'cmd = "cat src > a"'))
    third = json.loads(run(["repro", "--json"], project).out)
    b = next(s for s in third["stages"] if s["name"] == "b")
    assert (b["action"], b["input_hash"]) == ("skip", hashes["b"])
    locks = project / ".pivotbuild" / "locks"
    assert json.loads((locks / "b.json").read_text())["input_hash"] == hashes["b"]


def test_a_stage_with_a_missing_dep_leaves_a_failed_record(project):
    (project / "pivot.toml").write_text(
        '[stages.a]\ncmd = "cat nosuch > o"\ndeps = ["nosuch"]\nouts = ["o"]\n')
    result = run(["repro", "--json"], project)
    assert result.code == 1
    stage = json.loads(result.out)["stages"][0]
    assert (stage["status"], stage["input_hash"]) == ("failed", None)
    assert "nosuch" in stage["error"]
    records = history(project)
    assert [(r["stage"], r["status"], r["input_hash"], r["committed"]) for r in records] == [
        ("a", "failed", None, False)]


def test_a_stage_refused_before_its_cmd_leaves_a_failed_record_with_its_input_hash(
        project, outside):
    (project / "linkdir").symlink_to(outside)
    (project / "pivot.toml").write_text(
        '[stages.a]\ncmd = "echo ran >> ran"\nouts = ["linkdir/o"]\n')
    result = run(["repro", "--json"], project)
    assert result.code == 1
    stage = json.loads(result.out)["stages"][0]
    assert stage["status"] == "failed" and stage["input_hash"]
    assert "linkdir/o: its directory resolves outside the project" in stage["error"]
    assert not (project / "ran").exists()
    records = history(project)
    assert [(r["status"], r["input_hash"]) for r in records] == [
        ("failed", stage["input_hash"])]


def test_a_stage_not_run_after_a_failure_still_carries_its_input_hash(project):
    """Without -k nothing new starts after a failure; a stage left out that way had its deps
    hashed when the plan was made, so its result has its input hash (its downstream,
    whose deps the failure leaves unknown, has none)."""
    (project / "pivot.toml").write_text(
        '[stages.a]\ncmd = "exit 3"\nouts = ["a"]\n\n'
        '[stages.b]\ncmd = "cp a b"\ndeps = ["a"]\nouts = ["b"]\n\n'
        '[stages.z]\ncmd = "echo z > z"\nouts = ["z"]\n')
    result = run(["repro", "-j", "1", "--json"], project)
    assert result.code == 1
    stages = {s["name"]: s for s in json.loads(result.out)["stages"]}
    assert stages["a"]["status"] == "failed" and stages["a"]["input_hash"]
    assert (stages["z"]["status"], bool(stages["z"]["input_hash"])) == ("not-run", True)
    assert (stages["b"]["status"], stages["b"]["input_hash"]) == ("not-run", None)
