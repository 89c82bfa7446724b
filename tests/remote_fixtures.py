"""The remote tests' fixtures (a plugin of tests/test_remote_*.py): a remote directory, and
clone A of the project in tests/remotekit.py with its stages run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.remotekit import make_project, ran, repro


@pytest.fixture
def remote_dir(tmp_path: Path) -> Path:
    path = tmp_path / "remote"
    path.mkdir()
    return path


@pytest.fixture
def built(tmp_path: Path, remote_dir: Path) -> Path:
    """Clone A: repro done, nothing pushed yet."""
    root = make_project(tmp_path / "a", str(remote_dir))
    repro(root)
    assert ran(root) == ["prepare", "train", "report"]
    return root
