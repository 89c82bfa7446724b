"""gitrev: files of a git revision read without checking out, on a real repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pivotbuild import gitrev
from pivotbuild.errors import EXIT_FAILED, EXIT_USAGE
from pivotbuild.gitrev import FileNotInRevision, NotAGitRepository, UnknownRevision, open_revision
from tests.cli.conftest import GIT_ENV, git


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A work tree whose project lives in ``proj/``, with two commits:
    first: metrics.json = 0.8, data/a.txt, a link, a binary file; second: metrics = 0.9,
    data/b.txt added, data/a.txt deleted."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    top = tmp_path / "work"
    proj = top / "proj"
    (proj / "data").mkdir(parents=True)
    git(top, "init", "-q")
    (proj / "metrics.json").write_text('{"acc": 0.8}\n')
    (proj / "data" / "a.txt").write_text("a\n")
    (proj / "data" / "with space é.txt").write_text("spaced\n")
    (proj / "blob.bin").write_bytes(b"\0\n\xff\nend")  # NULs, newlines, no final newline
    (proj / "link.json").symlink_to("metrics.json")
    (top / "outside.txt").write_text("outside the project\n")
    commit_all(top, "first")
    (proj / "metrics.json").write_text('{"acc": 0.9}\n')
    (proj / "data" / "a.txt").unlink()
    (proj / "data" / "b.txt").write_text("b\n")
    commit_all(top, "second")
    return proj


def test_reads_files_of_two_revisions_from_a_project_subdirectory(repo: Path) -> None:
    head, first = open_revision(repo, "HEAD"), open_revision(repo, "HEAD~1")
    assert head.prefix == "proj/" and first.prefix == "proj/"
    assert head.commit != first.commit and len(head.commit) == 40
    assert head.read_file("metrics.json") == b'{"acc": 0.9}\n'
    assert first.read_file("metrics.json") == b'{"acc": 0.8}\n'
    assert first.read_files(["data/a.txt", "data/b.txt"]) == {"data/a.txt": b"a\n",
                                                               "data/b.txt": None}
    assert head.read_files(["data/a.txt", "data/b.txt"]) == {"data/a.txt": None,
                                                              "data/b.txt": b"b\n"}
    # The workspace was not touched: nothing was checked out.
    assert (repo / "metrics.json").read_text() == '{"acc": 0.9}\n'
    assert git(repo, "status", "--porcelain") == ""


def test_content_comes_back_byte_for_byte_and_odd_names_work(repo: Path) -> None:
    rev = open_revision(repo, "HEAD~1")
    found = rev.read_files(["blob.bin", "data/with space é.txt", "link.json", "metrics.json"])
    assert found == {"blob.bin": b"\0\n\xff\nend", "data/with space é.txt": b"spaced\n",
                     "link.json": b'{"acc": 0.8}\n', "metrics.json": b'{"acc": 0.8}\n'}


def test_a_directory_or_a_missing_path_is_not_a_file(repo: Path) -> None:
    rev = open_revision(repo)
    assert rev.read_files(["data", "nope.json", "data/nope/deeper"]) == {
        "data": None, "nope.json": None, "data/nope/deeper": None}
    with pytest.raises(FileNotInRevision) as info:
        rev.read_file("nope.json")
    assert str(info.value) == f"nope.json: not a file in revision HEAD ({rev.commit[:7]})"
    assert info.value.exit_code == EXIT_FAILED


def test_paths_never_leave_the_project_directory(repo: Path) -> None:
    rev = open_revision(repo)
    for bad in ["../outside.txt", "/etc/passwd", "a/../b", "a//b", "x\ny", ""]:
        with pytest.raises(gitrev.OperationError):
            rev.read_files([bad])


def test_many_files_are_read_by_one_git_process(repo: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(200):
        (repo / "many" / f"{i:03}.txt").parent.mkdir(exist_ok=True)
        (repo / "many" / f"{i:03}.txt").write_text(f"{i}\n")
    commit_all(repo.parent, "many")
    rev = open_revision(repo)
    calls: list[list[str]] = []
    real_run = subprocess.run

    def counting_run(args, *a, **kw):  # type: ignore[no-untyped-def]
        calls.append(list(args))
        return real_run(args, *a, **kw)

    monkeypatch.setattr(gitrev.subprocess, "run", counting_run)
    names = rev.files("many")
    found = rev.read_files(names)
    assert len(found) == 200 and found["many/123.txt"] == b"123\n"
    assert [c[1] for c in calls] == ["ls-tree", "cat-file"]


def test_list_dir_and_files(repo: Path) -> None:
    rev = open_revision(repo, "HEAD")
    entries = rev.list_dir("data")
    assert [(e.path, e.kind) for e in entries] == [("data/b.txt", "blob"),
                                                   ("data/with space é.txt", "blob")]
    top = {e.path: e for e in rev.list_dir()}
    assert top["data"].kind == "tree" and top["link.json"].is_symlink
    assert "outside.txt" not in top  # the project's directory, not the work tree's root
    assert rev.files() == ["blob.bin", "data/b.txt", "data/with space é.txt", "link.json",
                           "metrics.json"]
    assert rev.list_dir("no/such/dir") == [] and rev.files("no/such/dir") == []
    with pytest.raises(gitrev.OperationError, match="metrics.json: not a directory in "
                                                    "revision HEAD"):
        rev.list_dir("metrics.json")


def test_project_at_the_work_tree_root(repo: Path) -> None:
    rev = open_revision(repo.parent, "HEAD~1")
    assert rev.prefix == ""
    assert rev.read_file("proj/data/a.txt") == b"a\n"
    assert rev.read_file("outside.txt") == b"outside the project\n"


def test_revisions_by_any_git_name(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD~1")
    git(repo, "tag", "v1", first)
    git(repo, "branch", "old", first)
    for name in ["v1", "old", first, first[:10], "HEAD^"]:
        rev = open_revision(repo, name)
        assert rev.commit == first, name
        assert rev.read_file("metrics.json") == b'{"acc": 0.8}\n'
    assert open_revision(repo, first[:7]).label == first[:7]
    assert open_revision(repo, "v1").label == f"v1 ({first[:7]})"


def test_unknown_revision_is_a_usage_error(repo: Path) -> None:
    for name in ["nope", "HEAD~5", "--all", "HEAD:metrics.json", "a\nb"]:
        with pytest.raises(UnknownRevision) as info:
            open_revision(repo, name)
        assert f"unknown revision {name!r}" in str(info.value)
        assert info.value.exit_code == EXIT_USAGE
        assert "\n" not in str(info.value)


def test_a_repository_without_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    git(tmp_path, "init", "-q")
    for rev in ("HEAD", "HEAD~1", "main"):
        with pytest.raises(UnknownRevision, match="has no commits yet"):
            open_revision(tmp_path, rev)


def test_not_a_git_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    (tmp_path / "proj").mkdir()
    with pytest.raises(NotAGitRepository) as info:
        open_revision(tmp_path / "proj", "HEAD")
    assert str(info.value).startswith(f"{tmp_path / 'proj'}: not inside a git repository")
    assert info.value.exit_code == EXIT_USAGE


def test_git_missing_from_path(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(repo / "empty-bin"))
    with pytest.raises(gitrev.GitFailed, match="git is not installed"):
        open_revision(repo)


def test_symlink_out_of_the_repository_or_dangling_is_not_a_file(repo: Path) -> None:
    (repo / "escape.json").symlink_to("/etc/hostname")
    (repo / "dangling.json").symlink_to("nothing-here.json")
    (repo / "loop.json").symlink_to("loop.json")
    commit_all(repo.parent, "links")
    rev = open_revision(repo)
    assert rev.read_files(["escape.json", "dangling.json", "loop.json", "metrics.json"]) == {
        "escape.json": None, "dangling.json": None, "loop.json": None,
        "metrics.json": b'{"acc": 0.9}\n'}


def test_uncommitted_changes_are_not_read(repo: Path) -> None:
    (repo / "metrics.json").write_text('{"acc": 1.0}\n')
    (repo / "new.json").write_text("{}")
    git(repo, "add", "new.json")  # staged, still not in HEAD
    rev = open_revision(repo)
    assert rev.read_files(["metrics.json", "new.json"]) == {
        "metrics.json": b'{"acc": 0.9}\n', "new.json": None}


def test_entries_are_read_by_object_id_and_symlinks_are_still_followed(repo: Path) -> None:
    rev = open_revision(repo, "HEAD~1")
    entries = rev.entries()
    assert [e.path for e in entries] == ["blob.bin", "data/a.txt", "data/with space é.txt",
                                         "link.json", "metrics.json"]
    found = rev.read_files([*entries, "data/a.txt", "nope"])  # a path given twice is one read
    assert found == {"blob.bin": b"\0\n\xff\nend", "data/a.txt": b"a\n",
                     "data/with space é.txt": b"spaced\n", "link.json": b'{"acc": 0.8}\n',
                     "metrics.json": b'{"acc": 0.8}\n', "nope": None}


def test_a_project_directory_that_is_gone(tmp_path: Path) -> None:
    with pytest.raises(gitrev.GitFailed, match="no such directory"):
        open_revision(tmp_path / "gone", "HEAD")
