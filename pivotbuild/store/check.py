"""Checking file objects against their names before they are used, through a stat memo.

An object is immutable by contract, but nothing stops a user from editing one in place (through
a hardlinked output made writable, say) or a disk from damaging it. So before an object is
placed in the workspace, stored over, or taken from the run cache, its content is hashed again
and compared with its name (the compiled core hashes at memory speed).

Most objects have not changed since they were last found good. An object whose (size, mtime,
inode) are those it had when it last hashed to its name is not read again: edited in place,
even through a hardlink, it keeps its inode but its mtime (and usually size) moves. Those
signatures are kept for this process and, when given one, in a persistent memo (the project's
state database, keyed by the object's absolute path, which no project-relative key can be).
Only signatures outside the racy window (hashing.RACY_WINDOW_NS) are ever written to the
memo, as for the workspace memo: a file changed within the file system's timestamp granularity
of being hashed could keep its mtime. The one exception is an object this process wrote itself
and hashed as it wrote it (a store, a fetch: ``trust``): nobody else could write it before it
got its name, read-only; it is trusted for the rest of this process, never in the memo.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from pivotbuild.errors import OperationError
from pivotbuild.hashing import RACY_WINDOW_NS, get_backend
from pivotbuild.names import object_name

_ENOENT_TEXT = os.strerror(errno.ENOENT)


class ObjectMemo(Protocol):
    """What the checker needs of a persistent memo (state.StateDB fits)."""

    def get_files(self, paths: Iterable[str]) -> dict[str, tuple[int, int, int, str]]: ...

    def put_files(self, rows: Iterable[tuple[str, int, int, int, str]]) -> None: ...


def corrupt_text(hash: str) -> str:
    """What is wrong with an object whose content does not match its name."""
    return f"cache object {hash} is corrupt (its content does not match its name)"


class ObjectChecker:
    """Checks file objects of one cache directory (``files_dir``: ``ab/cdef…``)."""

    def __init__(self, files_dir: str, memo: ObjectMemo | None = None, jobs: int = 0) -> None:
        self.files_dir = files_dir
        self.memo = memo
        self.jobs = jobs
        self._good: dict[str, tuple[int, int, int]] = {}  # path -> signature found good
        self._lock = threading.Lock()

    def path(self, hash: str) -> str:
        return os.path.join(self.files_dir, object_name(hash))

    def check(self, items: Iterable[tuple[str, str]],
              stats: Mapping[str, os.stat_result] | None = None) -> list[tuple[str, str]]:
        """The (shown, hash) of the file objects among ``items`` ((hash, shown) pairs) whose
        content does not match their name. Objects that are not there are not reported (the
        caller names them missing); one that cannot be read is an OperationError naming it.
        ``stats``: the objects' stat results where the caller has them already."""
        wanted: dict[str, tuple[str, str]] = {}  # path -> (hash, shown), first shown wins
        for hash, shown in items:
            wanted.setdefault(self.path(hash), (hash, shown))
        unsure: list[tuple[str, tuple[int, int, int]]] = []
        good = self._good  # reads of a dict need no lock; writes take it
        for path, (hash, _) in wanted.items():
            st = stats.get(hash) if stats else None
            if st is None:
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise OperationError(f"{wanted[path][1]}: cannot read the cache object "
                                         f"{hash}: {exc.strerror or exc}") from None
            sig = (st.st_size, st.st_mtime_ns, st.st_ino)
            if good.get(path) != sig:
                unsure.append((path, sig))
        if not unsure:
            return []
        if self.memo is not None:
            rows = self.memo.get_files(path for path, _ in unsure)
            still = []
            for path, sig in unsure:
                row = rows.get(path)
                if row is not None and tuple(row[:3]) == sig and row[3] == wanted[path][0]:
                    with self._lock:
                        self._good[path] = sig
                else:
                    still.append((path, sig))
            unsure = still
        return self._hash([path for path, _ in unsure], wanted)

    def _hash(self, paths: Sequence[str], wanted: Mapping[str, tuple[str, str]]
              ) -> list[tuple[str, str]]:
        if not paths:
            return []
        started = time.time_ns()
        bad: list[tuple[str, str]] = []
        rows: list[tuple[str, int, int, int, str]] = []
        for path, got in zip(paths, get_backend().hash_files(paths, self.jobs), strict=True):
            hash, shown = wanted[path]
            if got.hash is None:
                if got.error == _ENOENT_TEXT:
                    continue  # gone meanwhile: missing, which the caller will find
                raise OperationError(f"{shown}: cannot read the cache object {hash}: "
                                     f"{got.error}")
            if got.hash != hash:
                bad.append((shown, hash))
            elif got.mtime_ns < started - RACY_WINDOW_NS:
                sig = (got.size, got.mtime_ns, got.ino)
                with self._lock:
                    self._good[path] = sig
                rows.append((path, *sig, hash))
        if rows and self.memo is not None:
            self.memo.put_files(rows)
        return bad

    def trust(self, path: str, size: int, mtime_ns: int, ino: int) -> None:
        """The object at ``path`` was written by this process, its content hashed to its
        name on the way: trust this signature for the rest of the process (not the memo)."""
        with self._lock:
            self._good[path] = (size, mtime_ns, ino)

    def forget(self, path: str) -> None:
        """The object at ``path`` is gone or replaced: its signature no longer vouches."""
        with self._lock:
            self._good.pop(path, None)


__all__ = ["ObjectChecker", "ObjectMemo", "corrupt_text"]
