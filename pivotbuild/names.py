"""Object names: the hash patterns, the ``.dir`` rule, and an object's or run entry's name.

A file's hash is its XXH3-128 as 32 lowercase hex digits; a directory's hash is the XXH3-128 of
its manifest (manifest.py) followed by ``.dir``. In a store (the local cache, a remote) an
object lives at ``files/<object_name(hash)>`` and a run-cache entry at
``runs/<run_entry_name(input_hash)>``: the first two hex digits are a shard directory, the
rest the file's name. No path is ever built from a string that is not a hash: every function
here that builds a name checks it first (InvalidHashError).

This module imports nothing from pivotbuild at load time but errors.py (and no typing), so
that every other module may use it, the hashing backends and the fast paths included.
"""

from __future__ import annotations

import re

from pivotbuild.errors import OperationError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hash fast path

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

DIR_SUFFIX = ".dir"
RUN_SUFFIX = ".json"

FILE_HASH_RE = re.compile(r"[0-9a-f]{32}")
DIR_HASH_RE = re.compile(r"[0-9a-f]{32}\.dir")
ANY_HASH_RE = re.compile(r"[0-9a-f]{32}(\.dir)?")


class InvalidHashError(OperationError, ValueError):
    """A string that is not an object name; no path is ever built from one."""


def is_hash(value: Any, directory: bool | None = None) -> bool:
    """Is ``value`` a hash? ``directory`` True requires a ``.dir`` hash, False forbids one,
    None accepts both."""
    if not isinstance(value, str):
        return False
    if directory is None:
        return ANY_HASH_RE.fullmatch(value) is not None
    return (DIR_HASH_RE if directory else FILE_HASH_RE).fullmatch(value) is not None


def check_hash(value: Any, directory: bool | None = None) -> str:
    """Return ``value`` if it is a hash (``directory`` as for is_hash); InvalidHashError
    otherwise."""
    if not isinstance(value, str) or ANY_HASH_RE.fullmatch(value) is None:
        raise InvalidHashError(f"invalid object hash {value!r}")
    if directory is not None and value.endswith(DIR_SUFFIX) != directory:
        kind = "a directory" if directory else "a file"
        raise InvalidHashError(f"{value!r} is not {kind} hash")
    return value


def is_dir_hash(digest: str) -> bool:
    """Does this (valid) hash name a directory, i.e. a ``.dir`` object holding a manifest?"""
    return digest.endswith(DIR_SUFFIX)


def dir_hash(manifest: bytes, hash_bytes: Callable[[bytes], str] | None = None) -> str:
    """The hash of the directory whose manifest is ``manifest``: its XXH3-128 + ``.dir``.

    ``hash_bytes``: the function computing XXH3-128 (a hashing backend hashing its own
    trees passes its method); default: the backend in use.
    """
    if hash_bytes is None:
        # Imported here: the hashing backends import this module for DIR_SUFFIX.
        from pivotbuild.hashing import get_backend

        hash_bytes = get_backend().hash_bytes
    return hash_bytes(manifest) + DIR_SUFFIX


def object_name(digest: str) -> str:
    """``ab/cdef…`` (``ab/cdef….dir`` for a directory): where the object ``digest`` lives
    below a store's ``files/``."""
    check_hash(digest)
    return f"{digest[:2]}/{digest[2:]}"


def run_entry_name(input_hash: str) -> str:
    """``ab/cdef….json``: where the run-cache entry of a run with ``input_hash`` lives below a
    store's ``runs/``."""
    check_hash(input_hash, directory=False)
    return f"{input_hash[:2]}/{input_hash[2:]}{RUN_SUFFIX}"


def shard_of(digest: str) -> str:
    """The shard directory (first two hex digits) a hash's object or run entry lives in."""
    return digest[:2]


def hash_from_name(shard: str, name: str, suffix: str = "") -> str | None:
    """The hash an entry ``name`` of shard directory ``shard`` stands for, or None if it is
    not one (a temp file, a stray file). ``suffix``: RUN_SUFFIX for run entries, where only
    file hashes are valid; "" for objects."""
    if suffix:
        if not name.endswith(suffix):
            return None
        name = name[: -len(suffix)]
    candidate = shard + name
    if len(shard) != 2 or not is_hash(candidate, directory=False if suffix else None):
        return None
    return candidate


__all__ = [
    "ANY_HASH_RE", "DIR_HASH_RE", "DIR_SUFFIX", "FILE_HASH_RE", "RUN_SUFFIX", "InvalidHashError",
    "check_hash", "dir_hash", "hash_from_name", "is_dir_hash", "is_hash", "object_name",
    "run_entry_name", "shard_of",
]
