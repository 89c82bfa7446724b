"""A full disk: repro and commit fail with one clear line, leave no torn lock and
no half-written cache object, and succeed once there is room again.

The project lives on a small tmpfs mounted for the test (root can mount one)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pivotbuild.hashing import PythonBackend
from tests.cli.conftest import run

MIB = 1 << 20

# Copies into the cache need room; hardlinks (the default preference) do not.
COPY = '[project]\ncheckout = ["copy"]\n'

STAGE = """
[stages.big]
cmd = "head -c 2621440 /dev/urandom > big.bin; echo small > small.txt"
outs = ["big.bin", "small.txt"]
"""


@pytest.fixture
def small_fs(tmp_path: Path):
    mount = tmp_path / "fs"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs for the ENOSPC test: {result.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _objects_are_whole(root: Path) -> int:
    backend = PythonBackend()
    count = 0
    for obj in (root / ".pivotbuild" / "cache" / "files").glob("*/*"):
        assert not obj.name.startswith("."), f"temp file left behind: {obj}"
        assert backend.hash_bytes(obj.read_bytes()) == (obj.parent.name + obj.name).removesuffix(
            ".dir")
        count += 1
    return count


def _fill(small_fs: Path) -> Path:
    """Leave about 1 MiB free: less room than big.bin needs. Returns the filler file."""
    filler = small_fs / "filler"
    free = os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize
    filler.write_bytes(b"\0" * max(0, free - MIB))
    return filler


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line]


def test_repro_on_a_full_disk(small_fs):
    root = small_fs / "p"
    root.mkdir()
    (root / "pivot.toml").write_text(COPY + STAGE)
    result = run(["repro"], root)
    assert result.code == 1
    errors = _errors(result.err)
    assert len(errors) == 1 and "No space left on device" in errors[0], result.err
    assert not (root / ".pivotbuild" / "locks" / "big.json").exists()
    assert _objects_are_whole(root) <= 1  # maybe small.txt; never a torn big.bin
    (root / "pivot.toml").write_text(STAGE)  # hardlinks: storing takes no extra room
    result = run(["repro"], root)
    assert result.code == 0, result.err
    assert _objects_are_whole(root) == 2
    assert json.loads((root / ".pivotbuild" / "locks" / "big.json").read_text())["stage"] == "big"


def test_commit_on_a_full_disk(small_fs):
    root = small_fs / "p"
    root.mkdir()
    (root / "pivot.toml").write_text(COPY + STAGE)
    assert run(["repro", "--no-commit"], root).code == 0
    filler = _fill(small_fs)  # less room than big.bin needs
    result = run(["commit"], root)
    assert result.code == 1
    errors = _errors(result.err)
    assert len(errors) == 1 and "No space left on device" in errors[0], result.err
    assert not (root / ".pivotbuild" / "locks" / "big.json").exists()
    _objects_are_whole(root)
    filler.unlink()
    (root / "pivot.toml").write_text(STAGE)  # hardlinks: storing takes no extra room
    result = run(["commit"], root)
    assert result.code == 0, result.err
    assert _objects_are_whole(root) == 2


def _files_below(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def _pushable(root: Path, remote: Path) -> Path:
    """A project outside the small file system with two outputs (2.5 MiB and a few bytes)
    pushing to ``remote``."""
    root.mkdir()
    (root / "pivot.toml").write_text(
        f'[project]\ndefault_remote = "r"\n\n[remotes.r]\nurl = "{remote}"\n' + STAGE)
    assert run(["repro"], root).code == 0
    return root


def test_push_to_a_full_remote(small_fs, tmp_path):
    remote = small_fs / "remote"
    remote.mkdir()
    root = _pushable(tmp_path / "p", remote)
    filler = _fill(small_fs)
    result = run(["push"], root)
    assert result.code == 1
    assert "No space left on device" in result.err and "not sent" in result.err, result.err
    for path in _files_below(remote):  # what arrived is whole and named; no temp is left
        assert not path.name.startswith("."), f"temp file left on the remote: {path}"
        assert PythonBackend().hash_bytes(path.read_bytes()) == path.parent.name + path.name
    filler.unlink()
    assert run(["push"], root).code == 0
    assert len(_files_below(remote)) == 2


def test_fetch_into_a_full_cache(small_fs, tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    source = _pushable(tmp_path / "p", remote)
    assert run(["push"], source).code == 0
    clone = small_fs / "clone"
    (clone / ".pivotbuild").mkdir(parents=True)
    (clone / "pivot.toml").write_text((source / "pivot.toml").read_text())
    shutil.copytree(source / ".pivotbuild" / "locks", clone / ".pivotbuild" / "locks")
    filler = _fill(small_fs)
    result = run(["pull"], clone)
    assert result.code == 1 and "No space left on device" in result.err, result.err
    assert _objects_are_whole(clone) <= 1  # maybe small.txt; never a torn big.bin
    assert not (clone / "big.bin").exists()
    filler.unlink()
    result = run(["pull"], clone)
    assert result.code == 0, result.err
    assert _objects_are_whole(clone) == 2
    assert (clone / "big.bin").read_bytes() == (source / "big.bin").read_bytes()
