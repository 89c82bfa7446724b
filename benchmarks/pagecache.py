"""Put files into a known page-cache state before timing them.

"In the page cache" is not one state. A file just written sits there in large
folios; a file that was evicted (on this VM a DAMON scheme pages out page cache
left idle for about a minute) and read back by readahead sits in smaller ones.
Hashing through mmap is more than twice as fast in the first state here, while
read() barely notices. So the benchmarks choose the state instead of inheriting
it:

    written  every file rewritten (new inode, same bytes), then flushed to disk
    reread   every file dropped from the cache (POSIX_FADV_DONTNEED), then read back
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

STATES = ("written", "reread")
_CHUNK = 4 << 20


def rewrite(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Write each file anew with the same bytes and mode, then sync."""
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    for p in map(Path, paths):
        tmp = p.with_name(p.name + ".rewrite")
        with open(p, "rb", buffering=0) as src, open(tmp, "wb", buffering=0) as dst:
            while n := src.readinto(buf):
                dst.write(view[:n])
        os.chmod(tmp, p.stat().st_mode & 0o7777)
        os.replace(tmp, p)
    os.sync()  # clean pages: no writeback threads competing with the timing


def reread(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Drop each file from the page cache, then read it back sequentially."""
    paths = list(paths)
    os.sync()  # dirty pages cannot be dropped
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    read_all(paths)


def read_all(paths: Iterable[str | os.PathLike[str]]) -> int:
    """Read every file once (whatever is not cached gets cached); returns bytes read."""
    buf = bytearray(1 << 20)
    total = 0
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total


def prepare(paths: Iterable[str | os.PathLike[str]], state: str) -> None:
    if state == "written":
        rewrite(paths)
    elif state == "reread":
        reread(paths)
    elif state != "as-is":
        raise ValueError(f"unknown page-cache state {state!r}")
