"""Make-syntax depfiles (as gcc, clang and nvcc write them) → a stage's discovered deps.

A compiler run with ``-MMD -MF FILE`` (gcc, clang) or ``-MD -MF FILE`` (nvcc) writes the files
it read as Make rules. ``parse`` reads such a file into its prerequisites; ``discovered`` turns
them into project-relative paths a stage did not declare. Neither touches the disk, except
``read`` (reads one file) and ``discovered`` (one ``realpath`` of the root).

Accepted grammar (a subset of GNU Make's, read as bytes; names are decoded with
``os.fsdecode`` so any byte string a file system allows survives)::

    file     := { line }
    line     := [ targets ":" [ prereqs ] ] [ comment ] newline
    targets  := name { ws name }              one or more; several are fine (nvcc, -MT)
    prereqs  := name { ws name }              none at all is a phony rule (-MP)
    ws       := { " " | TAB | FF | VT | CR-not-before-LF | "\\" newline }
    newline  := LF | CR LF | end of file
    comment  := "#" ... up to a newline that is not preceded by an odd run of "\\"

Inside a name:

- ``\\`` + space or TAB: a run of 2N+1 backslashes before a space (or TAB) is N backslashes
  and the space, inside the name (``inc\\ dir/a.h`` → ``inc dir/a.h``); a run of 2N
  backslashes is N backslashes and the end of the name. This is GNU Make's rule, which gcc
  and clang follow when they double the backslashes they write before a space.
- ``\\#`` is ``#``; a run of K backslashes before ``#`` is K-1 backslashes and ``#`` (gcc
  writes ``\\#``, clang doubles a backslash already there). ``\\:`` is ``:`` in the same way.
- ``$$`` is ``$``. A single ``$`` (a Make variable reference) is an error: compilers always
  write ``$$``.
- ``\\`` + newline (also CR LF) is a line continuation: it ends the name, not the rule. A run
  of 2N+1 backslashes before a newline is N backslashes, then the continuation; 2N
  backslashes are N backslashes, then a real newline.
- Any other backslash is an ordinary character (``a\\b.h`` is ``a\\b.h``).
- A ``:`` is the separator only when a space, TAB, newline or the end of the file follows it
  (``kernel.o : kernel.cu`` and ``a.o: a.c`` both work); elsewhere it is part of a name, so
  ``C:/x.h`` is one name. ``a.o:a.c`` (no space) is therefore not a rule: an error.
- A name that starts with ``"`` runs to the next ``"`` and is taken literally, with no escapes:
  clang's NMake form (``-MV``) quotes names with spaces, ``#`` or ``$`` that way. A ``"``
  inside a name is an ordinary character.

Errors (``DepfileError``, with the 1-based line where the problem is): text with no ``:``
(including ``a.o:a.c``), a ``:`` with no target before it, a second ``:`` in one rule, an
order-only ``|`` prerequisite, an unescaped ``$``, an unterminated ``"``, a NUL byte, and a
file that ends in a line continuation (a compiler killed while writing it). An empty file
is fine: no prerequisites.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pivotbuild.paths import STATE_DIR, covered, is_inside

# One regex per token kind, tried at the scanner's position. Ordinary bytes come in runs so that
# a typical depfile (a few hundred names) costs a few thousand matches, not one per byte.
_PLAIN = re.compile(rb'[^\\$#:" \t\f\v\r\n\x00]+')
_SPACE = re.compile(rb"[ \t\f\v]+|\r(?!\n)")
_NEWLINE = re.compile(rb"\r?\n")
_BACKSLASHES = re.compile(rb"\\+")
_COMMENT = re.compile(rb"#(?:\\\r?\n|\\[^\r\n]|\\\r(?!\n)|[^\\\r\n]|\r(?!\n))*")
_QUOTED = re.compile(rb'"([^"\r\n\x00]*)"')
_SEP_FOLLOW = frozenset(b" \t\f\v\r\n")


class DepfileError(ValueError):
    """A depfile could not be read as Make rules; ``str()`` names the line and the problem."""

    def __init__(self, problem: str, line: int, path: str | None = None) -> None:
        self.problem = problem
        self.line = line
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(f"{where}line {line}: {problem}")


@dataclass(frozen=True)
class Rule:
    """One rule of a depfile: its targets, its prerequisites (maybe none), its first line."""

    targets: tuple[str, ...]
    prereqs: tuple[str, ...]
    line: int


class _Scanner:
    """Walks the bytes once, building names and rules; raises DepfileError where it stops."""

    def __init__(self, text: bytes) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.rules: list[Rule] = []
        self.word = bytearray()
        self.in_word = False  # a quoted "" would be an empty word; so track starts, not length
        self.targets: list[str] = []
        self.prereqs: list[str] = []
        self.after_sep = False
        self.rule_line = 0

    def fail(self, problem: str) -> DepfileError:
        return DepfileError(problem, self.line)

    def end_word(self) -> None:
        if not self.in_word:
            return
        name = os.fsdecode(bytes(self.word))
        self.word.clear()
        self.in_word = False
        if not name:
            raise self.fail('an empty name ("")')
        if self.after_sep:
            if name == "|":
                raise self.fail("order-only prerequisites ('|') are not supported")
            self.prereqs.append(name)
        else:
            self.targets.append(name)

    def separator(self) -> None:
        self.end_word()
        if self.after_sep:
            raise self.fail("a second ':' in one rule")
        if not self.targets:
            raise self.fail("a ':' with no target before it")
        self.after_sep = True

    def end_rule(self) -> None:
        self.end_word()
        if self.targets and not self.after_sep:
            raise DepfileError(f"no ':' after {self.targets[0]!r} (expected 'target: "
                               "prerequisites')", self.rule_line)
        if self.after_sep:
            self.rules.append(Rule(tuple(self.targets), tuple(self.prereqs), self.rule_line))
        self.targets = []
        self.prereqs = []
        self.after_sep = False

    def start_word(self) -> None:
        if not self.in_word:
            self.in_word = True
            if not self.targets and not self.after_sep:
                self.rule_line = self.line

    def backslashes(self, count: int, end: int) -> None:
        """A run of ``count`` backslashes ending before ``self.text[end]``."""
        text = self.text
        nxt = text[end] if end < len(text) else None
        if nxt in (0x20, 0x09):  # space, tab
            self.start_word()
            self.word += b"\\" * (count // 2)
            if count % 2:
                self.word.append(nxt)
                self.pos = end + 1
            else:
                self.pos = end
                self.end_word()
        elif nxt in (0x23, 0x3A):  # '#', ':'
            self.start_word()
            self.word += b"\\" * (count - 1)
            self.word.append(nxt)
            self.pos = end + 1
        elif nxt == 0x0A or (nxt == 0x0D and text[end + 1:end + 2] == b"\n"):
            if count // 2:
                self.start_word()
                self.word += b"\\" * (count // 2)
            self.pos = end
            if count % 2:  # a continuation: the newline is whitespace
                self.end_word()
                self.pos = end + (2 if nxt == 0x0D else 1)
                self.line += 1
        elif nxt is None:
            if count % 2:
                raise self.fail("the file ends in a line continuation ('\\' at the end; "
                                "was the compiler stopped while writing it?)")
            self.start_word()
            self.word += b"\\" * (count // 2)
            self.pos = end
        else:
            self.start_word()
            self.word += b"\\" * count
            self.pos = end

    def run(self) -> list[Rule]:
        text = self.text
        size = len(text)
        while self.pos < size:
            pos = self.pos
            byte = text[pos]
            if match := _PLAIN.match(text, pos):
                self.start_word()
                self.word += match.group()
                self.pos = match.end()
            elif match := _SPACE.match(text, pos):
                self.end_word()
                self.pos = match.end()
            elif match := _NEWLINE.match(text, pos):
                self.end_rule()
                self.line += 1
                self.pos = match.end()
            elif byte == 0x5C:  # backslash
                match = _BACKSLASHES.match(text, pos)
                assert match is not None
                self.backslashes(match.end() - pos, match.end())
            elif byte == 0x24:  # '$'
                if text[pos + 1:pos + 2] != b"$":
                    raise self.fail("a single '$' (Make variables are not supported; a '$' "
                                    "in a name is written '$$')")
                self.start_word()
                self.word.append(0x24)
                self.pos = pos + 2
            elif byte == 0x23:  # '#'
                self.end_word()
                match = _COMMENT.match(text, pos)
                assert match is not None
                body = match.group()
                self.line += body.count(b"\n")
                self.pos = match.end()  # a final '\\' is left to backslashes()
            elif byte == 0x3A:  # ':'
                nxt = text[pos + 1] if pos + 1 < size else None
                if nxt is None or nxt in _SEP_FOLLOW:
                    self.separator()
                else:
                    self.start_word()
                    self.word.append(byte)
                self.pos = pos + 1
            elif byte == 0x22:  # '"'
                if self.in_word:
                    self.word.append(byte)
                    self.pos = pos + 1
                else:
                    match = _QUOTED.match(text, pos)
                    if match is None:
                        raise self.fail("a '\"' with no closing '\"' on the same line")
                    self.start_word()
                    self.word += match.group(1)
                    self.pos = match.end()
                    self.end_word()
            else:  # NUL: the only byte no other branch takes
                raise self.fail("a NUL byte (is this a depfile?)")
        self.end_rule()
        return self.rules


def parse_rules(text: bytes) -> list[Rule]:
    """Every rule of a depfile, in file order. Raises DepfileError for malformed input."""
    return _Scanner(text).run()


def parse(text: bytes) -> list[str]:
    """The prerequisites of every rule, in first-seen order, each once.

    Targets are not included, so ``-MP``'s phony rules (``hdr.h:``) add nothing.
    """
    seen: dict[str, None] = {}
    for rule in parse_rules(text):
        for name in rule.prereqs:
            seen.setdefault(name, None)
    return list(seen)


def read(path: str | os.PathLike[str]) -> list[str]:
    """``parse`` of one file; a DepfileError then names the file. OSError passes through."""
    data = Path(path).read_bytes()
    try:
        return parse(data)
    except DepfileError as exc:
        raise DepfileError(exc.problem, exc.line, os.fspath(path)) from None


def _lexical_abs(path: str) -> str:
    """``posixpath.normpath`` without its special case for a leading ``//``."""
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/") if norm.startswith("//") else norm


def discovered(prereqs: Iterable[str], root: str | os.PathLike[str], wdir: str,
               declared: Iterable[str]) -> list[str]:
    """The prerequisites that are discovered deps: project-relative, sorted, each once.

    ``root`` is the project root; ``wdir`` the stage's project-relative working directory
    (``"."`` for the root), against which relative prerequisites are resolved (the compiler
    ran there). Paths are normalised lexically (``inc/../a.h`` → ``a.h``), as pivot.toml paths
    are. An absolute prerequisite counts as inside the project if it lies below the root as
    given or below the root with its symlinks resolved (a compiler prints what it was given).

    Dropped: paths outside the project (system headers), the root itself, anything inside
    ``.pivotbuild/``, and every declared dep -- a path equal to one, or below one (a declared
    directory already covers the headers inside it).
    """
    root_abs = _lexical_abs(os.path.abspath(os.fspath(root)))
    prefixes = {root_abs.rstrip("/") + "/", os.path.realpath(root_abs).rstrip("/") + "/"}
    base = root_abs if wdir in ("", ".") else _lexical_abs(posixpath.join(root_abs, wdir))
    declared_set = {d.rstrip("/") for d in declared}
    found: set[str] = set()
    for name in prereqs:
        full = _lexical_abs(name if name.startswith("/") else posixpath.join(base, name))
        rel = next((full[len(p):] for p in prefixes if full.startswith(p)), None)
        if not rel:  # outside, or the root itself
            continue
        if is_inside(rel, STATE_DIR):
            continue
        if covered(rel, declared_set):
            continue
        found.add(rel)
    return sorted(found)


