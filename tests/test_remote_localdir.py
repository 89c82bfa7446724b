"""remote/localdir.py: a local-directory remote's bulk pipeline (unnamed files named after a
flush, temp names where there are none, open-file limits, a failed flush, failed copies)."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from pivotbuild.remote import localdir
from tests.remotekit import NoUnnamedFiles, break_copies, clone, do, open_fds, tree

pytest_plugins = ["tests.remote_fixtures"]  # the remote_dir and built fixtures


def test_push_writes_unnamed_files_in_rounds_and_names_them_after_the_flush(
        built: Path, remote_dir: Path, monkeypatch):
    monkeypatch.setattr(localdir, "_DIRECTORY_BATCH", 2)  # several rounds, several slices
    monkeypatch.setattr(localdir, "_PROGRESS_STEP", 1)
    flushed: list[int] = []  # names on the remote at each flush
    real_sync = localdir.LocalStore.sync

    def sync(self):
        flushed.append(len([p for p in remote_dir.rglob("*") if p.is_file()]))
        real_sync(self)

    monkeypatch.setattr(localdir.LocalStore, "sync", sync)
    fds = open_fds()
    report = do("push", built)
    assert report.ok and report.objects > 4
    assert flushed[:3] == [0, 2, 4]  # a round's copies have no names until it is flushed
    assert open_fds() == fds
    assert tree(remote_dir) == {k: v for k, v in tree(built / ".pivotbuild" / "cache").items()
                                if k.startswith("files/")}


def test_push_without_unnamed_files_uses_temp_names(built: Path, remote_dir: Path,
                                                    monkeypatch):
    backend = NoUnnamedFiles()
    monkeypatch.setattr(localdir, "get_backend", lambda: backend)
    report = do("push", built)
    assert report.ok and report.objects > 4
    assert backend.unnamed[0] and not any(backend.unnamed[1:])  # tried once, then temp names
    assert tree(remote_dir) == {k: v for k, v in tree(built / ".pivotbuild" / "cache").items()
                                if k.startswith("files/")}


def test_push_with_too_few_open_files_for_a_round_uses_temp_names(built: Path,
                                                                  remote_dir: Path,
                                                                  monkeypatch):
    backend = NoUnnamedFiles()  # records what was asked; no copy is unnamed here
    monkeypatch.setattr(localdir, "get_backend", lambda: backend)
    monkeypatch.setattr(localdir, "_raise_open_files", lambda want: 100)
    assert do("push", built).ok
    assert backend.unnamed and not any(backend.unnamed)
    assert len(tree(remote_dir)) > 4


def test_a_failed_flush_names_nothing_and_closes_every_copy(built: Path, remote_dir: Path,
                                                            monkeypatch):
    def sync(self):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(localdir.LocalStore, "sync", sync)
    fds = open_fds()
    with pytest.raises(OSError):
        do("push", built)
    assert open_fds() == fds
    assert [p for p in remote_dir.rglob("*") if p.is_file()] == []


def test_raise_open_files_lifts_the_soft_limit_up_to_the_hard_one():
    """In a child: lowering the hard limit cannot be undone."""
    script = (
        "import resource\n"
        "from pivotbuild.remote import localdir as remote\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (300, 20000))\n"
        "print(remote._raise_open_files(16384), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (600, 600))\n"
        "print(remote._raise_open_files(16384), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.split()
    margin = localdir._FD_MARGIN
    assert out == [str(16384), str(16384 + margin), str(600 - margin), "600"]


def test_failed_uploads_leave_nothing_on_the_remote(built: Path, remote_dir: Path,
                                                    monkeypatch):
    # (a copy torn by a full disk: tests/reliability/test_enospc.py)
    break_copies(monkeypatch, lambda src: True)
    report = do("push", built)
    assert not report.ok and report.objects == 0
    assert all("Input/output error" in e or "not sent" in e for _, e in report.failed)
    assert [p for p in remote_dir.rglob("*") if p.is_file()] == []


def test_an_interrupted_download_leaves_nothing_in_the_cache(built: Path, tmp_path: Path,
                                                            monkeypatch):
    assert do("push", built).ok
    b = clone(built, tmp_path / "b")

    break_copies(monkeypatch, lambda src: True)
    report = do("fetch", b)
    assert not report.ok and report.objects == 0
    assert "Input/output error" in report.failed[0][1]
    cache = b / ".pivotbuild" / "cache"
    assert [p for p in cache.rglob("*") if p.is_file()] == []
