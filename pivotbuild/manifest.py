"""The directory manifest: the exact bytes whose XXH3-128 is a directory's hash.

Format, version 1 (bytes; built by the C core in csrc/pb_tree.c and by the
pure-Python backend below, parsed only here):

    pivotbuild-manifest 1\\n
    <hash> SP <flag> SP <size> SP <path>\\n      one line per file

- ``hash``: the file's XXH3-128, 32 lowercase hex digits (what ``xxhsum -H2``
  prints for it);
- ``flag``: ``x`` if the owner-executable bit is set, ``-`` otherwise;
- ``size``: the file's size in bytes, decimal, no leading zeros;
- ``path``: the file's path relative to the directory, ``/``-separated, as the
  file system spells it (bytes), with ``\\`` written as ``\\\\`` and a newline
  as ``\\n`` so that every record is one line.

Lines are sorted by the raw relative path, bytewise. Only regular files (or
symlinks followed to one) are listed: empty directories are not recorded, and
nothing depends on walk order, thread count, mtimes or where the tree lives.
The directory's hash is ``<XXH3-128 of these bytes>.dir`` (names.dir_hash), and the
cache's ``.dir`` object holds exactly these bytes.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
from collections import namedtuple
from collections.abc import Iterable

HEADER = b"pivotbuild-manifest 1\n"

_LINE = re.compile(rb"([0-9a-f]{32}) ([x-]) (0|[1-9][0-9]*) (.+)")
# The same, for every line of a manifest's body in one findall.
_RECORD = re.compile(rb"^([0-9a-f]{32}) ([x-]) (0|[1-9][0-9]*) ([^\n]+)\n", re.MULTILINE)
# In a body, these bytes mean a path with an empty, "." or ".." segment after its first, or a
# NUL; a path that starts badly is found by _UNSAFE_START. (Escapes stand only for "\\" and a
# newline, so a path's segments are the same escaped or not.)
_UNSAFE_INSIDE = (b"//", b"/./", b"/../", b"/\n", b"/.\n", b"/..\n", b"\0")
_UNSAFE_START = (b"/", b"./", b"../")
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


class ManifestError(ValueError):
    """A manifest that does not follow the format, or names an unsafe path."""


class ManifestEntry(namedtuple("ManifestEntry", "path hash size executable")):
    """One file: path (relative, '/'-separated; undecodable bytes kept through
    surrogateescape), hash, size, executable. A namedtuple: dataclasses would cost
    the `hash` command start-up time."""

    __slots__ = ()


def escape_path(raw: bytes) -> bytes:
    return raw.replace(b"\\", b"\\\\").replace(b"\n", b"\\n")


def unescape_path(escaped: bytes) -> bytes:
    if b"\\" not in escaped:
        return escaped
    out = bytearray()
    i = 0
    while i < len(escaped):
        byte = escaped[i]
        if byte == 0x5C:  # backslash
            nxt = escaped[i + 1 : i + 2]
            if nxt == b"\\":
                out += b"\\"
            elif nxt == b"n":
                out += b"\n"
            else:
                raise ManifestError(f"bad escape in path {escaped!r}")
            i += 2
        else:
            out.append(byte)
            i += 1
    return bytes(out)


def build(entries: Iterable[ManifestEntry]) -> bytes:
    """The manifest bytes for these entries, whatever order they come in."""
    encoded = sorted((os.fsencode(e.path), e) for e in entries)
    parts = [HEADER]
    for raw, e in encoded:
        flag = b"x" if e.executable else b"-"
        parts.append(b"%s %s %d %s\n" % (e.hash.encode(), flag, e.size, escape_path(raw)))
    return b"".join(parts)


def check_relative_path(raw: bytes) -> None:
    """Refuse paths that could leave the directory they are restored into."""
    if not raw or raw.startswith(b"/"):
        raise ManifestError(f"unsafe path in manifest: {raw!r}")
    for segment in raw.split(b"/"):
        if segment in (b"", b".", b".."):
            raise ManifestError(f"unsafe path in manifest: {raw!r}")
    if b"\0" in raw:
        raise ManifestError(f"unsafe path in manifest: {raw!r}")


def parse(data: bytes) -> list[ManifestEntry]:
    """Parse and validate manifest bytes (for instance a .dir object from a remote)."""
    if not data.startswith(HEADER):
        raise ManifestError("not a pivotbuild manifest (bad header)")
    if not data.endswith(b"\n") and data != HEADER:
        raise ManifestError("manifest is truncated (no final newline)")
    body = data[len(HEADER) :]
    # The whole body checked at once (a 100,000-file manifest in half the time of a loop over
    # its lines); anything these checks refuse goes through that loop, which says what is
    # wrong where.
    records = _RECORD.findall(body)
    if len(records) != body.count(b"\n") or any(bad in body for bad in _UNSAFE_INSIDE):
        return _parse_lines(body)
    raws = [path if b"\\" not in path else unescape_path(path) for _, _, _, path in records]
    if any(a >= b for a, b in itertools.pairwise(raws)) or any(
            raw.startswith(_UNSAFE_START) or raw in (b".", b"..") for raw in raws):
        return _parse_lines(body)
    new, entry, encoding, errors = tuple.__new__, ManifestEntry, _FS_ENCODING, _FS_ERRORS
    return [new(entry, (raw.decode(encoding, errors), digest.decode(), int(size), flag == b"x"))
            for raw, (digest, flag, size, _) in zip(raws, records)]


def _parse_lines(body: bytes) -> list[ManifestEntry]:
    """parse(), one line at a time: the first problem found is raised with its line."""
    entries: list[ManifestEntry] = []
    previous: bytes | None = None
    for number, line in enumerate(body.split(b"\n")[:-1], start=2):
        match = _LINE.fullmatch(line)
        if match is None:
            raise ManifestError(f"manifest line {number} is malformed: {line[:80]!r}")
        raw = unescape_path(match.group(4))
        check_relative_path(raw)
        if previous is not None and raw <= previous:
            raise ManifestError(f"manifest line {number} is out of order or repeated")
        previous = raw
        entries.append(
            ManifestEntry(
                path=os.fsdecode(raw),
                hash=match.group(1).decode(),
                size=int(match.group(3)),
                executable=match.group(2) == b"x",
            )
        )
    return entries
