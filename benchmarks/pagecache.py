"""Put files into a known page-cache state before timing them.

"In the page cache" is not one state: what matters is the size of the folios the
kernel keeps the file in. A PMD-size folio (2 MiB) is mapped with one page-table
entry, so hashing through mmap costs almost nothing but memory bandwidth; a small
(4 KiB) folio costs a page-table entry, a reference and a reverse-map update on
the way in and out, which makes mmap dearer than read()'s copy (csrc/pb_hash.c,
benchmarks/README.md). Which folios a file gets depends on the kernel, the file
system and how the file came into the cache, so the benchmarks choose the state
instead of inheriting it:

    written  every file rewritten (new inode, same bytes), then flushed to disk:
             fresh outputs (large folios where the kernel and file system have them)
    reread   every file dropped from the cache (POSIX_FADV_DONTNEED), then read back
             sequentially: a checkout that sat until the VM paged it out (this VM
             pages out cache idle for about a minute) and was read again; folios as
             large as the device's readahead window allows
    small    dropped, then read back with readahead off (POSIX_FADV_RANDOM): every
             page in its own 4 KiB folio, as on any kernel or file system without
             large folios (ext4 before Linux 6.16) and for files read in small pieces

`pmd_share` tells how much of a file a fresh mapping maps with PMD entries.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

STATES = ("written", "reread", "small")
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


def drop(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Drop each file from the page cache (dirty pages are written first)."""
    os.sync()  # dirty pages cannot be dropped
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def reread(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Drop each file from the page cache, then read it back sequentially."""
    paths = list(paths)
    drop(paths)
    read_all(paths)


def reread_small(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Drop each file, then read it back without readahead: one 4 KiB folio per page."""
    paths = list(paths)
    drop(paths)
    buf = bytearray(1 << 20)
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            while os.readv(fd, [buf]):
                pass
        finally:
            os.close(fd)


def pmd_share(path: str | os.PathLike[str]) -> float:
    """The share of path (as cached now) that a fresh read-only mapping maps with PMD
    entries, i.e. held in PMD-size folios (from /proc/self/smaps; 0.0 if unknown)."""
    import mmap

    name = os.fspath(path)
    with open(name, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return 0.0
        m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE | mmap.MAP_POPULATE,
                      prot=mmap.PROT_READ)
        try:
            fields: dict[str, int] = {}
            inside = False
            real = os.path.realpath(name)
            with open("/proc/self/smaps") as smaps:
                for line in smaps:
                    parts = line.split()
                    if not parts[0].endswith(":"):  # a mapping's header line
                        inside = len(parts) >= 6 and parts[-1] == real
                    elif inside and parts[0] in ("Rss:", "FilePmdMapped:"):
                        fields[parts[0]] = int(parts[1])
        except OSError:
            return 0.0
        finally:
            m.close()
    return fields.get("FilePmdMapped:", 0) / fields["Rss:"] if fields.get("Rss:") else 0.0


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
    elif state == "small":
        reread_small(paths)
    elif state != "as-is":
        raise ValueError(f"unknown page-cache state {state!r}")
