"""Hashing workspace paths through the stat memo.

This is where path rules meet hashing: a path inside the project is keyed in
the memo by its project-relative real path and may only lead (through
symlinks) to places inside the project; a path outside any project is hashed
without a memo, and a directory there bounds where its own symlinks may point.
Files are hashed in one batch; each directory is one call into the backend.

A hasher may be given digests hashed ahead of time (prefetch.py hashes a
pipeline's paths while the heavy modules load): each is used at most once, for
the first request of exactly that path, and hashed afresh after that.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Sequence

from pivotbuild.hashing import RACY_WINDOW_NS, get_backend
from pivotbuild.paths import STATE_DIR, is_inside
from pivotbuild.state import StateDB

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hash fast path

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from pivotbuild.hashing import Backend

class PathDigest:
    """The hash of one path as the user named it, or the problems that prevented it.

    (Plain classes here and in hashing.py: dataclasses would cost the `hash` command
    a tenth of its start-up.)"""

    __slots__ = ("errors", "hash", "manifest", "missing", "nfiles", "path", "size", "tree")

    def __init__(self, path: str, hash: str | None = None, size: int = 0,
                 nfiles: int | None = None, manifest: bytes | None = None,
                 errors: list[tuple[str, str]] | None = None, missing: bool = False) -> None:
        self.path = path
        self.hash = hash
        self.size = size
        self.nfiles = nfiles  # None for a file
        self.manifest = manifest
        self.errors = errors if errors is not None else []  # (path as shown, problem)
        self.missing = missing  # the path itself does not exist
        # A directory: (the memo snapshot its hashing left, its directory stamps), what the
        # no-op snapshot checks it by (TreeDigest.snapshot and .dirs); None otherwise.
        self.tree: tuple[bytes, list[tuple[str, int, int, bool]]] | None = None

    @property
    def is_dir(self) -> bool:
        return self.nfiles is not None

    def problem(self, root: str | None = None) -> str:
        """Why this path has no hash, as one message: ``<path>: <problem>``, the path
        relative to ``root`` when it lies below it."""
        shown, why = self.errors[0] if self.errors else (self.path, "cannot be hashed")
        if root is not None and shown.startswith(root + "/"):
            shown = shown[len(root) + 1:]
        return f"{shown}: {why}"

    def __repr__(self) -> str:
        return f"PathDigest({self.path!r}, {self.hash!r}, errors={self.errors!r})"


class _Target:
    __slots__ = ("bound", "bound_name", "digest", "key", "real")

    def __init__(self, digest: PathDigest, real: str, key: str | None, bound: str,
                 bound_name: str) -> None:
        self.digest = digest
        self.real = real  # absolute, symlinks resolved
        self.key = key  # memo key (project-relative real path), None: no memo
        self.bound = bound
        self.bound_name = bound_name


class Hasher:
    """Hashes paths for one project (or none), using and refreshing its memo."""

    def __init__(
        self, root: Path | str | None, state: StateDB | None, jobs: int = 0,
        backend: Backend | None = None, ahead: Callable[[str], PathDigest | None] | None = None,
    ) -> None:
        """``ahead``: given a path as asked for, its digest hashed ahead of time (once), or
        None."""
        self.root = os.path.realpath(root) if root is not None else None
        self.state = state
        self.jobs = jobs
        self.backend = backend or get_backend()
        self._ahead = ahead

    def _resolve(self, given: str) -> tuple[_Target | None, str, PathDigest]:
        """Classify one path: ('file' | 'dir' | 'error', ...)."""
        digest = PathDigest(given)
        lexical = os.path.abspath(given)
        try:
            os.lstat(lexical)
        except OSError as exc:
            digest.missing = isinstance(exc, FileNotFoundError)
            digest.errors.append((given, exc.strerror or str(exc)))
            return None, "error", digest
        real = os.path.realpath(lexical)
        if self.root is not None and is_inside(lexical, self.root):
            if not is_inside(real, self.root):
                digest.errors.append((given, "symlink points outside the project"))
                return None, "error", digest
            key: str | None = os.path.relpath(real, self.root)
            bound, bound_name = self.root, "the project"
        else:
            key = None
            bound, bound_name = real, "the hashed directory"
        try:
            st = os.stat(real)
        except OSError as exc:
            digest.errors.append((given, exc.strerror or str(exc)))
            return None, "error", digest
        target = _Target(digest, real, key if self.state is not None else None, bound, bound_name)
        if stat.S_ISDIR(st.st_mode):
            return target, "dir", digest
        if stat.S_ISREG(st.st_mode):
            return target, "file", digest
        digest.errors.append((given, "not a regular file"))
        return None, "error", digest

    def hash_paths(self, paths: Sequence[str]) -> list[PathDigest]:
        """Hash every path; problems are recorded per path, never raised."""
        files: list[_Target] = []
        dirs: list[_Target] = []
        results = []
        for given in paths:
            early = self._ahead(given) if self._ahead is not None else None
            if early is not None:
                early.path = given
                results.append(early)
                continue
            target, kind, digest = self._resolve(given)
            results.append(digest)
            if target is not None:
                (dirs if kind == "dir" else files).append(target)
        self._hash_files(files)
        for target in dirs:
            self._hash_dir(target)
        return results

    def _hash_files(self, targets: list[_Target]) -> None:
        if not targets:
            return
        known = self.state.get_files(t.key for t in targets if t.key) if self.state else {}
        todo: list[_Target] = []
        for target in targets:
            row = known.get(target.key) if target.key else None
            if row is not None:
                try:
                    st = os.stat(target.real)
                except OSError:
                    st = None
                if st is not None and (st.st_size, st.st_mtime_ns, st.st_ino) == row[:3]:
                    target.digest.hash, target.digest.size = row[3], st.st_size
                    continue
            todo.append(target)
        started = time.time_ns()
        fresh = self.backend.hash_files([t.real for t in todo], self.jobs)
        memo_rows = []
        for target, result in zip(todo, fresh):
            if result.hash is None:
                target.digest.errors.append((target.digest.path, result.error or "unreadable"))
                continue
            target.digest.hash, target.digest.size = result.hash, result.size
            if target.key and result.mtime_ns < started - RACY_WINDOW_NS:
                memo_rows.append(
                    (target.key, result.size, result.mtime_ns, result.ino, result.hash)
                )
        if self.state is not None:
            self.state.put_files(memo_rows)

    def _hash_dir(self, target: _Target) -> None:
        memo = self.state.get_tree(target.key) if self.state and target.key else None
        skip = os.path.join(self.root, STATE_DIR) if self.root else None
        result = self.backend.hash_tree(
            target.real, target.bound, memo, self.jobs, target.bound_name, skip
        )
        digest = target.digest
        if result.hash is None:
            digest.errors.extend(
                (os.path.join(digest.path, rel) if rel else digest.path, problem)
                for rel, problem in result.errors
            )
            return
        digest.hash, digest.size, digest.nfiles = result.hash, result.size, result.nfiles
        digest.manifest = result.manifest
        digest.tree = (result.snapshot, result.dirs)
        if self.state is not None and target.key is not None and result.snapshot != memo:
            self.state.put_tree(target.key, result.snapshot)
