"""The compiled hashing core through cffi: one thin method per C function of csrc/pivothash.h.

Each wrapper turns Python arguments into the C structs the function takes, calls it (cffi
releases the GIL around every call), checks its status (the return value and every item's
status and errno) and copies the results out into the types of hashtypes.py. Buffers the
core reads from are kept alive until the call returns. The composite operations of the
``Backend`` protocol (hash_tree, walk) are built from these wrappers; every walked tree is
freed again, whatever happens. ``_ffi`` and ``_lib`` stay available to tests and benchmarks
that drive the C functions directly.
"""

from __future__ import annotations

import errno as errno_mod
import os
from collections.abc import Sequence

from pivotbuild.hashtypes import (
    COPY_MISMATCH,
    ERR_IO,
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
from pivotbuild.names import DIR_SUFFIX

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hash fast path

if TYPE_CHECKING:
    from typing import Any


class CoreBackend:
    """The C core through cffi: one call per batch, GIL released. Raises ImportError when
    the core was not built."""

    name = "core"

    def __init__(self) -> None:
        from pivotbuild._core import ffi, lib

        self._ffi = ffi
        self._lib = lib

    # ---- hash: buffers and files --------------------------------------------------------

    def hash_bytes(self, data: bytes) -> str:
        """pb_hash_buffer: the hex digest of data."""
        out = self._ffi.new("uint8_t[16]")
        self._lib.pb_hash_buffer(data, len(data), out)
        return bytes(out).hex()

    def hash_files(self, paths: Sequence[str], jobs: int = 0) -> list[FileDigest]:
        """pb_hash_files: each path's digest and stat, or why there is none."""
        ffi = self._ffi
        n = len(paths)
        if n == 0:
            return []
        files = ffi.new("pb_file[]", n)
        keep = [ffi.new("char[]", os.fsencode(p)) for p in paths]  # alive for the call
        for i, c_path in enumerate(keep):
            files[i].path = c_path
        failed = self._lib.pb_hash_files(files, n, jobs)
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
        _check_count("pb_hash_files", failed, sum(r.error is not None for r in results))
        return results

    # ---- md5: DVC's content hashes (import-dvc) ---------------------------------------------

    def md5_bytes(self, data: bytes) -> str:
        """pb_md5_buffer: the MD5 hex digest of data."""
        out = self._ffi.new("uint8_t[16]")
        self._lib.pb_md5_buffer(data, len(data), out)
        return bytes(out).hex()

    def md5_files(self, items: Sequence[tuple[str, bool]], jobs: int = 0) -> list[FileDigest]:
        """pb_md5_files: each (path, dos2unix) file's MD5 and size, or why there is none."""
        ffi = self._ffi
        n = len(items)
        if n == 0:
            return []
        files = ffi.new("pb_md5_file[]", n)
        keep = [ffi.new("char[]", os.fsencode(p)) for p, _ in items]  # alive for the call
        flag = self._lib.PB_MD5_DOS2UNIX
        for i, (c_path, (_, dos2unix)) in enumerate(zip(keep, items, strict=True)):
            files[i].path = c_path
            files[i].flags = flag if dos2unix else 0
        failed = self._lib.pb_md5_files(files, n, jobs)
        results = []
        for i, (path, _) in enumerate(items):
            f = files[i]
            if f.status != OK:
                results.append(FileDigest(path, None, error=describe(f.status, f.err)))
            else:
                results.append(FileDigest(path, bytes(ffi.buffer(f.digest)).hex(), f.size))
        _check_count("pb_md5_files", failed, sum(r.error is not None for r in results))
        return results

    # ---- tuning and counters --------------------------------------------------------------

    @property
    def simd(self) -> str:
        """pb_simd_name: the XXH3 instruction set in use ("sse2", "avx2" or "avx512")."""
        name: bytes = self._ffi.string(self._lib.pb_simd_name())
        return name.decode()

    def set_simd(self, name: str) -> None:
        """pb_set_simd: force an instruction set, or "auto"; ValueError if this CPU lacks it."""
        if self._lib.pb_set_simd(name.encode()) != 0:
            raise ValueError(f"instruction set not available here: {name!r}")

    @property
    def mmap_threshold(self) -> int:
        """pb_get_mmap_threshold: files at least this big may be hashed from mappings."""
        return int(self._lib.pb_get_mmap_threshold())

    def set_mmap_threshold(self, size: int) -> None:
        """pb_set_mmap_threshold."""
        if size < 0:
            raise ValueError(f"a size cannot be negative: {size}")
        self._lib.pb_set_mmap_threshold(size)

    @property
    def map_always(self) -> bool:
        """pb_get_map_mode: True when every window of a large file is mapped (PB_MAP_ALWAYS),
        False when only those the page cache holds in PMD-size folios are (PB_MAP_AUTO)."""
        return int(self._lib.pb_get_map_mode()) == int(self._lib.PB_MAP_ALWAYS)

    def set_map_always(self, always: bool) -> None:
        """pb_set_map_mode."""
        mode = self._lib.PB_MAP_ALWAYS if always else self._lib.PB_MAP_AUTO
        if self._lib.pb_set_map_mode(mode) != 0:
            raise ValueError(f"the core refused map mode {mode}")

    def files_read(self) -> int:
        """pb_files_read: files the core opened for reading since it was loaded."""
        return int(self._lib.pb_files_read())

    def bytes_mapped(self) -> int:
        """pb_bytes_mapped: bytes of large files hashed from mappings since load."""
        return int(self._lib.pb_bytes_mapped())

    def files_copied(self) -> int:
        """pb_files_copied: files pb_copy_files began to write since load."""
        return int(self._lib.pb_files_copied())

    # ---- tree: walk, stat, hash against a memo, snapshot ----------------------------------

    def _tree_walk(self, path: str, bound: str, skip: str | None) -> Any:
        """pb_tree_walk: the walked tree (free it with pb_tree_free); OSError if path cannot
        be read."""
        ffi = self._ffi
        tree = self._lib.pb_tree_walk(
            os.fsencode(path), os.fsencode(bound), os.fsencode(skip) if skip else ffi.NULL
        )
        if tree == ffi.NULL:
            err = ffi.errno
            raise OSError(err, os.strerror(err), path)
        return tree

    def _walked(self, path: str, bound: str, skip: str | None) -> _Walked:
        return _Walked(self, path, bound, skip)

    def _tree_stat(self, tree: Any, jobs: int) -> None:
        """pb_tree_stat: fills every entry's stat fields (or its status)."""
        failed = self._lib.pb_tree_stat(tree, jobs)
        _check_count("pb_tree_stat", failed, tree.nerrors)

    def _tree_hash(self, tree: Any, memo: bytes | None, jobs: int) -> None:
        """pb_tree_hash: every entry hashed or taken from the memo, then the manifest."""
        ffi = self._ffi
        memo_buf = memo if memo else ffi.NULL
        failed = self._lib.pb_tree_hash(tree, memo_buf, len(memo) if memo else 0, jobs)
        _check_count("pb_tree_hash", failed, tree.nerrors)

    def _tree_snapshot(self, tree: Any, racy_cutoff_ns: int) -> bytes:
        """pb_tree_snapshot: the memo snapshot of tree's entries older than the cutoff."""
        ffi, lib = self._ffi, self._lib
        need = lib.pb_tree_snapshot(tree, racy_cutoff_ns, ffi.NULL, 0)
        snap = bytearray(need)
        wrote = lib.pb_tree_snapshot(tree, racy_cutoff_ns, ffi.from_buffer(snap), need)
        if wrote != need:
            raise RuntimeError(f"pb_tree_snapshot needed {need} bytes, then {wrote}")
        return bytes(snap)

    def _names(self, tree: Any) -> Any:
        """The tree's names buffer: entry i's relative path is
        ``names[e.path_off : e.path_off + e.path_len]``."""
        return self._ffi.buffer(tree.names, tree.names_len)

    def hash_tree(
        self, path: str, bound: str, memo: bytes | None = None, jobs: int = 0,
        bound_name: str = "the project", skip: str | None = None,
    ) -> TreeDigest:
        try:
            walked = self._walked(path, bound, skip)
        except OSError as exc:
            return TreeDigest(path, None, errors=[("", os.strerror(exc.errno or 0))])
        with walked as tree:
            self._tree_hash(tree, memo, jobs)
            result = TreeDigest(path, None, size=tree.total_size, nread=tree.nread)
            if tree.nerrors:
                names = self._names(tree)
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
            result.manifest = self._ffi.buffer(tree.manifest, tree.manifest_len)[:]
            result.hash = bytes(self._ffi.buffer(tree.digest)).hex() + DIR_SUFFIX
            result.nfiles = tree.n
            cutoff = tree.started_ns - RACY_WINDOW_NS
            result.snapshot = self._tree_snapshot(tree, cutoff)
            result.dirs = self._tree_dirs(tree, cutoff)
            return result

    def _tree_dirs(self, tree: Any, racy_cutoff_ns: int) -> list[tuple[str, int, int, bool]]:
        """The walk's directory stamps: (relative path, mtime_ns, inode, trusted)."""
        names = self._ffi.buffer(tree.dir_names, tree.dir_names_len) if tree.ndirs else b""
        out = []
        for i in range(tree.ndirs):
            d = tree.dirs[i]
            rel = os.fsdecode(names[d.path_off : d.path_off + d.path_len])
            out.append((rel, d.mtime_ns, d.ino, d.mtime_ns < racy_cutoff_ns))
        return out

    def check_tree(self, path: str, memo: bytes, dirs: Sequence[tuple[str, int, int]],
                   jobs: int = 0) -> tuple[int, list[int]] | None:
        """pb_tree_check: (how many of the memo's files differ from their record, and per
        directory of ``dirs`` (relative path, mtime_ns, inode) OK, STAT_CHANGED or ERR_IO),
        or None when the memo does not parse."""
        ffi = self._ffi
        stamps = ffi.new("pb_dir_stamp[]", max(1, len(dirs)))
        keep = []  # the path buffers must outlive the call
        for i, (rel, mtime_ns, ino) in enumerate(dirs):
            c_rel = ffi.new("char[]", os.fsencode(rel))
            keep.append(c_rel)
            stamps[i].path, stamps[i].mtime_ns, stamps[i].ino = c_rel, mtime_ns, ino
        changed = self._lib.pb_tree_check(os.fsencode(path), memo, len(memo), ffi.NULL, stamps,
                                          len(dirs), jobs)
        del keep
        if changed == _SIZE_MAX:
            return None
        statuses = [stamps[i].status for i in range(len(dirs))]
        if any(s not in (OK, STAT_CHANGED, ERR_IO) for s in statuses):
            raise RuntimeError(f"pb_tree_check: a directory status out of range: {statuses}")
        return int(changed), statuses

    def walk(
        self, path: str, bound: str, skip: str | None = None, jobs: int = 0,
        bound_name: str = "the project",
    ) -> list[WalkEntry]:
        with self._walked(path, bound, skip) as tree:
            self._tree_stat(tree, jobs)
            names = self._names(tree)
            out = []
            for i in range(tree.n):
                e = tree.entries[i]
                rel = os.fsdecode(names[e.path_off : e.path_off + e.path_len])
                if e.status != OK:
                    out.append(WalkEntry(rel, error=describe(e.status, e.err, bound_name)))
                else:
                    out.append(WalkEntry(rel, e.size, e.mtime_ns, e.ino, e.mode))
            return out

    # ---- store: bulk link, copy, publish and move -----------------------------------------

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
        """pb_link_files."""
        if not items:
            return []
        links, keep = self._src_dst("pb_link", [(src, dst) for src, dst, _mode in items])
        for i, (_src, _dst, mode) in enumerate(items):
            links[i].mode = mode
        failed = self._lib.pb_link_files(links, len(items), jobs)
        del keep  # the paths lived through the call
        out = [(links[i].status, links[i].err) for i in range(len(items))]
        _check_count("pb_link_files", failed, sum(s not in (OK, LINK_PRESENT) for s, _ in out))
        return out

    def copy_files(self, items: Sequence[tuple[str, str, int, int, str | None]],
                   jobs: int = 0) -> list[CopyResult]:
        """pb_copy_files."""
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
        failed = self._lib.pb_copy_files(copies, n, jobs)
        out = []
        for i in range(n):
            c = copies[i]
            digest = bytes(ffi.buffer(c.digest)).hex() if c.status in (OK, COPY_MISMATCH) else None
            out.append(CopyResult(c.status, c.err, digest, c.size, c.src_mode, c.fd))
        _check_count("pb_copy_files", failed, sum(r.status != OK for r in out))
        return out

    def publish_files(self, items: Sequence[tuple[int, str]], jobs: int = 0
                      ) -> list[tuple[int, int]]:
        """pb_publish_files."""
        ffi = self._ffi
        if not items:
            return []
        pubs = ffi.new("pb_publish[]", len(items))
        keep: list[Any] = []  # the path buffers must outlive the call
        for i, (fd, dst) in enumerate(items):
            c_dst = ffi.new("char[]", os.fsencode(dst))
            keep.append(c_dst)
            pubs[i].fd, pubs[i].dst = fd, c_dst
        failed = self._lib.pb_publish_files(pubs, len(items), jobs)
        out = [(pubs[i].status, pubs[i].err) for i in range(len(items))]
        _check_count("pb_publish_files", failed,
                     sum(s not in (OK, LINK_PRESENT) for s, _ in out))
        return out

    def move_files(self, items: Sequence[tuple[str, str]], jobs: int = 0
                   ) -> list[tuple[int, int]]:
        """pb_move_files."""
        if not items:
            return []
        moves, keep = self._src_dst("pb_move", items)
        failed = self._lib.pb_move_files(moves, len(items), jobs)
        del keep  # the paths lived through the call
        out = [(moves[i].status, moves[i].err) for i in range(len(items))]
        _check_count("pb_move_files", failed, sum(s not in (OK, LINK_PRESENT) for s, _ in out))
        return out


_SIZE_MAX = 2**64 - 1  # pb_tree_check's (size_t)-1


class _Walked:
    """A walked tree for a ``with`` block: pb_tree_walk on entry, pb_tree_free on exit."""

    def __init__(self, core: CoreBackend, path: str, bound: str, skip: str | None) -> None:
        self._core = core
        self._tree = core._tree_walk(path, bound, skip)

    def __enter__(self) -> Any:
        return self._tree

    def __exit__(self, *exc: object) -> None:
        self._core._lib.pb_tree_free(self._tree)


def _check_count(function: str, returned: int, counted: int) -> None:
    """A batch function returns how many items failed; it must agree with the items."""
    if returned != counted:
        raise RuntimeError(f"{function} reported {returned} failed items, the items say {counted}")
