"""Workspace paths on disk: where a project path really lands, refusing one that escapes.

Every place that deletes, creates or writes a path of the workspace for a stage asks here
first. The directories above the path are resolved through their symlinks (the path itself is
not: deleting or replacing it acts on a symlink there, never on its target); when they land
outside the project root, the path is refused with an OperationError that names it, before
anything is touched. A directory that does not exist yet cannot be a symlink, so creating the
missing part of a resolved parent stays inside the project.

(Issue 12 moves the path constants, normalisation and ``is_inside`` here as well.)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pivotbuild.errors import OperationError


class PathEscapeError(OperationError):
    """A workspace path whose directory resolves outside the project (exit 1)."""

    def __init__(self, shown: str, resolved: str) -> None:
        self.path = shown
        self.resolved = resolved
        super().__init__(f"{shown}: its directory resolves outside the project ({resolved}); "
                         "refusing to delete or write it")


def inside(path: str, directory: str) -> bool:
    """True if absolute ``path`` is ``directory`` or lies below it (by whole components)."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def real_parent(root: os.PathLike[str] | str, path: os.PathLike[str] | str) -> str:
    """The directory holding ``path`` (absolute, or relative to ``root``), resolved through
    every symlink, checked to lie inside ``root``; raises PathEscapeError naming the path
    (relative to the root) if it does not."""
    bound = os.path.realpath(root)
    full = os.path.join(bound, path)  # an absolute path stays as it is
    name = os.path.basename(full)
    shown = _shown(full, bound)
    if name in ("", ".", ".."):
        raise OperationError(f"{shown}: not a name to delete or write")
    parent = os.path.realpath(os.path.dirname(full))
    if not inside(parent, bound):
        raise PathEscapeError(shown, parent)
    landed = os.path.join(parent, name)[len(bound) + 1:]
    if landed and landed != shown and _project_file(landed):
        # pivot.toml refuses these as outs; a symlinked directory must not reach them either.
        raise OperationError(f"{shown}: its directory resolves to {landed}, one of the "
                             "project's own files; refusing to delete or write it")
    return parent


def _project_file(rel: str) -> bool:
    """True for a root-relative path that is or lies in .git, .pivotbuild, or is pivot.toml,
    params.toml or a *.pvt record (SPEC §8; config.py refuses them as declared outs)."""
    parts = rel.casefold().split("/")
    return (".git" in parts or parts[0] == ".pivotbuild" or rel.casefold() in (
        "pivot.toml", "params.toml") or parts[-1].endswith(".pvt"))


def resolve(root: os.PathLike[str] | str, path: os.PathLike[str] | str) -> Path:
    """``path`` with the directories above it resolved and checked (see real_parent)."""
    full = os.path.join(root, path)
    return Path(real_parent(root, full), os.path.basename(full))


def make_parent(root: os.PathLike[str] | str, path: os.PathLike[str] | str) -> Path:
    """Create the missing directories above ``path``, inside the project only; returns the
    resolved path (see resolve)."""
    target = resolve(root, path)
    try:
        os.makedirs(target.parent, exist_ok=True)
    except OSError as exc:
        shown = _shown(os.path.join(root, path), os.path.realpath(root))
        raise OperationError(f"{shown}: cannot create its directory: "
                             f"{exc.strerror or exc}") from None
    if not inside(os.path.realpath(target.parent), os.path.realpath(root)):
        # A directory was swapped for a symlink while we created the rest.
        raise PathEscapeError(_shown(os.path.join(root, path), os.path.realpath(root)),
                              os.path.realpath(target.parent))
    return target


def remove(root: os.PathLike[str] | str, path: os.PathLike[str] | str) -> None:
    """Delete the file, symlink or directory tree at ``path`` (relative to ``root``, or
    absolute inside it) after checking that its directory lies inside the project."""
    remove_path(resolve(root, path))


def remove_path(path: os.PathLike[str] | str) -> None:
    """Delete a file, symlink or directory tree (never following a symlink). No check of
    where it lies: callers with a workspace path use ``remove``."""
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path, onerror=_make_writable_and_retry)


def _make_writable_and_retry(function: Callable[..., Any], path: str, _exc: Any) -> None:
    # Outputs hardlinked from the cache are read-only, and so may be their dirs.
    os.chmod(os.path.dirname(path), 0o755)
    function(path)


def _shown(full: str, bound: str) -> str:
    """A path as the user declared it: relative to the project root when inside it."""
    normal = os.path.normpath(full)
    return normal[len(bound) + 1:] if normal.startswith(bound + "/") else normal
