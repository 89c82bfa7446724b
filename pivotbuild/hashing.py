"""Hashing files and directory trees: the only importer of the compiled core.

Two backends compute identical results:
- ``CoreBackend`` calls the C core (csrc/pivothash.h) once per batch; it
  walks, stats, reads or maps and hashes with its own thread pool, with the GIL
  released;
- ``PythonBackend`` does the same with ``os.scandir`` and the ``xxhash``
  package. It is used when the core was not built (with one warning saying how
  to get it) or when ``PIVOTBUILD_PURE_PYTHON=1`` forces it (tests, benchmarks).

Both take and produce the same memo snapshots (format: csrc/pb_tree.c), so a
state.db written by one is read by the other.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import os
import stat
import struct
import sys
import time
from collections import namedtuple
from collections.abc import Sequence

import xxhash

from pivotbuild import manifest
from pivotbuild.atomic import unlink_quietly

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hash fast path

PURE_PYTHON_ENV = "PIVOTBUILD_PURE_PYTHON"

# A file whose mtime lies within this window of the moment hashing began may
# still change without its mtime moving (file systems stamp with a coarse
# clock; some only to the second or two). Such "racy" entries are never
# trusted by the memo: they are read again next time.
RACY_WINDOW_NS = 2_000_000_000

# Statuses shared with the C core (pivothash.h).
OK, ERR_IO, ERR_NOT_REGULAR, ERR_LINK_OUTSIDE, ERR_LINK_DANGLING, ERR_LINK_LOOP = range(6)
LINK_PRESENT = 100
COPY_MISMATCH = 101
COPY_NO_UNNAMED = 102
# copy_files flags (pivothash.h): keep the copy only if it hashes to the expected digest;
# make it executable when the source is; start its writeback at once; write it as an
# unnamed file left open for publish_files; write whole blocks around the page cache.
COPY_CHECK, COPY_KEEP_EXEC, COPY_WRITEBACK, COPY_UNNAMED, COPY_DIRECT = 1, 2, 4, 8, 16

_STATUS_TEXT = {
    ERR_NOT_REGULAR: "not a regular file",
    ERR_LINK_OUTSIDE: "symlink points outside {bound}",
    ERR_LINK_DANGLING: "dangling symlink",
    ERR_LINK_LOOP: "symlink loop",
    COPY_MISMATCH: "its content does not match its hash",
    COPY_NO_UNNAMED: "the file system cannot create unnamed files",
}


def describe(status: int, err: int, bound_name: str = "the project") -> str:
    """One human phrase for a failed file, e.g. 'Permission denied'."""
    if status == ERR_IO:
        return os.strerror(err) if err else "I/O error"
    return _STATUS_TEXT[status].format(bound=bound_name)


# Result types are namedtuples and a plain class, not dataclasses: importing
# dataclasses costs the `hash` command a tenth of its start-up (entry.py).


class FileDigest(namedtuple("FileDigest", "path hash size mtime_ns ino mode error",
                            defaults=(0, 0, 0, 0, None))):
    """The hash of one file, or why there is none (``error``)."""

    __slots__ = ()


class CopyResult(namedtuple("CopyResult", "status err hash size src_mode fd", defaults=(-1,))):
    """One copy_files item: status OK (hash = the content's digest; with COPY_UNNAMED,
    ``fd`` is the copy, open), COPY_MISMATCH (the copy was dropped; hash = what the
    content hashes to), COPY_NO_UNNAMED, or an error with its errno."""

    __slots__ = ()

    @property
    def error(self) -> str | None:
        return None if self.status == OK else describe(self.status, self.err)


class WalkEntry(namedtuple("WalkEntry", "path size mtime_ns ino mode error",
                           defaults=(0, 0, 0, 0, None))):
    """One file below a walked directory (stat of the target for followed symlinks);
    ``path`` is relative and '/'-separated."""

    __slots__ = ()


class TreeDigest:
    """The hash of one directory, its manifest, and a snapshot for the memo."""

    __slots__ = ("errors", "hash", "manifest", "nfiles", "nread", "path", "size", "snapshot")

    def __init__(self, path: str, hash: str | None, manifest: bytes = b"", size: int = 0,
                 nfiles: int = 0, nread: int = 0, snapshot: bytes = b"",
                 errors: list[tuple[str, str]] | None = None) -> None:
        self.path = path
        self.hash = hash  # "<32 hex>.dir", or None when errors is not empty
        self.manifest = manifest
        self.size = size
        self.nfiles = nfiles
        self.nread = nread  # files actually read (the rest came from the memo)
        self.snapshot = snapshot
        self.errors = errors if errors is not None else []  # (relative path, problem)


if TYPE_CHECKING:  # the interface both backends provide (typing costs start-up time)
    from typing import Any, Protocol

    class Backend(Protocol):
        name: str

        def hash_bytes(self, data: bytes) -> str: ...

        def hash_files(self, paths: Sequence[str], jobs: int = 0) -> list[FileDigest]: ...

        def hash_tree(
            self, path: str, bound: str, memo: bytes | None = None, jobs: int = 0,
            bound_name: str = "the project", skip: str | None = None,
        ) -> TreeDigest: ...

        def walk(
            self, path: str, bound: str, skip: str | None = None, jobs: int = 0,
            bound_name: str = "the project",
        ) -> list[WalkEntry]:
            """Every file below path, sorted like the manifest, with its stat; the
            symlink rules of hash_tree apply. An entry whose path is longer than the system
            takes (4,095 bytes) is listed by its whole name with the error "File name too
            long", as hash_tree reports it. Raises OSError if path cannot be read."""
            ...

        def link_files(self, items: Sequence[tuple[str, str, int]], jobs: int = 0
                       ) -> list[tuple[int, int]]:
            """Hardlink each (src, dst, mode): link(src, dst) then chmod(dst, mode). Per item
            (status, errno): OK, LINK_PRESENT (dst existed, nothing done) or ERR_IO."""
            ...

        def copy_files(self, items: Sequence[tuple[str, str, int, int, str | None]],
                       jobs: int = 0) -> list[CopyResult]:
            """Copy each (src, dst, mode, flags, expected hash or None) to dst, a new name
            (O_EXCL), hashing the content on the way; dst gets ``mode`` (plus 0111 with
            COPY_KEEP_EXEC and an executable src) and is removed again on any failure or,
            with COPY_CHECK, when the content does not hash to the expected digest.

            With COPY_UNNAMED, dst is the final name and is not created: the copy is an
            unnamed file in dst's directory (O_TMPFILE), left open as the result's ``fd``,
            to be named by publish_files or dropped by closing it; a file system without
            unnamed files answers COPY_NO_UNNAMED. COPY_DIRECT is a hint: whole blocks may
            go around the page cache (for copies this machine will not read back)."""
            ...

        def publish_files(self, items: Sequence[tuple[int, str]], jobs: int = 0
                          ) -> list[tuple[int, int]]:
            """Give each unnamed copy (fd, dst) its name, never replacing a file: per item
            (status, errno): OK, LINK_PRESENT (dst existed; the copy is dropped) or ERR_IO.
            Every fd is closed."""
            ...

        def move_files(self, items: Sequence[tuple[str, str]], jobs: int = 0
                       ) -> list[tuple[int, int]]:
            """rename(src, dst) unless dst exists: then src (a temp holding the same
            content) is removed and the status is LINK_PRESENT. Per item (status, errno)."""
            ...

        def files_read(self) -> int: ...


# ---- memo snapshot (same bytes as pb_tree_snapshot writes) ------------------

_SNAP_MAGIC = b"PBSNAP01"
_SNAP_HEADER = struct.Struct("=8sQQ")
_SNAP_RECORD = struct.Struct("=QqQII16s")


def _pack_snapshot(records: list[tuple[bytes, int, int, int, int, bytes]]) -> bytes:
    """records: (raw relative path, size, mtime_ns, ino, mode, digest), sorted by path."""
    names = b"".join(r[0] + b"\0" for r in records)
    body = b"".join(
        _SNAP_RECORD.pack(size, mtime, ino, mode, len(raw), digest)
        for raw, size, mtime, ino, mode, digest in records
    )
    return _SNAP_HEADER.pack(_SNAP_MAGIC, len(records), len(names)) + body + names


def _unpack_snapshot(data: bytes | None) -> dict[bytes, tuple[int, int, int, bytes]]:
    """raw relative path -> (size, mtime_ns, ino, digest); {} if absent or corrupt."""
    if not data or len(data) < _SNAP_HEADER.size:
        return {}
    magic, count, names_len = _SNAP_HEADER.unpack_from(data)
    if magic != _SNAP_MAGIC or _SNAP_HEADER.size + count * _SNAP_RECORD.size + names_len != len(
        data
    ):
        return {}
    names = data[_SNAP_HEADER.size + count * _SNAP_RECORD.size :].split(b"\0")
    out = {}
    for i in range(count):
        size, mtime, ino, _mode, plen, digest = _SNAP_RECORD.unpack_from(
            data, _SNAP_HEADER.size + i * _SNAP_RECORD.size
        )
        if i >= len(names) or len(names[i]) != plen:
            return {}
        out[names[i]] = (size, mtime, ino, digest)
    return out


# ---- the compiled core --------------------------------------------------------


class CoreBackend:
    """The C core through cffi: one call per batch, GIL released."""

    name = "core"

    def __init__(self) -> None:
        from pivotbuild._core import ffi, lib

        self._ffi = ffi
        self._lib = lib

    @property
    def simd(self) -> str:
        return self._ffi.string(self._lib.pb_simd_name()).decode()

    def hash_bytes(self, data: bytes) -> str:
        out = self._ffi.new("uint8_t[16]")
        self._lib.pb_hash_buffer(data, len(data), out)
        return bytes(out).hex()

    def hash_files(self, paths: Sequence[str], jobs: int = 0) -> list[FileDigest]:
        ffi = self._ffi
        n = len(paths)
        if n == 0:
            return []
        files = ffi.new("pb_file[]", n)
        keep = [ffi.new("char[]", os.fsencode(p)) for p in paths]  # alive for the call
        for i, c_path in enumerate(keep):
            files[i].path = c_path
        self._lib.pb_hash_files(files, n, jobs)
        results = []
        for i, path in enumerate(paths):
            f = files[i]
            if f.status != OK:
                results.append(FileDigest(path, None, error=describe(f.status, f.err)))
            else:
                results.append(
                    FileDigest(path, bytes(ffi.buffer(f.digest)).hex(), f.size, f.mtime_ns,
                               f.ino, f.mode)
                )
        return results

    def hash_tree(
        self, path: str, bound: str, memo: bytes | None = None, jobs: int = 0,
        bound_name: str = "the project", skip: str | None = None,
    ) -> TreeDigest:
        ffi, lib = self._ffi, self._lib
        tree = lib.pb_tree_walk(
            os.fsencode(path), os.fsencode(bound), os.fsencode(skip) if skip else ffi.NULL
        )
        if tree == ffi.NULL:
            err = ffi.errno
            return TreeDigest(path, None, errors=[("", os.strerror(err))])
        try:
            memo_buf = memo if memo else ffi.NULL
            lib.pb_tree_hash(tree, memo_buf, len(memo) if memo else 0, jobs)
            result = TreeDigest(path, None, size=tree.total_size, nread=tree.nread)
            if tree.nerrors:
                names = ffi.buffer(tree.names, tree.names_len)
                for i in range(tree.n):
                    e = tree.entries[i]
                    if e.status != OK:
                        raw = names[e.path_off : e.path_off + e.path_len]
                        result.errors.append(
                            (os.fsdecode(raw), describe(e.status, e.err, bound_name))
                        )
                if not result.errors:  # only an allocation failure can get here
                    result.errors.append(("", os.strerror(errno_mod.ENOMEM)))
                return result
            result.manifest = ffi.buffer(tree.manifest, tree.manifest_len)[:]
            result.hash = bytes(ffi.buffer(tree.digest)).hex() + manifest.DIR_SUFFIX
            result.nfiles = tree.n
            cutoff = tree.started_ns - RACY_WINDOW_NS
            need = lib.pb_tree_snapshot(tree, cutoff, ffi.NULL, 0)
            snap = bytearray(need)
            lib.pb_tree_snapshot(tree, cutoff, ffi.from_buffer(snap), need)
            result.snapshot = bytes(snap)
            return result
        finally:
            lib.pb_tree_free(tree)

    def walk(
        self, path: str, bound: str, skip: str | None = None, jobs: int = 0,
        bound_name: str = "the project",
    ) -> list[WalkEntry]:
        ffi, lib = self._ffi, self._lib
        tree = lib.pb_tree_walk(
            os.fsencode(path), os.fsencode(bound), os.fsencode(skip) if skip else ffi.NULL
        )
        if tree == ffi.NULL:
            err = ffi.errno
            raise OSError(err, os.strerror(err), path)
        try:
            lib.pb_tree_stat(tree, jobs)
            names = ffi.buffer(tree.names, tree.names_len)
            out = []
            for i in range(tree.n):
                e = tree.entries[i]
                rel = os.fsdecode(names[e.path_off : e.path_off + e.path_len])
                if e.status != OK:
                    out.append(WalkEntry(rel, error=describe(e.status, e.err, bound_name)))
                else:
                    out.append(WalkEntry(rel, e.size, e.mtime_ns, e.ino, e.mode))
            return out
        finally:
            lib.pb_tree_free(tree)

    def _src_dst(self, ctype: str, pairs: Sequence[tuple[str, str]]) -> tuple[Any, list[Any]]:
        """A new ``ctype[]`` (pb_link or pb_move) with each item's src and dst set, and the
        path buffers, which must outlive the call."""
        ffi = self._ffi
        items = ffi.new(f"{ctype}[]", len(pairs))
        keep: list[Any] = []
        for i, (src, dst) in enumerate(pairs):
            c_src, c_dst = ffi.new("char[]", os.fsencode(src)), ffi.new("char[]", os.fsencode(dst))
            keep += (c_src, c_dst)
            items[i].src, items[i].dst = c_src, c_dst
        return items, keep

    def link_files(self, items: Sequence[tuple[str, str, int]], jobs: int = 0
                   ) -> list[tuple[int, int]]:
        if not items:
            return []
        links, keep = self._src_dst("pb_link", [(src, dst) for src, dst, _mode in items])
        for i, (_src, _dst, mode) in enumerate(items):
            links[i].mode = mode
        self._lib.pb_link_files(links, len(items), jobs)
        del keep  # the paths lived through the call
        return [(links[i].status, links[i].err) for i in range(len(items))]

    def copy_files(self, items: Sequence[tuple[str, str, int, int, str | None]],
                   jobs: int = 0) -> list[CopyResult]:
        ffi = self._ffi
        n = len(items)
        if n == 0:
            return []
        copies = ffi.new("pb_copy[]", n)
        keep: list[Any] = []  # the path buffers must outlive the call
        for i, (src, dst, mode, flags, expect) in enumerate(items):
            c_src, c_dst = ffi.new("char[]", os.fsencode(src)), ffi.new("char[]", os.fsencode(dst))
            keep += (c_src, c_dst)
            item = copies[i]
            item.src, item.dst, item.mode, item.flags = c_src, c_dst, mode, flags
            if expect is not None:
                ffi.memmove(item.expect, bytes.fromhex(expect), 16)
        self._lib.pb_copy_files(copies, n, jobs)
        out = []
        for i in range(n):
            c = copies[i]
            digest = bytes(ffi.buffer(c.digest)).hex() if c.status in (OK, COPY_MISMATCH) else None
            out.append(CopyResult(c.status, c.err, digest, c.size, c.src_mode, c.fd))
        return out

    def publish_files(self, items: Sequence[tuple[int, str]], jobs: int = 0
                      ) -> list[tuple[int, int]]:
        ffi = self._ffi
        if not items:
            return []
        pubs = ffi.new("pb_publish[]", len(items))
        keep: list[Any] = []  # the path buffers must outlive the call
        for i, (fd, dst) in enumerate(items):
            c_dst = ffi.new("char[]", os.fsencode(dst))
            keep.append(c_dst)
            pubs[i].fd, pubs[i].dst = fd, c_dst
        self._lib.pb_publish_files(pubs, len(items), jobs)
        return [(pubs[i].status, pubs[i].err) for i in range(len(items))]

    def move_files(self, items: Sequence[tuple[str, str]], jobs: int = 0
                   ) -> list[tuple[int, int]]:
        if not items:
            return []
        moves, keep = self._src_dst("pb_move", items)
        self._lib.pb_move_files(moves, len(items), jobs)
        del keep  # the paths lived through the call
        return [(moves[i].status, moves[i].err) for i in range(len(items))]

    def files_read(self) -> int:
        return int(self._lib.pb_files_read())


# ---- the pure-Python fallback -------------------------------------------------

# open(O_TMPFILE) failing so means no unnamed files here: EISDIR from a kernel without
# O_TMPFILE, EOPNOTSUPP from a file system without.
_NO_UNNAMED_ERRNOS = (errno_mod.EOPNOTSUPP, errno_mod.EISDIR, errno_mod.EINVAL)


def _open_copy(dst: str, unnamed: bool) -> int:
    """What a copy is written to: a new file by dst's name (a temp), or an unnamed file in
    dst's directory. No permission for others to write, even for a moment."""
    if unnamed:
        return os.open(os.path.dirname(dst) or ".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC,
                       0o600)
    return os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)


def _drop_copy(fd: int, dst: str, unnamed: bool) -> None:
    """Give up a copy: an unnamed one vanishes when closed, a temp is removed."""
    with contextlib.suppress(OSError):
        os.close(fd)
    if not unnamed:
        unlink_quietly(dst)


def _hash_file_py(path: str | bytes) -> tuple[bytes, os.stat_result, int]:
    """Digest, fstat and bytes hashed of one regular file; raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular()
        hasher = xxhash.xxh3_128()
        total = 0
        while chunk := os.read(fd, 1 << 20):
            hasher.update(chunk)
            total += len(chunk)
        return hasher.digest(), st, total
    finally:
        os.close(fd)


class _NotRegular(Exception):
    pass


class PythonBackend:
    """os.scandir + the xxhash package: identical results, slower."""

    name = "python"
    simd = "none"

    def __init__(self) -> None:
        self._reads = 0

    def hash_bytes(self, data: bytes) -> str:
        return xxhash.xxh3_128_hexdigest(data)

    def _hash_one(self, path: str | bytes) -> tuple[int, int, bytes, os.stat_result | None, int]:
        """(status, errno, digest, stat, size) of one file."""
        self._reads += 1
        try:
            digest, st, total = _hash_file_py(path)
        except _NotRegular:
            return ERR_NOT_REGULAR, 0, b"", None, 0
        except OSError as exc:
            return ERR_IO, exc.errno or 0, b"", None, 0
        return OK, 0, digest, st, total

    def _map(self, fn, items: Sequence, jobs: int) -> list:
        workers = jobs if jobs > 0 else (os.cpu_count() or 1)
        if workers == 1 or len(items) < 2:
            return [fn(item) for item in items]
        from concurrent.futures import ThreadPoolExecutor  # only the fallback needs it

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(fn, items, chunksize=16))

    def hash_files(self, paths: Sequence[str], jobs: int = 0) -> list[FileDigest]:
        results = []
        for path, (status, err, digest, st, size) in zip(
            paths, self._map(self._hash_one, paths, jobs)
        ):
            if status != OK or st is None:
                results.append(FileDigest(path, None, error=describe(status, err)))
            else:
                results.append(
                    FileDigest(path, digest.hex(), size, st.st_mtime_ns, st.st_ino, st.st_mode)
                )
        return results

    def hash_tree(
        self, path: str, bound: str, memo: bytes | None = None, jobs: int = 0,
        bound_name: str = "the project", skip: str | None = None,
    ) -> TreeDigest:
        started = time.time_ns()
        root = os.fsencode(path).rstrip(b"/") or b"/"
        try:
            listing = _walk_py(
                root, os.fsencode(bound), os.stat(root), os.fsencode(skip) if skip else None
            )
        except OSError as exc:
            return TreeDigest(path, None, errors=[("", exc.strerror or str(exc))])
        known = _unpack_snapshot(memo)

        def work(item: tuple[bytes, int, int]) -> tuple:
            rel, status, err = item
            if status != OK:
                return rel, status, err, b"", None, 0, False
            full = root + b"/" + rel
            record = known.get(rel)
            if record is not None:
                try:
                    st = os.stat(full)
                except OSError:
                    st = None
                if (st is not None and stat.S_ISREG(st.st_mode)
                        and (st.st_size, st.st_mtime_ns, st.st_ino) == record[:3]):
                    return rel, OK, 0, record[3], st, st.st_size, True
            status, err, digest, st, size = self._hash_one(full)
            return rel, status, err, digest, st, size, False

        result = TreeDigest(path, None)
        good = []
        for rel, status, err, digest, st, size, from_memo in self._map(work, listing, jobs):
            if status != OK or st is None:
                result.errors.append((os.fsdecode(rel), describe(status, err, bound_name)))
                continue
            good.append((rel, size, st.st_mtime_ns, st.st_ino, st.st_mode, digest))
            result.size += size
            result.nread += not from_memo
        if result.errors:
            return result
        entries = [
            manifest.ManifestEntry(os.fsdecode(rel), digest.hex(), size, bool(mode & stat.S_IXUSR))
            for rel, size, _mtime, _ino, mode, digest in good
        ]
        result.manifest = manifest.build(entries)
        result.hash = self.hash_bytes(result.manifest) + manifest.DIR_SUFFIX
        result.nfiles = len(good)
        cutoff = started - RACY_WINDOW_NS
        result.snapshot = _pack_snapshot([g for g in good if g[2] < cutoff])
        return result

    def walk(
        self, path: str, bound: str, skip: str | None = None, jobs: int = 0,
        bound_name: str = "the project",
    ) -> list[WalkEntry]:
        root = os.fsencode(path).rstrip(b"/") or b"/"
        listing = _walk_py(
            root, os.fsencode(bound), os.stat(root), os.fsencode(skip) if skip else None
        )

        def stat_one(item: tuple[bytes, int, int]) -> WalkEntry:
            rel, status, err = item
            name = os.fsdecode(rel)
            if status != OK:
                return WalkEntry(name, error=describe(status, err, bound_name))
            try:
                st = os.stat(root + b"/" + rel)
            except OSError as exc:
                return WalkEntry(name, error=describe(ERR_IO, exc.errno or 0))
            if not stat.S_ISREG(st.st_mode):
                return WalkEntry(name, error=describe(ERR_NOT_REGULAR, 0))
            return WalkEntry(name, st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode)

        return self._map(stat_one, listing, jobs)

    def link_files(self, items: Sequence[tuple[str, str, int]], jobs: int = 0
                   ) -> list[tuple[int, int]]:
        def one(item: tuple[str, str, int]) -> tuple[int, int]:
            src, dst, mode = item
            try:
                os.link(src, dst)
            except FileExistsError:
                return LINK_PRESENT, 0
            except OSError as exc:
                return ERR_IO, exc.errno or 0
            try:
                os.chmod(dst, mode)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(dst)
                return ERR_IO, exc.errno or 0
            return OK, 0

        return self._map(one, items, jobs)

    def copy_files(self, items: Sequence[tuple[str, str, int, int, str | None]],
                   jobs: int = 0) -> list[CopyResult]:
        # COPY_DIRECT and COPY_WRITEBACK are hints this backend does not take.
        def one(item: tuple[str, str, int, int, str | None]) -> CopyResult:
            src, dst, mode, flags, expect = item
            unnamed = bool(flags & COPY_UNNAMED)
            try:
                fd_in = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
            except OSError as exc:
                return CopyResult(ERR_IO, exc.errno or 0, None, 0, 0)
            try:
                st = os.fstat(fd_in)
                if not stat.S_ISREG(st.st_mode):
                    return CopyResult(ERR_NOT_REGULAR, 0, None, 0, st.st_mode)
                try:
                    fd_out = _open_copy(dst, unnamed)
                except OSError as exc:
                    if unnamed and exc.errno in _NO_UNNAMED_ERRNOS:
                        return CopyResult(COPY_NO_UNNAMED, 0, None, 0, st.st_mode)
                    raise
                hasher, total = xxhash.xxh3_128(), 0
                try:
                    while chunk := os.read(fd_in, 1 << 20):
                        hasher.update(chunk)
                        total += len(chunk)
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd_out, view):]
                    exec_bit = 0o111 if flags & COPY_KEEP_EXEC and st.st_mode & stat.S_IXUSR else 0
                    os.fchmod(fd_out, mode | exec_bit)
                except OSError:
                    _drop_copy(fd_out, dst, unnamed)
                    raise
            except OSError as exc:
                return CopyResult(ERR_IO, exc.errno or 0, None, 0, 0)
            finally:
                os.close(fd_in)
            digest = hasher.hexdigest()
            if flags & COPY_CHECK and digest != expect:
                _drop_copy(fd_out, dst, unnamed)
                return CopyResult(COPY_MISMATCH, 0, digest, total, st.st_mode)
            if unnamed:
                return CopyResult(OK, 0, digest, total, st.st_mode, fd_out)
            try:
                os.close(fd_out)
            except OSError as exc:
                unlink_quietly(dst)
                return CopyResult(ERR_IO, exc.errno or 0, None, 0, st.st_mode)
            return CopyResult(OK, 0, digest, total, st.st_mode)

        return self._map(one, items, jobs)

    def publish_files(self, items: Sequence[tuple[int, str]], jobs: int = 0
                      ) -> list[tuple[int, int]]:
        def one(item: tuple[int, str]) -> tuple[int, int]:
            fd, dst = item
            directory, name = os.path.split(dst)
            try:
                # linkat(AT_SYMLINK_FOLLOW) of the fd's /proc entry links the unnamed file;
                # os.link calls that only when given a directory fd (else plain link()).
                dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd)
                finally:
                    os.close(dir_fd)
                result = OK, 0
            except FileExistsError:
                result = LINK_PRESENT, 0
            except OSError as exc:
                result = ERR_IO, exc.errno or 0
            try:
                os.close(fd)
            except OSError as exc:
                if result[0] == OK:  # a late write error: the name must not stand
                    unlink_quietly(dst)
                    result = ERR_IO, exc.errno or 0
            return result

        return self._map(one, items, jobs)

    def move_files(self, items: Sequence[tuple[str, str]], jobs: int = 0
                   ) -> list[tuple[int, int]]:
        def one(item: tuple[str, str]) -> tuple[int, int]:
            src, dst = item
            try:  # link + unlink: no rename in Python refuses to replace
                os.link(src, dst)
            except FileExistsError:
                with contextlib.suppress(OSError):
                    os.unlink(src)
                return LINK_PRESENT, 0
            except OSError as exc:
                return ERR_IO, exc.errno or 0
            with contextlib.suppress(OSError):
                os.unlink(src)
            return OK, 0

        return self._map(one, items, jobs)

    def files_read(self) -> int:
        return self._reads


def _child_key(name: bytes, is_dir: bool) -> bytes:
    # Directories sort as if named "name/", so a depth-first visit in this
    # order lists files sorted by their whole relative path.
    return name + b"/" if is_dir else name


def _walk_py(
    root: bytes, bound: bytes, root_stat: os.stat_result, skip: bytes | None
) -> list[tuple[bytes, int, int]]:
    """Every file below root as (relative path, status, errno), sorted as the core sorts."""
    out: list[tuple[bytes, int, int]] = []
    stack_ids = [(root_stat.st_dev, root_stat.st_ino)]
    bound_prefix = bound if bound.endswith(b"/") else bound + b"/"

    def classify(entry: os.DirEntry) -> tuple[str, int, int, os.stat_result | None]:
        try:
            if entry.is_symlink():
                try:
                    real = os.path.realpath(entry.path, strict=True)
                except FileNotFoundError:
                    return "bad", ERR_LINK_DANGLING, errno_mod.ENOENT, None
                except NotADirectoryError:
                    return "bad", ERR_LINK_DANGLING, errno_mod.ENOTDIR, None
                except OSError as exc:
                    if exc.errno == errno_mod.ELOOP:
                        return "bad", ERR_LINK_LOOP, exc.errno, None
                    return "bad", ERR_IO, exc.errno or 0, None
                if real != bound and not real.startswith(bound_prefix) and bound != b"/":
                    return "bad", ERR_LINK_OUTSIDE, 0, None
                st = os.stat(entry.path)
                if stat.S_ISDIR(st.st_mode):
                    if (st.st_dev, st.st_ino) in stack_ids:
                        return "bad", ERR_LINK_LOOP, 0, None
                    return "dir", OK, 0, st
                if stat.S_ISREG(st.st_mode):
                    return "file", OK, 0, None
                return "bad", ERR_NOT_REGULAR, 0, None
            if entry.is_dir(follow_symlinks=False):
                return "dir", OK, 0, None
            if entry.is_file(follow_symlinks=False):
                return "file", OK, 0, None
            return "bad", ERR_NOT_REGULAR, 0, None
        except OSError as exc:
            return "bad", ERR_IO, exc.errno or 0, None

    def children(directory: bytes, prefix: bytes) -> list | None:
        """directory's entries, classified and sorted; None (an error entry) if unreadable."""
        try:
            with os.scandir(directory) as it:
                kids = [(entry, classify(entry)) for entry in it]
        except OSError as exc:
            if not prefix:
                raise
            out.append((prefix[:-1], ERR_IO, exc.errno or 0))
            return None
        kids.sort(key=lambda k: _child_key(k[0].name, k[1][0] == "dir"))
        return kids

    # Depth first with a stack of open listings, not recursion: within PATH_MAX a tree
    # can be ~2,000 levels deep, past Python's recursion limit. stack_ids holds the
    # directories being listed (for classify's loop check), one per frame.
    frames = [(root, b"", iter(children(root, b"") or []))]
    while frames:
        directory, prefix, kids = frames[-1]
        for entry, (kind, status, err, _st) in kids:
            rel = prefix + entry.name
            if kind != "dir":
                out.append((rel, status, err))
                continue
            if skip is not None and directory + b"/" + entry.name == skip:
                continue
            try:
                st = os.stat(entry.path)
            except OSError as exc:
                out.append((rel, ERR_IO, exc.errno or 0))
                continue
            stack_ids.append((st.st_dev, st.st_ino))
            sub = children(entry.path, rel + b"/")
            if sub is None:
                stack_ids.pop()
                continue
            frames.append((entry.path, rel + b"/", iter(sub)))
            break
        else:
            frames.pop()
            stack_ids.pop()
    return out


# ---- choosing a backend -------------------------------------------------------

_backend: Backend | None = None


def get_backend() -> Backend:
    """The process-wide backend: the core unless it is missing or forced off."""
    global _backend
    if _backend is None:
        if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
            _backend = PythonBackend()
        else:
            try:
                _backend = CoreBackend()
            except ImportError as exc:
                print(
                    "pivotbuild: warning: the compiled hashing core is not available "
                    f"({exc}); hashing with the slower pure-Python xxhash. For full speed "
                    "install gcc and libxxhash-dev (apt-get install gcc libxxhash-dev), then "
                    "reinstall pivotbuild.",
                    file=sys.stderr,
                )
                _backend = PythonBackend()
    return _backend
