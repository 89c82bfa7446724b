"""SQLite state of one checkout (.pivotbuild/state.db): the stat → hash memo and run history.

Tables (schema version in ``PRAGMA user_version``):
- ``file_memo(path, size, mtime_ns, ino, hash)``: one row per file hashed on its
  own, keyed by project-relative path;
- directories hashed as a whole keep their memo beside the database, one file
  per directory (``memo/<xxh3 of its path>``), holding the snapshot the hashing
  backends produce and consume (format: csrc/pb_tree.c). A 100k-file directory
  is one file: loading and checking it costs one read and a merge in C, not
  100k Python lookups, and rewriting it is one write (as a 7 MB SQLite blob
  it cost a WAL write and a checkpoint, ~100 ms);
- ``runs(run_id, stage, started_at, duration_s, status, input_hash, committed)``:
  every stage run, committed or not (``repro --no-commit``), and every ``commit``
  of a stage (status ``committed``), for ``history``. Rows are only ever added:
  a record, once written, is never rewritten.

The memo only ever saves work: a missing, stale or corrupt row means a file is
read again. Racy entries (mtime within hashing.RACY_WINDOW_NS of the moment
hashing began) are never stored, so a file changed right after it was hashed,
within the file system's timestamp granularity, is never trusted.

The database is per machine and never committed. It is opened lazily: a
read-only command in a project that never hashed anything creates nothing.

It is optional. One that SQLite calls corrupt (not a database, a malformed
image) is moved aside to ``state.db.corrupt`` and a fresh one is started, with
one warning; one that cannot be used otherwise (a newer pivotbuild's, a full
disk) is left alone and pivotbuild carries on without it, saying so once per
process with what to do.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import sys
import threading
from collections import namedtuple
from collections.abc import Callable, Iterable

import xxhash

from pivotbuild.atomic import write_atomic

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hash fast path

if TYPE_CHECKING:  # typing costs the hash fast path start-up time
    from typing import Any, TypeVar

    T = TypeVar("T")

SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS file_memo (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    hash TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    stage TEXT NOT NULL,
    started_at REAL NOT NULL,
    duration_s REAL NOT NULL,
    status TEXT NOT NULL,
    input_hash TEXT,
    committed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_stage ON runs (stage, run_id);
"""


# SQLite's primary result codes for a file that is damaged or no database at all.
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
CORRUPT_SUFFIX = ".corrupt"
_HINT = ("it only holds the stat memo and run history: deleting it is safe, and "
         "pivotbuild starts a new one")
_warned: set[str] = set()  # databases this process has warned about
_set_aside_lock = threading.Lock()


def _warn_once(path: str, message: str) -> None:
    """One warning per database per process (the prefetch thread has its own StateDB)."""
    with _set_aside_lock:
        if path in _warned:
            return
        _warned.add(path)
    print(f"pivotbuild: warning: {path}: {message}", file=sys.stderr)


def _is_corrupt(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.DatabaseError) and isinstance(code, int) and (
        code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB))


def _locked(method: Callable[..., T]) -> Callable[..., T]:
    """Serialise the method on the connection, and make the state database optional:
    a corrupt file is set aside and the method tried once more on a fresh one; if it still
    cannot be read or written (a full disk, a newer schema), say so once and carry on as
    if it were empty. It only ever saves work."""

    @functools.wraps(method)
    def wrapper(self: StateDB, *args: Any, **kwargs: Any) -> T:
        with self._lock:
            if self._broken:
                return _EMPTY.get(method.__name__)  # type: ignore[return-value]
            try:
                return method(self, *args, **kwargs)
            except (sqlite3.Error, OSError) as exc:
                problem: BaseException = exc
            if _is_corrupt(problem) and self._set_aside(problem):
                try:
                    return method(self, *args, **kwargs)
                except (sqlite3.Error, OSError) as exc:
                    problem = exc
            self._broken = True
            self._close_quietly()
            _warn_once(self.path, f"{problem}; carrying on without it ({_HINT})")
            return _EMPTY.get(method.__name__)  # type: ignore[return-value]

    return wrapper


# What a method returns when the database is unusable.
_EMPTY: dict[str, Any] = {"get_files": {}, "runs": [], "add_run": 0}


class RunRecord(namedtuple("RunRecord", "run_id stage started_at duration_s status "
                                       "input_hash committed")):
    """One row of the run history: run_id, stage, started_at (seconds since the epoch),
    duration_s, status ("ok", "failed", "interrupted", or "committed" for a `commit`),
    input_hash, committed.
    (A namedtuple: dataclasses would cost the `hash` command start-up time.)"""

    __slots__ = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id, "stage": self.stage, "started_at": self.started_at,
            "duration_s": self.duration_s, "status": self.status,
            "input_hash": self.input_hash, "committed": self.committed,
        }


class StateDB:
    """The memo and history of one checkout; every method is one batched statement.

    Stages commit from worker threads, so one connection is shared under a lock
    (SQLite serialises writers anyway)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._broken = False
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened

    def _db(self, create: bool) -> sqlite3.Connection | None:
        with self._lock:
            return self._open(create)

    def _open(self, create: bool) -> sqlite3.Connection | None:
        if self._conn is None:
            if not create and not os.path.exists(self.path):
                return None
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            try:
                info = os.stat(self.path)
                self._identity = (info.st_dev, info.st_ino)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise sqlite3.DatabaseError(
                        f"written by a newer pivotbuild (schema {version}, this one reads "
                        f"{SCHEMA_VERSION})")
                if version < SCHEMA_VERSION:
                    conn.executescript(_SCHEMA)
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _close_quietly(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _set_aside(self, problem: BaseException) -> bool:
        """A corrupt database: move it to ``state.db.corrupt`` (its WAL beside it) so that a
        fresh one is created, and say so once. If another StateDB (this process's prefetch
        thread, another pivotbuild) already replaced it, just reopen. False if it cannot be
        moved."""
        self._close_quietly()
        with _set_aside_lock:
            try:
                info = os.stat(self.path)
            except FileNotFoundError:
                return True
            except OSError:
                return False
            if self._identity is not None and (info.st_dev, info.st_ino) != self._identity:
                return True  # not the file that failed: someone set that one aside already
            aside = self.path + CORRUPT_SUFFIX
            try:
                os.replace(self.path, aside)
                if os.path.lexists(self.path + "-wal"):
                    os.replace(self.path + "-wal", aside + "-wal")
                for leftover in (self.path + "-shm", aside + "-shm"):
                    if os.path.lexists(leftover):
                        os.unlink(leftover)
            except OSError:
                return False
            _warned.add(self.path)
        print(f"pivotbuild: warning: {self.path}: {problem}; moved aside to "
              f"{os.path.basename(aside)} and started afresh (it only holds the stat memo and "
              "run history, which start over)", file=sys.stderr)
        return True

    @_locked
    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---- files ----------------------------------------------------------------

    @_locked
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

    @_locked
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

    # ---- trees ----------------------------------------------------------------

    def _tree_file(self, path: str) -> str:
        return os.path.join(os.path.dirname(self.path), "memo",
                            xxhash.xxh3_128_hexdigest(path.encode()))

    def get_tree(self, path: str) -> bytes | None:
        try:
            with open(self._tree_file(path), "rb") as handle:
                return handle.read()
        except OSError:
            return None

    @_locked
    def put_tree(self, path: str, snapshot: bytes) -> None:
        target = self._tree_file(path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        write_atomic(target, snapshot, durable=False)

    # ---- run history ------------------------------------------------------------

    @_locked
    def add_run(self, stage: str, started_at: float, duration_s: float, status: str,
                input_hash: str | None, committed: bool) -> int:
        db = self._db(create=True)
        assert db is not None
        cursor = db.execute(
            "INSERT INTO runs (stage, started_at, duration_s, status, input_hash, committed)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (stage, started_at, duration_s, status, input_hash, int(committed)),
        )
        return int(cursor.lastrowid or 0)

    @_locked
    def runs(self, stage: str | None = None, limit: int | None = None, *,
             instances: bool = False) -> list[RunRecord]:
        """Runs, oldest first (the last ``limit`` of them); ``stage``: only its runs, and
        with ``instances`` those of every matrix instance ``stage@…`` too."""
        db = self._db(create=False)
        if db is None:
            return []
        where = "WHERE stage = ?" if stage else ""
        args: list[str | int] = [stage] if stage else []
        if stage and instances:
            where += " OR substr(stage, 1, ?) = ?"
            args += [len(stage) + 1, f"{stage}@"]
        query = f"SELECT * FROM runs {where} ORDER BY run_id DESC"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        rows = db.execute(query, args).fetchall()
        return [
            RunRecord(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in reversed(rows)
        ]
