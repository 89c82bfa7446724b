"""The hashing API the rest of pivotbuild imports: result types, the Backend protocol, get_backend.

Two backends compute identical results:
- ``CoreBackend`` (core.py) calls the C core (csrc/pivothash.h) once per batch; it
  walks, stats, reads or maps and hashes with its own thread pool, with the GIL
  released;
- ``PythonBackend`` (pyfallback.py) does the same with ``os.scandir`` and the ``xxhash``
  package. It is used when the core was not built (with one warning saying how
  to get it) or when ``PIVOTBUILD_PURE_PYTHON=1`` forces it (tests, benchmarks).

Both take and produce the same memo snapshots (format: csrc/pb_tree.c), so a
state.db written by one is read by the other. The statuses, flags and result types
are defined in hashtypes.py (which both backends import) and re-exported here.
"""

from __future__ import annotations

import os
import sys

from pivotbuild import hashtypes
from pivotbuild.core import CoreBackend
from pivotbuild.hashtypes import *  # the statuses, flags and result types, re-exported

__all__ = ["PURE_PYTHON_ENV", "CoreBackend", "PythonBackend", "get_backend"]
__all__ += hashtypes.__all__

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hash fast path

PURE_PYTHON_ENV = "PIVOTBUILD_PURE_PYTHON"

if TYPE_CHECKING:  # the interface both backends provide (typing costs start-up time)
    from collections.abc import Sequence
    from typing import Protocol

    from pivotbuild.pyfallback import PythonBackend

    class Backend(Protocol):
        name: str

        def hash_bytes(self, data: bytes) -> str: ...

        def hash_files(self, paths: Sequence[str], jobs: int = 0) -> list[FileDigest]: ...

        def hash_tree(
            self, path: str, bound: str, memo: bytes | None = None, jobs: int = 0,
            bound_name: str = "the project", skip: str | None = None,
        ) -> TreeDigest: ...

        def check_tree(self, path: str, memo: bytes, dirs: Sequence[tuple[str, int, int]],
                       jobs: int = 0) -> tuple[int, list[int]] | None:
            """The no-op check of a directory a memo snapshot describes: stat every file the
            memo lists (following symlinks, as the walk does) and every directory of
            ``dirs`` (relative path, "" for ``path`` itself; mtime_ns; inode, as
            TreeDigest.dirs stamped them). (How many files are not regular files of the
            recorded size, mtime, inode and mode; per directory OK, STAT_CHANGED or
            ERR_IO), or None when the memo does not parse."""
            ...

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

        def md5_bytes(self, data: bytes) -> str:
            """The MD5 (RFC 1321) hex digest of data: DVC's hash, for import-dvc."""
            ...

        def md5_files(self, items: Sequence[tuple[str, bool]], jobs: int = 0
                      ) -> list[FileDigest]:
            """Each (path, dos2unix) regular file's MD5 as DVC records it (dos2unix: DVC 2's
            md5-dos2unix, CRLF hashed as LF in the 1 MiB chunks that look like text), with
            ``size`` the bytes read; or its error."""
            ...

        def files_read(self) -> int: ...


def __getattr__(name: str) -> object:
    """``PythonBackend`` is imported on first use: the core's path does not load xxhash."""
    if name == "PythonBackend":
        from pivotbuild.pyfallback import PythonBackend

        return PythonBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---- choosing a backend -------------------------------------------------------

_backend: Backend | None = None


def get_backend() -> Backend:
    """The process-wide backend: the core unless it is missing or forced off."""
    global _backend
    if _backend is None:
        if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
            from pivotbuild.pyfallback import PythonBackend

            _backend = PythonBackend()
        else:
            try:
                _backend = CoreBackend()
            except ImportError as exc:
                from pivotbuild.pyfallback import PythonBackend

                print(
                    "pivotbuild: warning: the compiled hashing core is not available "
                    f"({exc}); hashing with the slower pure-Python xxhash. For full speed "
                    "install gcc and libxxhash-dev (apt-get install gcc libxxhash-dev), then "
                    "reinstall pivotbuild.",
                    file=sys.stderr,
                )
                _backend = PythonBackend()
    return _backend
