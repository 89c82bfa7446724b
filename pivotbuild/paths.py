"""Project paths: the names pivotbuild gives its files, normalisation, containment, the root.

Everything here is light to import (no pathlib, typing or third-party module at load time):
the `hash` fast path and the no-op fast path (fastpath.py) import it.

- The constants (``STATE_DIR``, ``PROJECT_FILE``, ...) are defined here and nowhere else.
- ``normalize_path`` turns a declared path into the project-relative form every other
  module compares (``./a//b/`` → ``a/b``, ``a/../b`` → ``b``); symlinks are not resolved.
- ``is_inside`` compares by whole components, for project-relative paths (``.`` is the root)
  and absolute ones alike.
- ``find_project_root`` / ``find_root``: the nearest directory upward holding pivot.toml.
- Workspace writes: every place that deletes, creates or writes a path of the workspace for
  a stage asks ``real_parent`` / ``resolve`` / ``make_parent`` / ``remove`` first. The
  directories above the path are resolved through their symlinks (the path itself is not:
  deleting or replacing it acts on a symlink there, never on its target); when they land
  outside the project root, the path is refused with an OperationError that names it, before
  anything is touched. A directory that does not exist yet cannot be a symlink, so creating
  the missing part of a resolved parent stays inside the project.
"""

from __future__ import annotations

import os

from pivotbuild.errors import OperationError, UsageError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hash fast path

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path
    from typing import Any

PROJECT_FILE = "pivot.toml"
PARAMS_FILE = "params.toml"
STATE_DIR = ".pivotbuild"
STATE_DB_FILE = "state.db"  # inside STATE_DIR (state.py)
LOCKS_DIR = "locks"  # inside STATE_DIR (lock.py)
DEFAULT_CACHE_DIR = f"{STATE_DIR}/cache"  # unless cache_dir or $PIVOTBUILD_CACHE_DIR says
LOCAL_CONFIG_FILE = f"{STATE_DIR}/config.local.toml"
CACHE_DIR_ENV = "PIVOTBUILD_CACHE_DIR"
CHECKOUT_METHODS = ("reflink", "hardlink", "copy")
GIT_DIR = ".git"
TRACK_SUFFIX = ".pvt"  # `track`'s records (SPEC §10)

STATE_GITIGNORE = """\
# pivotbuild: everything in .pivotbuild/ is per machine, except the locks.
/*
!/.gitignore
!/locks/
"""


# ---- project-relative paths -----------------------------------------------------------------


class PathProblem(ValueError):
    """A path broke a path rule; ``str()`` is the problem, without file or key."""


def normalize_path(path: str, wdir: str = ".") -> str:
    """Join ``path`` onto the project-relative ``wdir`` and normalise it lexically.

    Returns a ``/``-separated project-relative path without ``.``, empty or trailing parts
    (``"."`` for the root itself). Raises ``PathProblem`` for an empty or absolute path, a NUL
    byte, or a path that leaves the project root.
    """
    if path == "":
        raise PathProblem("path is empty")
    if "\0" in path:
        raise PathProblem(f"path contains a NUL byte: {path!r}")
    if path.startswith("/"):
        raise PathProblem(f"absolute paths are not allowed (use a path relative to the project "
                          f"root): {path!r}")
    parts: list[str] = [] if wdir in (".", "") else wdir.split("/")
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise PathProblem(f"path escapes the project root: {path!r}")
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts) if parts else "."


def covered(path: str, declared: set[str]) -> bool:
    """True if project-relative ``path`` is one of ``declared`` or lies below one (``"."``
    covers everything): whether a discovered dependency is already declared."""
    if path in declared or "." in declared:
        return True
    cut = path.rfind("/")
    while cut > 0:
        if path[:cut] in declared:
            return True
        cut = path.rfind("/", 0, cut)
    return False


def is_inside(path: str, ancestor: str) -> bool:
    """True if ``path`` equals ``ancestor`` or lies below it, by whole components.

    Both normalised project-relative (``"."`` is the root, holding everything) or both
    absolute (a trailing ``/`` on ``ancestor`` is allowed: ``"/"`` holds every absolute path).
    """
    if ancestor == ".":
        return True
    return path == ancestor or path.startswith(ancestor.rstrip("/") + "/")


def protected_files(params_files: list[str]) -> dict[str, str]:
    """The project files no out may be or hold, project-relative, with what each one is.

    ``params_files``: every params file the project reads (today ``params.toml``; a
    ``params_file`` setting or ``FILE:key`` params add theirs here)."""
    files = {PROJECT_FILE: f"the pipeline file {PROJECT_FILE}"}
    for name in params_files:
        files.setdefault(name, f"the params file {name}")
    return files


def protected_out_problem(path: str, protected: Mapping[str, str],
                          root: str | os.PathLike[str] | None = None) -> str | None:
    """Why the normalised project-relative ``path`` can never be an output (writing it would
    destroy one of the project's own files, SPEC §8), or None. Names are compared without
    case, for case-insensitive file systems. ``root``: also refuse a directory that holds a
    ``.git`` (one lstat). (``.pivotbuild`` and the root itself are refused for deps and outs
    alike, by config.py.)"""
    folded = path.casefold()
    parts = folded.split("/")
    if GIT_DIR in parts:
        return f"path is or lies inside a git repository ({GIT_DIR}), which can never be an output"
    if parts[-1].endswith(TRACK_SUFFIX):
        return (f"path is a tracked-path record (*{TRACK_SUFFIX}), which can never be an "
                "output")
    for file, what in protected.items():
        if is_inside(file.casefold(), folded):
            verb = "is" if file.casefold() == folded else "holds"
            return f"path {verb} {what}, which can never be an output"
    if root is not None and os.path.lexists(os.path.join(root, path, GIT_DIR)):
        return (f"path holds a git repository ({path}/{GIT_DIR}), which can never be an "
                "output")
    return None


# The guard below runs without the loaded config, so it cannot know a renamed params_file or
# a FILE:key params file; it protects the default and the names a converted DVC project uses
# (pivot.toml itself refuses every params file it reads as an out).
_PROTECTED = protected_files([PARAMS_FILE, "params.yaml", "params.yml", "params.json"])


def is_project_file(rel: str) -> bool:
    """True for a root-relative path that no stage may write through a symlinked directory:
    in .pivotbuild, or one that protected_out_problem refuses (with the default params file
    and params.yaml / .yml / .json)."""
    return (rel.casefold().split("/")[0] == STATE_DIR
            or protected_out_problem(rel, _PROTECTED) is not None)


# ---- the project root and its state directory -----------------------------------------------


def find_project_root_str(start: str) -> str | None:
    """The nearest directory from ``start`` upward holding pivot.toml, or None (no pathlib)."""
    directory = os.path.abspath(start)
    while True:
        if os.path.isfile(os.path.join(directory, PROJECT_FILE)):
            return directory
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def find_project_root(start: Path) -> Path | None:
    """find_project_root_str on a Path."""
    from pathlib import Path

    found = find_project_root_str(os.fspath(start))
    return Path(found) if found is not None else None


def find_root(start: Path) -> Path:
    """The nearest directory from ``start`` (resolved) upward that holds pivot.toml; a
    UsageError (exit 2) that says to run init if there is none."""
    here = start.resolve()
    root = find_project_root(here)
    if root is not None:
        return root
    raise UsageError(f"no {PROJECT_FILE} found in {here} or any parent directory "
                     "(run 'pivotbuild init')")


def ensure_state_dir_str(root: str) -> str:
    """Create .pivotbuild/ with its .gitignore the first time anything is written there;
    its path (no pathlib, for the hash fast path)."""
    state_dir = os.path.join(root, STATE_DIR)
    ignore = os.path.join(state_dir, ".gitignore")
    if not os.path.exists(ignore):
        os.makedirs(state_dir, exist_ok=True)
        with open(ignore, "w") as handle:
            handle.write(STATE_GITIGNORE)
    return state_dir


def ensure_state_dir(root: str | os.PathLike[str]) -> Path:
    """ensure_state_dir_str on a Path."""
    from pathlib import Path

    return Path(ensure_state_dir_str(os.fspath(root)))


# ---- workspace writes that must stay inside the project -------------------------------------


class PathEscapeError(OperationError):
    """A workspace path whose directory resolves outside the project (exit 1)."""

    def __init__(self, shown: str, resolved: str) -> None:
        self.path = shown
        self.resolved = resolved
        super().__init__(f"{shown}: its directory resolves outside the project ({resolved}); "
                         "refusing to delete or write it")


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
    if not is_inside(parent, bound):
        raise PathEscapeError(shown, parent)
    landed = os.path.join(parent, name)[len(bound) + 1:]
    if landed and landed != shown and is_project_file(landed):
        # pivot.toml refuses these as outs; a symlinked directory must not reach them either.
        raise OperationError(f"{shown}: its directory resolves to {landed}, one of the "
                             "project's own files; refusing to delete or write it")
    return parent


def resolve(root: os.PathLike[str] | str, path: os.PathLike[str] | str) -> Path:
    """``path`` with the directories above it resolved and checked (see real_parent)."""
    from pathlib import Path

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
    if not is_inside(os.path.realpath(target.parent), os.path.realpath(root)):
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
        import shutil

        shutil.rmtree(path, onerror=_make_writable_and_retry)


def _make_writable_and_retry(function: Callable[..., Any], path: str, _exc: Any) -> None:
    # Outputs hardlinked from the cache are read-only, and so may be their dirs.
    os.chmod(os.path.dirname(path), 0o755)
    function(path)


def _shown(full: str, bound: str) -> str:
    """A path as the user declared it: relative to the project root when inside it."""
    normal = os.path.normpath(full)
    return normal[len(bound) + 1:] if normal.startswith(bound + "/") else normal
