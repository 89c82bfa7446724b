"""Regressions found by trying the 2026-12 features as a user would (one test per bug)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from tests.cli.conftest import run


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
    added = subprocess.run(command, cwd=sub, capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    staged = subprocess.run(["git", "diff", "--cached", "--name-only", "-z"], cwd=project,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    assert sorted(filter(None, staged)) == ["sub dir/.gitignore", "sub dir/my data.csv.pvt"]
