"""`gc --rev REV…` and `gc --all-commits`: what older git commits' locks and .pvt files reference
is kept, read from git without checking anything out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pivotbuild import manifest as manifests

from .conftest import Result, git, objects, run

STAGE = """
[stages.make]
cmd = "echo run >> runs.log; mkdir -p model; cp src.txt model/w; rev src.txt > model/r"
deps = ["src.txt"]
outs = ["model"]
"""

def model_objects(root: Path) -> set[str]:
    """The .dir object of the current lock's model and the files it lists."""
    lock = json.loads((root / ".pivotbuild" / "locks" / "make.json").read_text())
    digest = lock["outs"][0]["hash"]
    data = (root / ".pivotbuild" / "cache" / "files" / digest[:2] / digest[2:]).read_bytes()
    return {digest, *(e.hash for e in manifests.parse(data))}


def gc(root: Path, *args: str) -> Result:
    result = run(["gc", "--grace", "0", *args], root)
    assert result.code == 0, result.err
    return result


@pytest.fixture
def history(project: Path) -> tuple[Path, set[str], set[str]]:
    """A git repository whose first commit's lock names one model and the second another;
    returns the root and the objects of each."""
    root = project
    (root / "pivot.toml").write_text(STAGE)
    (root / "src.txt").write_text("first\n")
    (root / "raw.csv").write_text("1\n")
    (root / ".gitignore").write_text("/model\n/runs.log\n")  # outputs are not git's
    git(root, "init", "-q")
    assert run(["repro"], root).code == 0
    assert run(["track", "raw.csv"], root).code == 0
    first = model_objects(root)
    first_raw = json.loads((root / "raw.csv.pvt").read_text())["hash"]
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    (root / "src.txt").write_text("second\n")
    (root / "raw.csv").write_text("2\n")
    assert run(["repro"], root).code == 0
    assert run(["track", "raw.csv"], root).code == 0
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "second")
    second = model_objects(root)
    assert first.isdisjoint(second)
    return root, first | {first_raw}, second


def test_plain_gc_drops_what_only_an_older_commit_references(
        history: tuple[Path, set[str], set[str]]) -> None:
    root, first, second = history
    gc(root)
    assert second <= objects(root)
    assert not (first - second) & objects(root)


def test_gc_rev_keeps_the_older_commits_outputs_and_tracked_data(
        history: tuple[Path, set[str], set[str]]) -> None:
    root, first, second = history
    result = gc(root, "--rev", "HEAD~1")
    assert first | second <= objects(root)
    assert "read from git" in result.err
    # Nothing was checked out: the workspace still has the second commit's files.
    assert (root / "src.txt").read_text() == "second\n"
    assert git(root, "status", "--porcelain") == ""
    # The kept objects are whole: checking the old commit out and restoring works.
    git(root, "checkout", "-q", "HEAD~1")
    restored = run(["checkout", "--force"], root)
    assert restored.code == 0, restored.err
    assert (root / "model" / "w").read_text() == "first\n"
    assert (root / "raw.csv").read_text() == "1\n"
    assert run(["status", "-q"], root).code == 0
    assert (root / "runs.log").read_text() == "run\nrun\n"


def test_gc_all_commits_keeps_every_commits_objects(
        history: tuple[Path, set[str], set[str]]) -> None:
    root, first, second = history
    git(root, "checkout", "-q", "-b", "side", "HEAD~1")  # a branch: --all follows every ref
    git(root, "checkout", "-q", "-")
    gc(root, "--all-commits")
    assert first | second <= objects(root)
    # Once no commit references the old lock, --all-commits lets it go too.
    git(root, "branch", "-q", "-D", "side")
    git(root, "checkout", "-q", "--orphan", "fresh")
    git(root, "commit", "-q", "-m", "only now")
    git(root, "branch", "-q", "-D", "master" if "master" in git(root, "branch") else "main")
    git(root, "reflog", "expire", "--expire=now", "--all")
    gc(root, "--all-commits")
    assert second <= objects(root)
    assert not (first - second) & objects(root)


def test_gc_rev_in_a_subdirectory_project(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    root = repo / "sub" / "proj"
    root.mkdir(parents=True)
    (root / "pivot.toml").write_text(STAGE)
    (root / "src.txt").write_text("first\n")
    (root / ".gitignore").write_text("/model\n/runs.log\n")
    git(repo, "init", "-q")
    assert run(["repro"], root).code == 0
    first = model_objects(root)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    (root / "src.txt").write_text("second\n")
    assert run(["repro"], root).code == 0
    gc(root, "--rev", "HEAD")
    assert first <= objects(root)
    gc(root, "--all-commits")
    assert first <= objects(root)
    gc(root)
    assert not first & objects(root)


def test_outside_git_or_an_unknown_revision_exits_2(project: Path) -> None:
    (project / "pivot.toml").write_text(STAGE)
    (project / "src.txt").write_text("x\n")
    assert run(["repro"], project).code == 0
    before = objects(project)
    for args in (["--all-commits"], ["--rev", "HEAD"]):
        result = run(["gc", "--grace", "0", *args], project)
        assert result.code == 2, result.err
        assert "not inside a git repository" in result.err
        assert len(result.err.strip().splitlines()) == 1
    git(project, "init", "-q")
    result = run(["gc", "--grace", "0", "--rev", "no-such-rev"], project)
    assert result.code == 2
    assert "unknown revision 'no-such-rev'" in result.err
    assert objects(project) == before  # nothing deleted by a refused gc
