"""Fixtures and helpers the store/ tests share (tests/test_store_*.py): real files in tmp_path,
every test run with the compiled core and with the pure-Python fallback."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pivotbuild import hashing
from pivotbuild.store.objects import ObjectStore
from pivotbuild.store.place import Placer
from pivotbuild.store.runcache import RunCache

H = "0123456789abcdef0123456789abcdef"
D = "fedcba9876543210fedcba9876543210"


@pytest.fixture(params=["core", "python"], autouse=True)
def each_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
                 ) -> hashing.Backend:
    """Run every test with the compiled core and with the pure-Python fallback."""
    if request.param == "core":
        try:
            backend: hashing.Backend = hashing.CoreBackend()
        except ImportError:
            pytest.skip("compiled core not built on this machine")
    else:
        backend = hashing.PythonBackend()
    monkeypatch.setattr(hashing, "_backend", backend)
    return backend


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    return root


@pytest.fixture
def objects(tmp_path: Path) -> ObjectStore:
    return ObjectStore(tmp_path / "proj" / ".pivotbuild" / "cache" / "files")


@pytest.fixture
def placer(objects: ObjectStore, project: Path) -> Placer:
    return Placer(objects, project)


@pytest.fixture
def runs(tmp_path: Path) -> RunCache:
    return RunCache(tmp_path / "proj" / ".pivotbuild" / "cache" / "runs")


def file_hash(path: Path) -> str:
    digest = hashing.get_backend().hash_files([str(path)])[0]
    assert digest.hash is not None, digest.error
    return digest.hash


def write(path: Path, data: bytes, executable: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o755 if executable else 0o644)
    return path


def tree_digest(path: Path, root: Path) -> hashing.TreeDigest:
    digest = hashing.get_backend().hash_tree(str(path), str(root))
    assert digest.hash is not None, digest.errors
    return digest


def make_tree(root: Path) -> Path:
    d = root / "model"
    write(d / "weights.bin", b"\x00\x01" * 5000)
    write(d / "run.sh", b"#!/bin/sh\necho hi\n", executable=True)
    write(d / "sub" / "deep" / "a.txt", b"same")
    write(d / "sub" / "b.txt", b"same")  # two files, one object
    write(d / "name with spaces\\and backslash", b"odd")
    return d


def temps_in(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.endswith(".tmp")]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def corrupt(path: Path, data: bytes = b"evil") -> None:
    """Overwrite an object in place: the inode stays, as through a hardlink."""
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()


def age(path: Path, seconds: float = 60) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


class DictMemo:
    """A stand-in for the state database's file memo."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[int, int, int, str]] = {}

    def get_files(self, paths):
        return {p: self.rows[p] for p in paths if p in self.rows}

    def put_files(self, rows):
        for path, size, mtime, ino, digest in rows:
            self.rows[path] = (size, mtime, ino, digest)


def counting_hash_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record every list of paths the hashing backend is asked to hash from now on."""
    backend = hashing.get_backend()
    calls: list[list[str]] = []
    real = backend.hash_files

    def counting(paths, jobs=0):
        calls.append(list(paths))
        return real(paths, jobs)

    monkeypatch.setattr(backend, "hash_files", counting)
    return calls
