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

The md5s are computed by the hashing backend (``md5_files``: the C core's pb_md5_files, a
batch on its thread pool; hashlib in the pure-Python fallback), one batch per directory and
one for all the single files an import checks (``Md5Memo.prefetch``). A directory whose
listing DVC's cache still holds (``.dvc/cache/files/md5/ab/cdef….dir``, DVC 2:
``.dvc/cache/ab/cdef….dir``) is checked file by file against it, so a mismatch names the
files that differ; otherwise its listing is rebuilt and its md5 compared.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pivotbuild.hashing import get_backend

MD5 = "md5"  # DVC 3: raw bytes
MD5_DOS2UNIX = "md5-dos2unix"  # DVC 2: CRLF → LF in text chunks
HASH_NAMES = (MD5, MD5_DOS2UNIX)
DVC_CACHE_DIRS = (".dvc/cache/files/md5", ".dvc/cache")  # where DVC 3 / DVC 2 keep objects


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


def _check_name(hash_name: str) -> None:
    if hash_name not in HASH_NAMES:
        raise ValueError(f"unsupported DVC hash {hash_name!r} (supported: md5, md5-dos2unix)")


def _md5_many(paths: list[str], hash_name: str, jobs: int = 0) -> list[tuple[str, int]]:
    """(md5, size) of each file, in one batch; OSError naming the first that failed."""
    dos2unix = hash_name == MD5_DOS2UNIX
    found = get_backend().md5_files([(p, dos2unix) for p in paths], jobs)
    for item in found:
        if item.error is not None:
            raise OSError(0, item.error, item.path)
    return [(item.hash, item.size) for item in found]


def file_md5(path: Path | str, hash_name: str = MD5) -> str:
    """The MD5 DVC records for the file at ``path`` (OSError if it cannot be read)."""
    _check_name(hash_name)
    return _md5_many([os.fspath(path)], hash_name)[0][0]


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


def _listing_bytes(entries: list[tuple[str, str]]) -> bytes:
    """DVC's listing of (relpath, md5) pairs (already sorted by relpath)."""
    return json.dumps([{"md5": md5, "relpath": rel} for rel, md5 in entries],
                      sort_keys=True).encode("utf-8")


def dir_listing(path: Path | str, hash_name: str = MD5, jobs: int = 0) -> DirListing:
    """DVC's listing of the directory at ``path`` and the ``.dir`` hash it records for it."""
    _check_name(hash_name)
    top = os.path.normpath(os.fspath(path))
    if not os.path.isdir(top):
        raise NotADirectoryError(f"not a directory: {top}")
    files = _files_below(top)
    hashed = _md5_many([p for _, p in files], hash_name, jobs)
    listing = _listing_bytes([(rel, md5) for (rel, _), (md5, _) in zip(files, hashed,
                                                                       strict=True)])
    return DirListing(listing=listing, md5=get_backend().md5_bytes(listing) + ".dir",
                      nfiles=len(files), size=sum(size for _md5, size in hashed))


def path_md5(path: Path | str, hash_name: str = MD5) -> str:
    """The hash DVC records for ``path``: a file's md5, or a directory's ``<md5>.dir``."""
    if Path(path).is_dir():
        return dir_listing(path, hash_name).md5
    return file_md5(path, hash_name)


def cached_listing(root: Path, md5: str) -> list[tuple[str, str]] | None:
    """The (relpath, md5) pairs of the ``.dir`` object ``md5`` in the project's DVC cache,
    sorted by relpath; None when the cache does not hold it (or holds something else)."""
    name = md5[:2] + "/" + md5[2:]
    for cache in DVC_CACHE_DIRS:
        try:
            data = (root / cache / name).read_bytes()
        except OSError:
            continue
        if get_backend().md5_bytes(data) + ".dir" != md5:
            continue  # not what its name says: rebuild the listing instead
        try:
            entries = json.loads(data)
            pairs = sorted((str(e["relpath"]), str(e["md5"])) for e in entries)
        except (ValueError, TypeError, KeyError):
            continue
        return pairs
    return None


def _check_listing(root: Path, entry: LockedPath, listed: list[tuple[str, str]]
                   ) -> str | None:
    """Compare the workspace directory with DVC's listing of it, file by file."""
    top = os.path.normpath(os.fspath(root / entry.path))
    files = _files_below(top)
    want = dict(listed)
    have = [rel for rel, _ in files]
    added = sorted(set(have) - want.keys())
    removed = sorted(want.keys() - set(have))
    if added or removed:
        parts = [f"{len(added)} file(s) DVC did not record (e.g. {added[0]})"] if added else []
        if removed:
            parts.append(f"{len(removed)} recorded file(s) missing (e.g. {removed[0]})")
        return f"{entry.path}: " + "; ".join(parts)
    hashed = _md5_many([p for _, p in files], entry.hash_name)
    changed = [rel for rel, (md5, _) in zip(have, hashed, strict=True) if md5 != want[rel]]
    if changed:
        return (f"{entry.path}: {len(changed)} file(s) differ from what DVC recorded "
                f"(e.g. {changed[0]})")
    return None


class Md5Memo:
    """Remembers hashes within one import, so a dep shared by many stages is read once."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], str] = {}

    def prefetch(self, root: Path, entries: Iterable[LockedPath], jobs: int = 0) -> None:
        """Hash every single file among ``entries`` in one batch (errors are left for
        ``md5`` to meet and report)."""
        wanted = {(e.path, e.hash_name) for e in entries
                  if not e.is_dir and e.hash_name in HASH_NAMES
                  and (e.path, e.hash_name) not in self._known}
        for hash_name in HASH_NAMES:
            rels = sorted(rel for rel, name in wanted if name == hash_name)
            dos2unix = hash_name == MD5_DOS2UNIX
            found = get_backend().md5_files([(str(root / r), dos2unix) for r in rels], jobs)
            for rel, item in zip(rels, found, strict=True):
                if item.error is None:
                    self._known[(rel, hash_name)] = item.hash

    def known(self, rel: str, hash_name: str) -> bool:
        return (rel, hash_name) in self._known

    def md5(self, root: Path, rel: str, hash_name: str) -> str:
        key = (rel, hash_name)
        if key not in self._known:
            self._known[key] = path_md5(root / rel, hash_name)
        return self._known[key]

    def check_dir(self, root: Path, entry: LockedPath) -> str | None:
        """A directory entry against DVC's cached listing, or None if there is none."""
        listed = cached_listing(root, entry.md5)
        if listed is None:
            return None
        problem = _check_listing(root, entry, listed)
        if problem is None:
            self._known[(entry.path, entry.hash_name)] = entry.md5
        return problem or ""


def check_path(root: Path, entry: LockedPath, memo: Md5Memo | None = None) -> str | None:
    """None when the workspace holds what ``entry`` records, else why not (one line)."""
    memo = memo or Md5Memo()
    full = root / entry.path
    if not full.exists():
        return f"{entry.path}: missing from the workspace"
    if entry.is_dir != full.is_dir():
        kind = "a directory" if entry.is_dir else "a file"
        return f"{entry.path}: recorded as {kind} but the workspace has " + (
            "a file" if entry.is_dir else "a directory")
    try:
        _check_name(entry.hash_name)
        if entry.is_dir and not memo.known(entry.path, entry.hash_name):
            problem = memo.check_dir(root, entry)
            if problem is not None:
                return problem or None
        got = memo.md5(root, entry.path, entry.hash_name)
    except ValueError as exc:
        return f"{entry.path}: {exc}"
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and exc.filename != str(full) else ""
        return f"{entry.path}: cannot be read{where}: {exc.strerror or exc}"
    if got != entry.md5:
        return f"{entry.path}: content differs from what DVC recorded"
    return None
