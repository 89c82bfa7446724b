"""Small helpers the benchmarks share for calling the compiled core directly."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from pivotbuild._core import ffi, lib

# Far in the future: a snapshot taken with this cutoff keeps every entry.
FAR_FUTURE_NS = 2**62


class FileBatch:
    """A pb_file array for a fixed list of paths, reusable across calls.

    The path char[] objects are kept referenced by the batch: cffi frees them
    as soon as nothing in Python holds them.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        self.paths = [os.fsencode(p) for p in paths]
        self._keep = [ffi.new("char[]", p) for p in self.paths]
        self.n = len(self.paths)
        self.files = ffi.new("pb_file[]", self.n)
        for f, c in zip(self.files, self._keep, strict=True):
            f.path = c

    def hash(self, nthreads: int) -> None:
        """Hash every file; raise if any failed."""
        if lib.pb_hash_files(self.files, self.n, nthreads):
            bad = next(f for f in self.files if f.status != lib.PB_OK)
            raise OSError(bad.err, f"pb_hash_files failed (status {bad.status})",
                          ffi.string(bad.path).decode(errors="replace"))

    def total_size(self) -> int:
        """Bytes hashed by the last call."""
        return sum(f.size for f in self.files)

    def hexdigest(self, i: int) -> str:
        return bytes(ffi.buffer(self.files[i].digest, 16)).hex()


@contextmanager
def mmap_threshold(value: int) -> Iterator[None]:
    old = lib.pb_get_mmap_threshold()
    lib.pb_set_mmap_threshold(value)
    try:
        yield
    finally:
        lib.pb_set_mmap_threshold(old)


@contextmanager
def simd(name: str) -> Iterator[bool]:
    """Force one XXH3 variant; yields False (and changes nothing) if the CPU lacks it."""
    old = ffi.string(lib.pb_simd_name())
    ok = lib.pb_set_simd(name.encode()) == 0
    try:
        yield ok
    finally:
        lib.pb_set_simd(old)


def snapshot(tree: object, cutoff_ns: int = FAR_FUTURE_NS) -> bytes:
    """The memo snapshot of a hashed tree, as bytes."""
    need = lib.pb_tree_snapshot(tree, cutoff_ns, ffi.NULL, 0)
    buf = ffi.new("char[]", max(1, need))
    got = lib.pb_tree_snapshot(tree, cutoff_ns, buf, need)
    assert got == need, (got, need)
    return bytes(ffi.buffer(buf, need))
