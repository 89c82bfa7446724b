"""What both hashing backends produce and share: statuses, flags, result types.

The compiled core (core.py) and the pure-Python fallback (pyfallback.py) build these
from their own work; hashing.py, the API the rest of pivotbuild imports, re-exports
every name here. They live apart from hashing.py so that the backends depend on them
without depending on the module that chooses between the backends (no import cycle).
"""

from __future__ import annotations

import os
from collections import namedtuple

__all__ = [
    "COPY_CHECK", "COPY_DIRECT", "COPY_KEEP_EXEC", "COPY_MISMATCH", "COPY_NO_UNNAMED",
    "COPY_UNNAMED", "COPY_WRITEBACK", "ERR_IO", "ERR_LINK_DANGLING", "ERR_LINK_LOOP",
    "ERR_LINK_OUTSIDE", "ERR_NOT_REGULAR", "LINK_PRESENT", "OK", "RACY_WINDOW_NS", "STAT_CHANGED",
    "CopyResult", "FileDigest", "TreeDigest", "WalkEntry", "describe",
]

# A file whose mtime lies within this window of the moment hashing began may
# still change without its mtime moving (file systems stamp with a coarse
# clock; some only to the second or two). Such "racy" entries are never
# trusted by the memo: they are read again next time.
RACY_WINDOW_NS = 2_000_000_000

# Statuses shared with the C core (pivothash.h).
OK, ERR_IO, ERR_NOT_REGULAR, ERR_LINK_OUTSIDE, ERR_LINK_DANGLING, ERR_LINK_LOOP = range(6)
LINK_PRESENT = 100
STAT_CHANGED = 110  # check_tree: a file's or directory's stat differs from its record
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

    __slots__ = ("dirs", "errors", "hash", "manifest", "nfiles", "nread", "path", "size",
                 "snapshot")

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
        # Every directory listed, stamped before its listing was read: (relative path, ""
        # for the directory itself; mtime_ns; inode; trusted: the mtime lay outside
        # RACY_WINDOW_NS of the hashing, so an unchanged one means unchanged names).
        self.dirs: list[tuple[str, int, int, bool]] = []
