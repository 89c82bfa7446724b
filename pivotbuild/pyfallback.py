"""The pure-Python hashing backend: os.scandir, os.read and the ``xxhash`` package.

It computes exactly what the compiled core (core.py) computes, more slowly, and takes and
produces the same memo snapshots (format: csrc/pb_tree.c, packed and unpacked below), so
a state.db written by one backend is read by the other. hashing.get_backend uses it when
the core was not built, or when ``PIVOTBUILD_PURE_PYTHON=1`` forces it (tests,
benchmarks). Batches run on a thread pool (``jobs`` threads) as the core's do.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import hashlib
import os
import stat
import struct
import time
from collections.abc import Sequence

import xxhash

from pivotbuild import manifest
from pivotbuild.atomic import unlink_quietly
from pivotbuild.hashtypes import (
    COPY_CHECK,
    COPY_KEEP_EXEC,
    COPY_MISMATCH,
    COPY_NO_UNNAMED,
    COPY_UNNAMED,
    ERR_IO,
    ERR_LINK_DANGLING,
    ERR_LINK_LOOP,
    ERR_LINK_OUTSIDE,
    ERR_NOT_REGULAR,
    LINK_PRESENT,
    OK,
    RACY_WINDOW_NS,
    STAT_CHANGED,
    CopyResult,
    FileDigest,
    TreeDigest,
    WalkEntry,
    describe,
)
from pivotbuild.names import dir_hash

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not needed at run time

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    _In = TypeVar("_In")
    _Out = TypeVar("_Out")
    # a directory's entry with its classification (see _walk_py's classify)
    _Kid = tuple[os.DirEntry[bytes], tuple[str, int, int, os.stat_result | None]]

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


def _snapshot_stats(data: bytes) -> list[tuple[bytes, int, int, int, int]] | None:
    """(raw relative path, size, mtime_ns, ino, mode) per record; None if it does not parse."""
    if len(data) < _SNAP_HEADER.size:
        return None
    magic, count, names_len = _SNAP_HEADER.unpack_from(data)
    body = _SNAP_HEADER.size + count * _SNAP_RECORD.size
    if magic != _SNAP_MAGIC or body + names_len != len(data):
        return None
    if count == 0:
        return None if names_len else []
    if not data.endswith(b"\0"):
        return None
    names = data[body:-1].split(b"\0")
    if len(names) != count:
        return None
    out = []
    for i, raw in enumerate(names):
        size, mtime, ino, mode, plen, _digest = _SNAP_RECORD.unpack_from(
            data, _SNAP_HEADER.size + i * _SNAP_RECORD.size)
        if plen != len(raw):
            return None
        out.append((raw, size, mtime, ino, mode))
    return out


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


# ---- the backend -------------------------------------------------------------

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

    def _map(self, fn: Callable[[_In], _Out], items: Sequence[_In], jobs: int) -> list[_Out]:
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
        dirs: list[tuple[bytes, int, int]] = []
        try:
            listing = _walk_py(
                root, os.fsencode(bound), os.stat(root), os.fsencode(skip) if skip else None,
                dirs,
            )
        except OSError as exc:
            return TreeDigest(path, None, errors=[("", exc.strerror or str(exc))])
        known = _unpack_snapshot(memo)

        def work(item: tuple[bytes, int, int]
                 ) -> tuple[bytes, int, int, bytes, os.stat_result | None, int, bool]:
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
        result.hash = dir_hash(result.manifest, self.hash_bytes)
        result.nfiles = len(good)
        cutoff = started - RACY_WINDOW_NS
        result.snapshot = _pack_snapshot([g for g in good if g[2] < cutoff])
        result.dirs = [(os.fsdecode(rel), mtime, ino, mtime < cutoff) for rel, mtime, ino in dirs]
        return result

    def check_tree(self, path: str, memo: bytes, dirs: Sequence[tuple[str, int, int]],
                   jobs: int = 0) -> tuple[int, list[int]] | None:
        records = _snapshot_stats(memo)
        if records is None:
            return None
        root = os.fsencode(path).rstrip(b"/") or b"/"

        def file_ok(record: tuple[bytes, int, int, int, int]) -> bool:
            try:
                st = os.stat(root + b"/" + record[0])
            except OSError:
                return False
            return (stat.S_ISREG(st.st_mode)
                    and (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode) == record[1:])

        def dir_status(stamp: tuple[str, int, int]) -> int:
            rel, mtime_ns, ino = stamp
            try:
                st = os.stat(root + b"/" + os.fsencode(rel) if rel else root)
            except OSError:
                return ERR_IO
            same = stat.S_ISDIR(st.st_mode) and (st.st_mtime_ns, st.st_ino) == (mtime_ns, ino)
            return OK if same else STAT_CHANGED

        changed = len(records) - sum(self._map(file_ok, records, jobs))
        return changed, self._map(dir_status, list(dirs), jobs)

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

    # ---- md5: DVC's content hashes (import-dvc) -------------------------------------------

    def md5_bytes(self, data: bytes) -> str:
        return hashlib.md5(data, usedforsecurity=False).hexdigest()

    def md5_files(self, items: Sequence[tuple[str, bool]], jobs: int = 0) -> list[FileDigest]:
        def one(item: tuple[str, bool]) -> FileDigest:
            path, dos2unix = item
            try:
                digest, size = _md5_file(path, dos2unix)
            except OSError as exc:
                status = ERR_NOT_REGULAR if exc.errno is None else ERR_IO
                return FileDigest(path, None, error=describe(status, exc.errno or 0))
            return FileDigest(path, digest, size)

        return self._map(one, items, jobs)

    def files_read(self) -> int:
        return self._reads


def _child_key(name: bytes, is_dir: bool) -> bytes:
    # Directories sort as if named "name/", so a depth-first visit in this
    # order lists files sorted by their whole relative path.
    return name + b"/" if is_dir else name


def _walk_py(
    root: bytes, bound: bytes, root_stat: os.stat_result, skip: bytes | None,
    dirs: list[tuple[bytes, int, int]] | None = None,
) -> list[tuple[bytes, int, int]]:
    """Every file below root as (relative path, status, errno), sorted as the core sorts.
    ``dirs`` gets each directory listed, as the core's walk stamps them: (relative path,
    mtime_ns, inode) from the stat taken before its listing was read, root first."""
    out: list[tuple[bytes, int, int]] = []
    stamps: list[tuple[bytes, int, int]] = [] if dirs is None else dirs
    stamps.append((b"", root_stat.st_mtime_ns, root_stat.st_ino))
    stack_ids = [(root_stat.st_dev, root_stat.st_ino)]
    bound_prefix = bound if bound.endswith(b"/") else bound + b"/"

    def classify(entry: os.DirEntry[bytes]) -> tuple[str, int, int, os.stat_result | None]:
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

    def children(directory: bytes, prefix: bytes) -> list[_Kid] | None:
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
            stamps.append((rel, st.st_mtime_ns, st.st_ino))
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


# ---- md5 (csrc/pb_md5.c does the same) ----------------------------------------

_DVC_CHUNK = 1 << 20  # DVC 2 reads, and so normalises, files this much at a time
_DVC_SNIFF = 512  # the first bytes of a chunk that decide whether it is text
_TEXT_BYTES = bytes(range(32, 127)) + b"\n\r\t\f\b"


def _looks_like_text(block: bytes) -> bool:
    if not block:
        return True
    if b"\x00" in block:
        return False
    return len(block.translate(None, _TEXT_BYTES)) * 10 <= len(block) * 3


def _md5_file(path: str, dos2unix: bool) -> tuple[str, int]:
    """(MD5 hex, bytes read) of the regular file at path; with dos2unix, DVC 2's
    md5-dos2unix (each 1 MiB chunk whose first 512 bytes look like text has its CRLFs
    hashed as LF). OSError without errno for something that is not a regular file."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError("not a regular file")
        # A small file is read in one call sized to it (most files of a large directory
        # are small: a whole chunk each would allocate 1 MiB per file).
        want = _DVC_CHUNK if st.st_size >= _DVC_CHUNK else st.st_size + 1
        read = 0
        while chunk := f.read(want):
            while len(chunk) < want and (more := f.read(want - len(chunk))):
                chunk += more  # a short read is not the end of a chunk
            read += len(chunk)
            if dos2unix and _looks_like_text(chunk[:_DVC_SNIFF]):
                chunk = chunk.replace(b"\r\n", b"\n")
            digest.update(chunk)
            want = _DVC_CHUNK
    return digest.hexdigest(), read
