"""Read a project's files as they are in a git revision, without checking anything out.

``open_revision(root, "HEAD~1")`` resolves the revision once (``git rev-parse --verify
REV^{commit}``, with ``--show-toplevel --show-prefix`` in the same process, since the project
may be a subdirectory of the git work tree) and returns a ``Revision``; its methods take
project-relative paths:

- ``read_files(paths)`` reads any number of files with ONE ``git cat-file --batch`` process
  (never one process per file) and returns ``{path: bytes | None}``: None for a path that is
  not a file in the revision (absent, a directory, a submodule, a dangling symlink). Entries
  from ``list_dir``/``entries`` may be passed instead of paths: they are read by object id,
  much faster for many files in one directory (a thousand locks).
  Symlinks committed to git are followed inside the repository, as the workspace would follow
  them (``--follow-symlinks``).
- ``read_file(path)`` is the same for one path, and raises ``FileNotInRevision`` instead of
  returning None.
- ``list_dir(path)`` lists one directory (``git ls-tree``): ``[TreeEntry]``, empty when the
  directory is absent; ``files(path)`` / ``entries(path)`` list every file below one.

For a whole history (``gc --all-commits``), two functions work on the repository itself:

- ``history_blobs(root, patterns)`` lists every version of the files matching ``patterns``
  (git pathspecs relative to the project) that any commit reachable from a ref (or HEAD) has
  held, as ``(project-relative path, blob id)``, with ONE ``git log --all -m --raw`` process
  (a version a commit holds was added or changed by that commit or an ancestor; ``-m`` shows a
  merge's own changes against each parent);
- ``read_blobs(root, ids)`` reads any number of blobs by id with ONE ``git cat-file --batch``.

Errors, each one line naming what was asked for:
- ``NotAGitRepository`` (exit 2): the project is not inside a git work tree;
- ``UnknownRevision`` (exit 2): REV names no commit (also for a repository with no commit yet);
- ``FileNotInRevision`` (exit 1): ``read_file`` of a path the revision does not have as a file;
- ``GitFailed`` (exit 1): git is not installed, or failed in a way not foreseen above.

git runs with ``LC_ALL=C`` (its messages are parsed) and ``GIT_OPTIONAL_LOCKS=0`` (reading
never takes the index lock); nothing here writes to the repository.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pivotbuild.errors import OperationError, UsageError

__all__ = [
    "FileNotInRevision", "GitFailed", "NotAGitRepository", "Revision", "TreeEntry",
    "UnknownRevision", "history_blobs", "open_revision", "read_blobs", "repository",
]


class NotAGitRepository(UsageError):
    """The project is not inside a git work tree (exit 2)."""


class UnknownRevision(UsageError):
    """The revision names no commit (exit 2)."""


class FileNotInRevision(OperationError):
    """A file the caller needs is not in the revision (exit 1)."""


class GitFailed(OperationError):
    """git is missing or failed unexpectedly (exit 1)."""


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One entry of a directory at a revision. ``path`` is project-relative; ``kind`` is
    ``"blob"`` (a file or a symlink: ``mode`` tells), ``"tree"`` or ``"commit"`` (a
    submodule); ``oid`` is git's object id."""

    path: str
    kind: str
    mode: str
    oid: str

    @property
    def is_symlink(self) -> bool:
        return self.mode == "120000"


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    env["GIT_OPTIONAL_LOCKS"] = "0"
    env.pop("GIT_PAGER", None)
    return env


def _run(args: Sequence[str], cwd: Path, stdin: bytes | None = None
         ) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True,
                              env=_git_env(), check=False)
    except FileNotFoundError as exc:
        if exc.filename == cwd or not Path(cwd).is_dir():
            raise GitFailed(f"{cwd}: no such directory") from None
        raise GitFailed("git is not installed (or not on PATH): it is needed to read "
                        "another revision") from None
    except OSError as exc:
        raise GitFailed(f"cannot run git: {exc.strerror or exc}") from None


def _first_line(data: bytes) -> str:
    """git's own one-line reason: its first ``fatal:`` or ``error:`` line (hints follow it)."""
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines()
             if line.strip()]
    for line in lines:
        if line.startswith(("fatal:", "error:")):
            return line
    return lines[0] if lines else "no message"


def _has_commits(root: Path) -> bool:
    """Whether HEAD names a commit (False in a repository where nothing was committed yet)."""
    proc = _run(["rev-parse", "--verify", "-q", "HEAD^{commit}"], cwd=root)
    return proc.returncode == 0


def open_revision(root: str | os.PathLike[str], rev: str = "HEAD") -> Revision:
    """Resolve ``rev`` for the project at ``root``; raises the errors the module lists."""
    root = Path(root)
    if not rev or rev.startswith("-") or "\n" in rev or "\0" in rev:
        raise UnknownRevision(f"unknown revision {rev!r}: not a git revision name")
    proc = _run(["rev-parse", "--show-toplevel", "--show-prefix", "--verify", "-q",
                 f"{rev}^{{commit}}"], cwd=root)
    lines = proc.stdout.decode("utf-8", "surrogateescape").rstrip("\n").split("\n")
    if proc.returncode != 0 or len(lines) != 3:
        message = _first_line(proc.stderr)
        if "not a git repository" in message:
            raise NotAGitRepository(f"{root}: not inside a git repository, so revision "
                                    f"{rev!r} cannot be read (git init, or compare nothing)")
        if proc.returncode == 1 or "Needed a single revision" in message or not proc.stderr:
            where = lines[0] or root
            if not _has_commits(root):
                raise UnknownRevision(f"unknown revision {rev!r}: the git repository at {where} "
                                      "has no commits yet (commit first, then compare)")
            raise UnknownRevision(f"unknown revision {rev!r}: no such commit in the git "
                                  f"repository at {where}")
        raise GitFailed(f"git rev-parse {rev!r} failed: {message}")
    toplevel, prefix, commit = lines[0], lines[1], lines[2]
    if len(commit) not in (40, 64):
        raise GitFailed(f"git rev-parse {rev!r} printed no commit id")
    return Revision(rev=rev, commit=commit, toplevel=Path(toplevel), prefix=prefix)


@dataclass(frozen=True, slots=True)
class Revision:
    """A resolved commit of the git repository that holds the project.

    ``rev`` is the name the user gave, ``commit`` its full object id, ``toplevel`` the work
    tree's root, ``prefix`` the project's directory inside it (``""`` or ``"sub/dir/"``)."""

    rev: str
    commit: str
    toplevel: Path
    prefix: str

    @property
    def label(self) -> str:
        """How messages name the revision: ``HEAD~1 (3f2a9c1)``."""
        short = self.commit[:7]
        return self.rev if self.rev == short else f"{self.rev} ({short})"

    def _object_name(self, path: str) -> str:
        path = _check_path(path)
        inside = self.prefix + ("" if path == "." else path)
        return f"{self.commit}:{inside.rstrip('/')}"

    def read_files(self, paths: Iterable[str | TreeEntry]) -> dict[str, bytes | None]:
        """``{path: content}`` for every path; None where the revision has no such file.

        One ``git cat-file --batch`` process reads them all, whatever their number. A
        ``TreeEntry`` (from ``list_dir`` or ``entries``) is read by its object id, which
        spares git a walk down the tree per file: for a thousand files in one directory
        that walk (inflating the directory's tree object each time) costs ten times more
        than the reads themselves."""
        wanted: dict[str, str] = {}
        for item in paths:
            if isinstance(item, TreeEntry):
                by_id = item.kind == "blob" and not item.is_symlink
                wanted.setdefault(item.path, item.oid if by_id else self._object_name(item.path))
            else:
                wanted.setdefault(item, self._object_name(item))
        if not wanted:
            return {}
        names = list(wanted.values())
        request = "".join(f"{n}\n" for n in names).encode("utf-8", "surrogateescape")
        # --buffer: output flushed once at the end, not per object (stdin is complete).
        proc = _run(["cat-file", "--batch", "--buffer", "--follow-symlinks"],
                    cwd=self.toplevel, stdin=request)
        if proc.returncode != 0:
            raise GitFailed(f"git cat-file failed reading {self.label}: "
                            f"{_first_line(proc.stderr)}")
        return dict(zip(wanted, _parse_batch(proc.stdout, names, self.label)))

    def read_file(self, path: str) -> bytes:
        """The content of ``path`` at this revision; FileNotInRevision if it has none."""
        content = self.read_files([path])[path]
        if content is None:
            raise FileNotInRevision(f"{path}: not a file in revision {self.label}")
        return content

    def list_dir(self, path: str = ".") -> list[TreeEntry]:
        """The entries directly inside directory ``path`` (project-relative), sorted by name;
        empty if the revision has no such directory. OperationError if it is a file."""
        return self._ls_tree(path, recursive=False)

    def files(self, path: str = ".") -> list[str]:
        """Every file (and symlink) below directory ``path``, recursively, project-relative
        and sorted; empty if the revision has no such directory."""
        return [e.path for e in self.entries(path)]

    def entries(self, path: str = ".") -> list[TreeEntry]:
        """``files()`` as TreeEntry values, to pass to ``read_files``."""
        return [e for e in self._ls_tree(path, recursive=True) if e.kind == "blob"]

    def _ls_tree(self, path: str, recursive: bool) -> list[TreeEntry]:
        name = self._object_name(path)
        args = ["ls-tree", "-z", *(["-r"] if recursive else []), "--end-of-options", name]
        proc = _run(args, cwd=self.toplevel)
        if proc.returncode != 0:
            message = _first_line(proc.stderr)
            if "Not a valid object name" in message:
                return []
            if "not a tree object" in message:
                raise OperationError(f"{path}: not a directory in revision {self.label}")
            raise GitFailed(f"git ls-tree of {path!r} at {self.label} failed: {message}")
        base = _check_path(path)
        base = "" if base == "." else base + "/"
        entries = []
        for record in proc.stdout.split(b"\0"):
            if not record:
                continue
            meta, _, raw_name = record.partition(b"\t")
            mode, kind, oid = meta.decode("ascii").split(" ")
            entries.append(TreeEntry(base + os.fsdecode(raw_name), kind, mode, oid))
        return entries


def repository(root: str | os.PathLike[str], why: str) -> tuple[Path, str]:
    """The work tree's root and the project's prefix in it (``""`` or ``"sub/dir/"``);
    NotAGitRepository (saying ``why`` git was needed) outside a git work tree."""
    root = Path(root)
    proc = _run(["rev-parse", "--show-toplevel", "--show-prefix"], cwd=root)
    lines = proc.stdout.decode("utf-8", "surrogateescape").split("\n")  # the prefix may be ""
    if proc.returncode != 0 or len(lines) != 3:
        message = _first_line(proc.stderr)
        if "not a git repository" in message:
            raise NotAGitRepository(f"{root}: not inside a git repository, so {why}")
        raise GitFailed(f"git rev-parse failed in {root}: {message}")
    return Path(lines[0]), lines[1]


def history_blobs(root: str | os.PathLike[str], patterns: Sequence[str],
                  why: str = "its history cannot be read") -> list[tuple[str, str]]:
    """``(project-relative path, blob id)`` of every version of every file matching the
    project-relative git pathspecs ``patterns`` in any commit reachable from a ref or HEAD
    (sorted, each pair once); empty for a repository without commits. Symlinks and submodules
    are left out. One git process."""
    toplevel, prefix = repository(root, why)
    specs = [prefix + pattern for pattern in patterns]
    proc = _run(["log", "--all", "-m", "--raw", "-z", "--no-abbrev", "--no-renames",
                 "--pretty=format:", "--end-of-options", "--", *specs], cwd=toplevel)
    if proc.returncode != 0:
        message = _first_line(proc.stderr)
        if "does not have any commits" in message or "bad default revision" in message:
            return []
        raise GitFailed(f"git log of the whole history failed: {message}")
    found: set[tuple[str, str]] = set()
    tokens = proc.stdout.split(b"\0")
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if not token.startswith(b":"):
            continue  # the empty separator between commits
        path = os.fsdecode(tokens[index]) if index < len(tokens) else ""
        index += 1
        fields = token[1:].decode("ascii").split(" ")
        new_mode, new_oid = fields[1], fields[3]
        if new_mode not in ("100644", "100755") or not path.startswith(prefix):
            continue  # deleted (000000), a symlink, a submodule, or outside the project
        found.add((path[len(prefix):], new_oid))
    return sorted(found)


def read_blobs(root: str | os.PathLike[str], oids: Iterable[str],
               why: str = "its history cannot be read") -> dict[str, bytes | None]:
    """``{blob id: content}`` (None: no such blob) with one ``git cat-file --batch``."""
    wanted = list(dict.fromkeys(oids))
    if not wanted:
        return {}
    toplevel, _ = repository(root, why)
    request = "".join(f"{oid}\n" for oid in wanted).encode("ascii")
    proc = _run(["cat-file", "--batch", "--buffer"], cwd=toplevel, stdin=request)
    if proc.returncode != 0:
        raise GitFailed(f"git cat-file failed reading the history: {_first_line(proc.stderr)}")
    return dict(zip(wanted, _parse_batch(proc.stdout, wanted, "the history"), strict=True))


def _check_path(path: str) -> str:
    """A project-relative, normalised path as the rest of pivotbuild writes them."""
    if (not isinstance(path, str) or not path or path.startswith("/") or "\n" in path
            or "\0" in path or any(p in ("", "..") for p in path.split("/"))
            or (path != "." and "." in path.split("/"))):
        raise OperationError(f"{path!r}: cannot be read from git (not a normalised "
                             f"project-relative path)")
    return path


def _parse_batch(out: bytes, names: list[str], label: str) -> list[bytes | None]:
    """Split ``git cat-file --batch --follow-symlinks`` output: one answer per name."""
    results: list[bytes | None] = []
    pos = 0
    for name in names:
        end = out.find(b"\n", pos)
        if end < 0:
            raise GitFailed(f"git cat-file stopped early reading {label} (at {name!r})")
        header = out[pos:end].decode("utf-8", "surrogateescape")
        pos = end + 1
        if header in (f"{name} missing", f"{name} ambiguous"):
            results.append(None)
            continue
        fields = header.split(" ")
        # "<oid> <type> <size>", or "symlink|dangling|loop|notdir <size>" then a line of text.
        size = int(fields[-1])
        content = out[pos:pos + size]
        pos += size + 1  # the content, then a newline
        results.append(content if len(fields) == 3 and fields[1] == "blob" else None)
    return results
