"""QA of the caches that spare a command its full work (the project cache, the no-op fast
path): each test is a way a demanding user got, or could get, a wrong answer from them."""

from __future__ import annotations

from pathlib import Path

from .conftest import run

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
