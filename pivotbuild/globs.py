"""Glob patterns (SPEC §9) → the project files they match, with each match's template fields.

``expand(root, pattern, exclude)`` gives the matches of ``foreach = { glob = ... }``, sorted by
path (byte order), each with ``path``, ``name``, ``stem``, ``dir`` and ``key``. ``walk`` also
gives the stat signature of what the result depends on, so that a no-op check can tell that a
file was added or removed without walking again (``unchanged``).

Pattern syntax (``/``-separated, relative to the project root):

- ``*`` matches any run of characters within one path component, ``?`` one character,
  ``[abc]`` / ``[a-z]`` one character of a set, ``[!abc]`` or ``[^abc]`` one not in it (a ``]``
  first in the set is literal, so ``[]]`` matches ``]``; use ``[*]`` for a literal ``*``).
- ``**`` is a whole component and matches zero or more directories (``src/**/*.c`` matches
  ``src/main.c`` and ``src/a/b/c.c``); as the last component it matches every file below.
- Dotfiles: a name starting with ``.`` is matched only by a component that starts with a
  literal ``.`` (``.*.c``, ``.config/*``), as in a shell; ``*``, ``?``, ``[...]`` and ``**``
  never match it, and ``**`` never enters a dot-directory. ``.git`` and ``.pivotbuild`` are
  never entered at all, and naming them in a pattern is an error.
- Only files match: regular files, and symlinks that resolve to a regular file inside the
  project. Symlinked directories are never entered (so nothing outside the project is
  reached and no cycle is possible); a symlink to a file outside the project is skipped.
- ``.`` components and repeated ``/`` are ignored. Errors (``GlobError``): an empty or
  absolute pattern, a ``..`` component (escapes the root), a trailing ``/`` (that names a
  directory), a ``**`` inside a component (``a**``), an unterminated ``[``, a backslash (no
  escapes; use ``[*]``), a NUL byte, and naming ``.git`` or ``.pivotbuild``; and a pattern
  holding a shell's ``{a,b}`` that matches nothing (braces are literal here: a typo'd pattern
  would otherwise silently give no instances).

``exclude`` patterns use the same syntax. One containing ``/`` is matched against the whole
project-relative path; one without ``/`` against the file name, at any depth (as in
.gitignore): ``exclude = ["test_*.c"]`` drops ``src/a/test_x.c``.

Fields of a match of ``src/**/*.c`` at ``src/net/io.c``: path ``src/net/io.c``, name ``io.c``,
stem ``io`` (the name without its last extension; ``.bashrc`` and ``a.`` keep theirs),
dir ``src/net`` (``.`` at the root), key ``net.io``: the path below the pattern's literal
directory prefix (``src``), the last extension dropped, ``/`` replaced by ``.``. Two matches
with the same key (``a.c`` and ``a.cc``) are an error.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pivotbuild.paths import GIT_DIR, STATE_DIR, is_inside

NEVER_ENTERED = frozenset({GIT_DIR, STATE_DIR})
# A directory changed this close (or closer) before a walk may change again within the same
# mtime tick without its mtime moving, so its stamp proves nothing (git's "racy" rule).
RACY_MARGIN_NS = 2_000_000_000

_MAGIC = re.compile(r"[*?\[]")


class GlobError(ValueError):
    """A glob pattern is invalid, or its matches collide; ``str()`` names the pattern."""


@dataclass(frozen=True)
class GlobMatch:
    """One matching file and the ``${item.*}`` fields it gives its instance."""

    path: str
    name: str
    stem: str
    dir: str
    key: str


@dataclass(frozen=True)
class DirStamp:
    """A directory the walk looked into: lstat's mtime_ns and inode, or -1 and 0 if the path
    was missing or not a (real) directory then. A symlink the walk met is stamped too (-1,
    0): whether it matches depends on its target, which snapshot.dir_stamps checks."""

    path: str
    mtime_ns: int
    ino: int


@dataclass(frozen=True)
class GlobWalk:
    """What ``walk`` found, what it depended on, and when it started (``time.time_ns()``)."""

    matches: list[GlobMatch]
    stamps: tuple[DirStamp, ...]
    started_ns: int


class _Component:
    """One ``/``-free piece of a pattern: ``**``, a literal name, or a wildcard pattern."""

    def __init__(self, text: str, pattern: str) -> None:
        self.text = text
        self.is_globstar = text == "**"
        self.is_literal = _MAGIC.search(text) is None
        self.dot_ok = text.startswith(".")
        self.regex: re.Pattern[str] | None = None
        if "**" in text and not self.is_globstar:
            raise GlobError(f"glob {pattern!r}: '**' must be a whole path component "
                            f"(like 'src/**/*.c'), not part of {text!r}")
        if not self.is_globstar and not self.is_literal:
            self.regex = re.compile(_translate(text, pattern), re.DOTALL)

    def matches(self, name: str) -> bool:
        if self.is_globstar:
            return not name.startswith(".")
        if name.startswith(".") and not self.dot_ok:
            return False
        if self.regex is None:
            return name == self.text
        return self.regex.fullmatch(name) is not None


def _translate(text: str, pattern: str) -> str:
    """A component's wildcards as a regular expression (for ``fullmatch``)."""
    out: list[str] = []
    i, size = 0, len(text)
    while i < size:
        char = text[i]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            j = i + 1
            negate = j < size and text[j] in "!^"
            if negate:
                j += 1
            start = j
            if j < size and text[j] == "]":  # a ']' first in the set is literal
                j += 1
            while j < size and text[j] != "]":
                j += 1
            if j >= size:
                raise GlobError(f"glob {pattern!r}: '[' without a closing ']' "
                                "(use '[[]' to match a literal '[')")
            body = text[start:j]
            pieces = [ch if ch == "-" and 0 < k < len(body) - 1 else re.escape(ch)
                      for k, ch in enumerate(body)]
            out.append("[" + ("^" if negate else "") + "".join(pieces) + "]")
            try:
                re.compile(out[-1])
            except re.error:
                raise GlobError(f"glob {pattern!r}: bad character set "
                                f"{text[i:j + 1]!r}") from None
            i = j
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


class Pattern:
    """A checked, compiled glob pattern; ``prefix`` is its literal directory prefix."""

    def __init__(self, pattern: str) -> None:
        self.text = pattern
        if not isinstance(pattern, str) or pattern == "":
            raise GlobError("glob pattern is empty")
        if "\0" in pattern:
            raise GlobError(f"glob {pattern!r}: contains a NUL byte")
        if pattern.startswith("/"):
            raise GlobError(f"glob {pattern!r}: absolute patterns are not allowed (write it "
                            "relative to the project root)")
        if "\\" in pattern:
            raise GlobError(f"glob {pattern!r}: backslashes are not allowed (globs use '/'; "
                            "match a special character with a set, like '[*]')")
        if pattern.endswith("/"):
            raise GlobError(f"glob {pattern!r}: ends in '/' (globs match files, not "
                            "directories; 'dir/**' matches every file below dir)")
        parts = [p for p in pattern.split("/") if p not in ("", ".")]
        if not parts:
            raise GlobError(f"glob {pattern!r}: matches no file (it names the project root)")
        for part in parts:
            if part == "..":
                raise GlobError(f"glob {pattern!r}: escapes the project root ('..')")
            if part in NEVER_ENTERED:
                raise GlobError(f"glob {pattern!r}: reaches into {part!r}, which globs never "
                                "enter")
        comps: list[_Component] = []
        for part in parts:
            comp = _Component(part, pattern)
            if not (comp.is_globstar and comps and comps[-1].is_globstar):  # '**/**' is '**'
                comps.append(comp)
        self.components = comps
        literal = 0
        while literal < len(comps) - 1 and comps[literal].is_literal:
            literal += 1
        self.prefix = "/".join(c.text for c in comps[:literal])  # "" for the root
        self.prefix_len = literal

    def match(self, path: str) -> bool:
        """True if a project-relative file path matches the pattern (no disk access)."""
        return _match_parts(self.components, path.split("/"))


def _match_parts(comps: Sequence[_Component], parts: Sequence[str]) -> bool:
    memo: dict[tuple[int, int], bool] = {}

    def step(i: int, j: int) -> bool:
        key = (i, j)
        if key not in memo:
            memo[key] = solve(i, j)
        return memo[key]

    def solve(i: int, j: int) -> bool:
        if i == len(comps):
            return j == len(parts)
        comp = comps[i]
        if comp.is_globstar:
            if i == len(comps) - 1:  # a final '**': one or more components, none hidden
                return j < len(parts) and all(comp.matches(p) for p in parts[j:])
            if step(i + 1, j):  # zero directories
                return True
            return j < len(parts) - 1 and comp.matches(parts[j]) and step(i, j + 1)
        return j < len(parts) and comp.matches(parts[j]) and step(i + 1, j + 1)

    return step(0, 0)


class _Exclude:
    """An exclude pattern: against the whole path if it has a '/', else against the name."""

    def __init__(self, text: str) -> None:
        self.pattern = Pattern(text)
        self.by_name = "/" not in text.strip("/")

    def drops(self, path: str) -> bool:
        target = path.rsplit("/", 1)[-1] if self.by_name else path
        return self.pattern.match(target)


def _stem(name: str) -> str:
    cut = name.rfind(".")
    return name[:cut] if 0 < cut < len(name) - 1 else name


def _make_match(path: str, prefix: str) -> GlobMatch:
    dir_, _, name = path.rpartition("/")
    below = path[len(prefix) + 1:] if prefix else path
    below_dir = below.rpartition("/")[0]
    stem = _stem(name)
    key = (below_dir.replace("/", ".") + "." + stem) if below_dir else stem
    return GlobMatch(path=path, name=name, stem=stem, dir=dir_ or ".", key=key)


class _Walker:
    """One guided walk: visits only the directories the pattern can reach, stamping each."""

    def __init__(self, root: str, pattern: Pattern) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self.comps = pattern.components
        self.found: set[str] = set()
        self.stamps: dict[str, DirStamp] = {}
        self.enterable: dict[str, bool] = {}
        self.listings: dict[str, list[tuple[str, bool, bool]]] = {}
        self.visited: set[tuple[str, int]] = set()

    def abs(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def stamp(self, rel: str) -> bool:
        """Stamp a directory (before listing it); True if it is a real directory."""
        key = rel or "."
        if key not in self.stamps:
            self.stamps[key] = _stat_dir(self.root, key)
            self.enterable[key] = self.stamps[key].ino != 0
        return self.enterable[key]

    def entries(self, rel: str) -> list[tuple[str, bool, bool]]:
        """(name, is_dir, is_file) for each entry; never .git or .pivotbuild."""
        if rel in self.listings:
            return self.listings[rel]
        result: list[tuple[str, bool, bool]] = []
        self.listings[rel] = result
        with os.scandir(self.abs(rel)) as it:
            for entry in it:
                if entry.name in NEVER_ENTERED:
                    continue
                if entry.is_symlink():
                    self.stamp_link(f"{rel}/{entry.name}" if rel else entry.name)
                    result.append((entry.name, False, self.symlink_is_file(entry.path)))
                else:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    result.append((entry.name, is_dir,
                                   not is_dir and entry.is_file(follow_symlinks=False)))
        return result

    def stamp_link(self, rel: str) -> None:
        """Keep a symlink met among the stamps: its target, not any directory listed, decides
        whether it matches (a dangling one starts to when its target appears)."""
        if rel not in self.stamps:
            self.stamps[rel] = DirStamp(rel, -1, 0)
            self.enterable[rel] = False

    def symlink_is_file(self, path: str) -> bool:
        target = os.path.realpath(path)
        return is_inside(target, self.real_root) and os.path.isfile(target)

    def file_exists(self, rel: str) -> bool:
        path = self.abs(rel)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        if stat.S_ISLNK(st.st_mode):
            self.stamp_link(rel)
            return self.symlink_is_file(path)
        return stat.S_ISREG(st.st_mode)

    def visit(self, rel: str, i: int) -> None:
        if (rel, i) in self.visited:
            return
        self.visited.add((rel, i))
        if not self.stamp(rel):
            return
        comp, last = self.comps[i], i == len(self.comps) - 1
        join = (lambda name: f"{rel}/{name}") if rel else (lambda name: name)
        if comp.is_literal and not comp.is_globstar:
            child = join(comp.text)
            if last:
                if self.file_exists(child):
                    self.found.add(child)
            else:
                self.visit(child, i + 1)
            return
        if comp.is_globstar and not last:
            self.visit(rel, i + 1)  # zero directories
        for name, is_dir, is_file in self.entries(rel):
            if not comp.matches(name):
                continue
            if comp.is_globstar:
                if is_dir:
                    self.visit(join(name), i)
                elif is_file and last:
                    self.found.add(join(name))
            elif last:
                if is_file:
                    self.found.add(join(name))
            elif is_dir:
                self.visit(join(name), i + 1)


_BRACES_RE = re.compile(r"\{[^{}/]*,[^{}/]*\}")  # a shell's {a,b}: not glob syntax here


def walk(root: str | os.PathLike[str], pattern: str, exclude: Iterable[str] = (),
         check_keys: bool = True) -> GlobWalk:
    """The matches of ``pattern`` minus ``exclude`` under ``root``, and the stamps of every
    directory looked into and every symlink met (sorted by path). Raises GlobError for a bad
    pattern or (unless ``check_keys`` is false) colliding keys; an unreadable directory raises
    PermissionError (an OSError naming it)."""
    compiled = Pattern(pattern)
    excludes = [_Exclude(text) for text in exclude]
    started = time.time_ns()
    walker = _Walker(os.fspath(root), compiled)
    walker.visit(compiled.prefix, compiled.prefix_len)
    paths = sorted((p for p in walker.found if not any(x.drops(p) for x in excludes)),
                   key=os.fsencode)
    matches = [_make_match(p, compiled.prefix) for p in paths]
    if not matches and _BRACES_RE.search(pattern):
        raise GlobError(f"glob {pattern!r}: matches no file, and '{{a,b}}' alternatives are not "
                        "glob syntax here (braces match themselves): use '*' or '[...]' with "
                        "exclude, or one stage per pattern")
    by_key: dict[str, str] = {}
    for match in matches if check_keys else ():
        if match.key in by_key:
            raise GlobError(f"glob {pattern!r}: {by_key[match.key]!r} and {match.path!r} both "
                            f"give the key {match.key!r} (rename one, or exclude one)")
        by_key[match.key] = match.path
    stamps = sorted(walker.stamps.values(), key=lambda s: os.fsencode(s.path))
    return GlobWalk(matches, tuple(stamps), started)


def expand(root: str | os.PathLike[str], pattern: str,
           exclude: Iterable[str] = ()) -> list[GlobMatch]:
    """The files ``pattern`` matches under ``root``, minus ``exclude``, sorted by path bytes."""
    return walk(root, pattern, exclude).matches


def _stat_dir(root: str, rel: str) -> DirStamp:
    """The stamp of one project-relative directory (the root itself followed if a symlink)."""
    try:
        st = os.stat(root) if rel == "." else os.lstat(os.path.join(root, rel))
    except (FileNotFoundError, NotADirectoryError):
        return DirStamp(rel, -1, 0)
    if not stat.S_ISDIR(st.st_mode):
        return DirStamp(rel, -1, 0)
    return DirStamp(rel, st.st_mtime_ns, st.st_ino)


def signature(root: str | os.PathLike[str], paths: Iterable[str]) -> tuple[DirStamp, ...]:
    """Fresh stamps of the given project-relative directories, in the order given."""
    base = os.fspath(root)
    return tuple(_stat_dir(base, rel) for rel in paths)


def unchanged(root: str | os.PathLike[str], stamps: Sequence[DirStamp], started_ns: int) -> bool:
    """True if a walk that started at ``started_ns`` with these stamps would find the same
    files now: every directory stamps the same, and none was changed so close to the walk
    (``RACY_MARGIN_NS``) that a later change could have kept its mtime."""
    if any(s.mtime_ns > started_ns - RACY_MARGIN_NS for s in stamps):
        return False
    return signature(root, [s.path for s in stamps]) == tuple(stamps)
