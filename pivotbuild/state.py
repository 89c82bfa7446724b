"""SQLite state of one checkout (.pivotbuild/state.db): the stat → hash memo.

Tables (schema version in ``PRAGMA user_version``):
- ``file_memo(path, size, mtime_ns, ino, hash)``: one row per file hashed on its
  own, keyed by project-relative path;
- ``tree_memo(path, snapshot)``: one row per directory hashed as a whole, holding
  the snapshot blob the hashing backends produce and consume (format:
  csrc/pb_tree.c). A 100k-file directory is one row: loading and checking it
  costs one read and a merge in C, not 100k Python lookups.

The memo only ever saves work: a missing, stale or corrupt row means a file is
read again. Racy entries (mtime within hashing.RACY_WINDOW_NS of the moment
hashing began) are never stored, so a file changed right after it was hashed,
within the file system's timestamp granularity, is never trusted.

The database is per machine and never committed. It is opened lazily: a
read-only command in a project that never hashed anything creates nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS file_memo (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    hash TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tree_memo (
    path TEXT PRIMARY KEY,
    snapshot BLOB NOT NULL
) WITHOUT ROWID;
"""


class StateDB:
    """The memo of one checkout; every method is a single batched statement."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _db(self, create: bool) -> sqlite3.Connection | None:
        if self._conn is None:
            if not create and not self.path.exists():
                return None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                conn.close()
                raise sqlite3.DatabaseError(
                    f"{self.path} was written by a newer pivotbuild (schema {version})"
                )
            if version < SCHEMA_VERSION:
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---- files ----------------------------------------------------------------

    def get_files(self, paths: Iterable[str]) -> dict[str, tuple[int, int, int, str]]:
        """path -> (size, mtime_ns, ino, hash) for the paths that have a row."""
        db = self._db(create=False)
        wanted = list(paths)
        if db is None or not wanted:
            return {}
        found: dict[str, tuple[int, int, int, str]] = {}
        # SQLite caps bound parameters; ask in chunks.
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for path, size, mtime, ino, digest in db.execute(
                f"SELECT path, size, mtime_ns, ino, hash FROM file_memo WHERE path IN ({marks})",
                chunk,
            ):
                found[path] = (size, mtime, ino, digest)
        return found

    def put_files(self, rows: Iterable[tuple[str, int, int, int, str]]) -> None:
        """Store (path, size, mtime_ns, ino, hash) rows."""
        rows = list(rows)
        if not rows:
            return
        db = self._db(create=True)
        assert db is not None
        with db:
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO file_memo VALUES (?, ?, ?, ?, ?)", rows)

    def forget_files(self, paths: Iterable[str]) -> None:
        db = self._db(create=False)
        if db is None:
            return
        with db:
            db.execute("BEGIN")
            db.executemany("DELETE FROM file_memo WHERE path = ?", [(p,) for p in paths])

    # ---- trees ----------------------------------------------------------------

    def get_tree(self, path: str) -> bytes | None:
        db = self._db(create=False)
        if db is None:
            return None
        row = db.execute("SELECT snapshot FROM tree_memo WHERE path = ?", (path,)).fetchone()
        return bytes(row[0]) if row else None

    def put_tree(self, path: str, snapshot: bytes) -> None:
        db = self._db(create=True)
        assert db is not None
        db.execute("INSERT OR REPLACE INTO tree_memo VALUES (?, ?)", (path, snapshot))
