"""DVC's content hashes of the workspace: md5 of files, `.dir` listings of directories.

DVC names every file by an MD5 of its content and every directory by the MD5 of a JSON listing
of its files followed by ``.dir``. Two flavours exist, and a lock entry says which one it holds:

- ``hash: md5`` (what DVC 3 writes): the MD5 of the file's raw bytes.
- no ``hash`` key (what DVC 2 wrote, ``md5-dos2unix`` inside DVC): the file is read in 1 MiB
  chunks; a chunk whose first 512 bytes look like text has every CRLF turned into LF before it
  is hashed. "Looks like text": empty, or no NUL byte and at most 30% of the bytes outside
  printable ASCII and ``\\n \\r \\t \\f \\b``. (A CRLF split across two chunks is left alone, as
  DVC leaves it.)

A directory's listing is ``json.dumps(entries, sort_keys=True)`` in UTF-8, where ``entries`` is
``[{"md5": <file md5>, "relpath": <path below the directory, "/"-separated>}, ...]`` sorted by
relpath (Python string order); empty directories do not appear, symlinks to files are read
through and symlinks to directories are not walked (as ``os.walk`` does). The directory's hash
is ``md5(listing) + ".dir"``; ``.dvc/cache`` stores the listing itself under that name, which is
how tests/data/dvc/dir_objects/ checks this format against real DVC. Patterns in
``.dvcignore`` are not applied.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

MD5 = "md5"  # DVC 3: raw bytes
MD5_DOS2UNIX = "md5-dos2unix"  # DVC 2: CRLF → LF in text chunks
HASH_NAMES = (MD5, MD5_DOS2UNIX)

_CHUNK = 1 << 20  # DVC reads (and so normalises) files in chunks of this size
_SNIFF = 512  # the first bytes of a chunk that decide whether it is text
_TEXT_BYTES = bytes(range(32, 127)) + b"\n\r\t\f\b"


@dataclass(frozen=True)
class LockedPath:
    """One dep or out as dvc.lock or a ``.dvc`` file records it."""

    path: str  # project-relative, "/"-separated
    md5: str  # 32 hex digits, with ".dir" appended for a directory
    hash_name: str  # MD5 or MD5_DOS2UNIX (a key DVC would not write gives an error on check)
    size: int | None = None
    nfiles: int | None = None

    @property
    def is_dir(self) -> bool:
        return self.md5.endswith(".dir")


def _looks_like_text(block: bytes) -> bool:
    if not block:
        return True
    if b"\x00" in block:
        return False
    return len(block.translate(None, _TEXT_BYTES)) / len(block) <= 0.30


def _new_md5() -> hashlib._Hash:
    return hashlib.md5(usedforsecurity=False)


def _md5_and_size(path: str | os.PathLike[str], dos2unix: bool) -> tuple[str, int]:
    digest = _new_md5()
    with open(path, "rb") as f:
        # A small file is read in one call sized to it: most files of a large directory are
        # small, and asking for a whole chunk would allocate 1 MiB per file.
        size = os.fstat(f.fileno()).st_size
        want = _CHUNK if size >= _CHUNK else size + 1
        read = 0
        while chunk := f.read(want):
            read += len(chunk)
            if dos2unix and _looks_like_text(chunk[:_SNIFF]):
                chunk = chunk.replace(b"\r\n", b"\n")
            digest.update(chunk)
            want = _CHUNK
    return digest.hexdigest(), read


def _check_name(hash_name: str) -> None:
    if hash_name not in HASH_NAMES:
        raise ValueError(f"unsupported DVC hash {hash_name!r} (supported: md5, md5-dos2unix)")


def file_md5(path: Path | str, hash_name: str = MD5) -> str:
    """The MD5 DVC records for the file at ``path`` (OSError if it cannot be read)."""
    _check_name(hash_name)
    return _md5_and_size(path, hash_name == MD5_DOS2UNIX)[0]


def _files_below(top: str) -> list[tuple[str, str]]:
    """(relpath, path) of every file below ``top``, sorted as DVC sorts its listing."""
    found = []
    cut = len(top) + 1
    for dirpath, _dirnames, filenames in os.walk(top):
        rel_dir = dirpath[cut:].replace(os.sep, "/")
        for name in filenames:
            full = os.path.join(dirpath, name)
            found.append((f"{rel_dir}/{name}" if rel_dir else name, full))
    found.sort(key=lambda item: item[0])
    return found


@dataclass(frozen=True)
class DirListing:
    """A directory as DVC lists it: the listing bytes, their hash, file count and total size."""

    listing: bytes
    md5: str  # md5 of the listing + ".dir"
    nfiles: int
    size: int


def dir_listing(path: Path | str, hash_name: str = MD5) -> DirListing:
    """DVC's listing of the directory at ``path`` and the ``.dir`` hash it records for it."""
    _check_name(hash_name)
    top = os.path.normpath(os.fspath(path))
    if not os.path.isdir(top):
        raise NotADirectoryError(f"not a directory: {top}")
    files = _files_below(top)
    dos2unix = hash_name == MD5_DOS2UNIX
    # One file after another: measured on 100,000 small files with a warm page cache, a thread
    # pool was slower (the GIL is held for all but the read and the hashing of >2 KiB).
    hashed = [_md5_and_size(p, dos2unix) for _, p in files]
    entries = [{"md5": md5, "relpath": rel}
               for (rel, _), (md5, _size) in zip(files, hashed, strict=True)]
    listing = json.dumps(entries, sort_keys=True).encode("utf-8")
    digest = _new_md5()
    digest.update(listing)
    return DirListing(listing=listing, md5=digest.hexdigest() + ".dir", nfiles=len(files),
                      size=sum(size for _md5, size in hashed))


def path_md5(path: Path | str, hash_name: str = MD5) -> str:
    """The hash DVC records for ``path``: a file's md5, or a directory's ``<md5>.dir``."""
    if Path(path).is_dir():
        return dir_listing(path, hash_name).md5
    return file_md5(path, hash_name)


class Md5Memo:
    """Remembers hashes within one import, so a dep shared by many stages is read once."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], str] = {}

    def md5(self, root: Path, rel: str, hash_name: str) -> str:
        key = (rel, hash_name)
        if key not in self._known:
            self._known[key] = path_md5(root / rel, hash_name)
        return self._known[key]


def check_path(root: Path, entry: LockedPath, memo: Md5Memo | None = None) -> str | None:
    """None when the workspace holds what ``entry`` records, else why not (one line)."""
    full = root / entry.path
    if not full.exists():
        return f"{entry.path}: missing from the workspace"
    if entry.is_dir != full.is_dir():
        kind = "a directory" if entry.is_dir else "a file"
        return f"{entry.path}: recorded as {kind} but the workspace has " + (
            "a file" if entry.is_dir else "a directory")
    try:
        got = (memo or Md5Memo()).md5(root, entry.path, entry.hash_name)
    except ValueError as exc:
        return f"{entry.path}: {exc}"
    except OSError as exc:
        return f"{entry.path}: cannot be read ({exc.strerror or exc})"
    if got != entry.md5:
        return f"{entry.path}: content differs from what DVC recorded"
    return None
