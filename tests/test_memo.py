"""The stat memo: unchanged files are not read again; touched or racy files are."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pivotbuild.hasher import Hasher
from pivotbuild.state import StateDB

HOUR_AGO_NS = time.time_ns() - 3600 * 1_000_000_000


def _make(root: Path, count: int, mtime_ns: int | None = HOUR_AGO_NS) -> list[Path]:
    files = []
    for i in range(count):
        path = root / "data" / f"d{i % 3}" / f"f{i}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"%d" % i * (i + 1))
        if mtime_ns is not None:
            os.utime(path, ns=(mtime_ns, mtime_ns))
        files.append(path)
    return files


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "pivot.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _hasher(project: Path, backend) -> Hasher:
    return Hasher(project, StateDB(project / ".pivotbuild" / "state.db"), 2, backend)


@pytest.mark.parametrize("as_dir", [True, False])
def test_unchanged_files_are_not_read_again(backend, project, as_dir):
    files = _make(project, 20)
    targets = ["data"] if as_dir else [str(f.relative_to(project)) for f in files]
    first = [r.hash for r in _hasher(project, backend).hash_paths(targets)]
    reads = backend.files_read()
    second = [r.hash for r in _hasher(project, backend).hash_paths(targets)]
    assert second == first
    assert backend.files_read() == reads  # nothing was read


@pytest.mark.parametrize("as_dir", [True, False])
def test_touched_but_same_files_are_read_and_keep_their_hash(backend, project, as_dir):
    files = _make(project, 10)
    targets = ["data"] if as_dir else [str(f.relative_to(project)) for f in files]
    first = [r.hash for r in _hasher(project, backend).hash_paths(targets)]
    later = HOUR_AGO_NS + 60 * 1_000_000_000
    os.utime(files[3], ns=(later, later))
    reads = backend.files_read()
    second = [r.hash for r in _hasher(project, backend).hash_paths(targets)]
    assert second == first
    assert backend.files_read() == reads + 1  # exactly the touched file


@pytest.mark.parametrize("as_dir", [True, False])
def test_racy_files_are_hashed_again(backend, project, as_dir):
    """A file written just before it was hashed can change again within the
    file system's timestamp granularity without its stat changing: the memo
    must not trust it. Simulate that by rewriting it in place (same size,
    same inode) and putting its mtime back."""
    (path,) = _make(project, 1, mtime_ns=None)  # mtime: now, i.e. racy
    target = ["data"] if as_dir else [str(path.relative_to(project))]
    first = _hasher(project, backend).hash_paths(target)[0].hash
    st = path.stat()
    with open(path, "r+b") as handle:
        handle.write(b"X")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_ino == st.st_ino and path.stat().st_size == st.st_size
    second = _hasher(project, backend).hash_paths(target)[0].hash
    assert second != first


def test_memo_snapshot_is_shared_between_backends(core, project):
    from pivotbuild.hashing import PythonBackend

    _make(project, 15)
    python = PythonBackend()
    first = _hasher(project, core).hash_paths(["data"])[0].hash
    assert _hasher(project, python).hash_paths(["data"])[0].hash == first
    assert python.files_read() == 0  # the core's snapshot served the fallback
    reads = core.files_read()
    assert _hasher(project, core).hash_paths(["data"])[0].hash == first
    assert core.files_read() == reads


def test_corrupt_memo_only_costs_a_rehash(backend, project):
    _make(project, 5)
    first = _hasher(project, backend).hash_paths(["data"])[0].hash
    db = StateDB(project / ".pivotbuild" / "state.db")
    db.put_tree("data", b"PBSNAP01 definitely not a snapshot")
    db.close()
    reads = backend.files_read()
    assert _hasher(project, backend).hash_paths(["data"])[0].hash == first
    assert backend.files_read() == reads + 5


def test_no_state_outside_a_project(backend, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _make(tmp_path, 3)
    result = Hasher(None, None, 0, backend).hash_paths(["data"])[0]
    assert result.hash is not None and result.nfiles == 3
    assert not (tmp_path / ".pivotbuild").exists()


def test_memo_keeps_255_byte_names_and_empty_and_one_byte_files(backend, tmp_path):
    from pivotbuild.hashing import PythonBackend

    root = tmp_path / "t"
    deep = root / ("y" * 255) / ("y" * 255)
    deep.mkdir(parents=True)
    for name, content in (("z" * 255, b"long"), ("empty", b""), ("one", b"1")):
        (deep / name).write_bytes(content)
        os.utime(deep / name, ns=(HOUR_AGO_NS, HOUR_AGO_NS))
    first = backend.hash_tree(str(root), str(root))
    assert first.errors == [] and first.nfiles == 3
    for reader in (backend, PythonBackend()):  # the snapshot format is shared
        reads = reader.files_read()
        again = reader.hash_tree(str(root), str(root), first.snapshot)
        assert (again.hash, again.nread) == (first.hash, 0)
        assert reader.files_read() == reads
