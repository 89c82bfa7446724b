"""The per-stage lock file: its format, the input hash, and crash-safe reading and writing.

Format, schema 1 (``.pivotbuild/locks/<stage>.json``, committed to git)
--------------------------------------------------------------------------
JSON exactly as ``json.dumps(lock, indent=2, sort_keys=True) + "\\n"`` writes it::

    {
      "cmd": ["python train.py"],                  # always a list of strings
      "deps": [                                    # sorted by path, paths unique
        {"hash": "<32 hex>", "path": "data/clean.csv", "size": 1234},
        {"hash": "<32 hex>.dir", "nfiles": 3, "path": "src", "size": 99}
      ],
      "input_hash": "<32 hex>",                    # see input_hash() below
      "outs": [                                    # sorted by path, paths unique
        {"cache": true, "hash": "<32 hex>.dir", "nfiles": 12, "path": "model",
         "persist": false, "size": 4567}
      ],
      "params": {"train.lr": 0.01},                # dotted key -> value from params.toml
      "schema": 1,
      "stage": "train"                             # equals the file's name without .json
    }

and, only for a stage with a ``depfile`` or ``discover`` (revision 2026-12, SPEC §9, §13)::

      "discovered": [                              # sorted by path, paths unique; may be []
        {"hash": "<32 hex>", "path": "include/calc.h", "size": 321},
        {"hash": null, "path": "include/gen.h", "size": 0}   # a prerequisite that was missing
      ],

the deps the stage's last run was found to read (its depfile's prerequisites, the Python
modules it imported) that it does not declare, hashed when that run was committed. They are
not part of the input hash (they are only known after a run) and are checked beside it.
The key is absent, not empty, for every other stage, so older locks read as before and are
written byte for byte as before. (A pivotbuild older than this revision refuses a lock that
has the key, as it refuses any unknown key: the stage is stale there, never wrongly skipped.)

- Every hash is real: 32 lowercase hex digits for a file, the same followed by ``.dir``
  for a directory; ``nfiles`` is present exactly when the hash is a directory hash.
- Paths are project-relative and normalised (``/``-separated, no empty, ``.`` or ``..``
  component; ``.`` alone is the project root). No timestamp and no absolute path appears,
  so the same inputs give byte-identical locks in any checkout.
- ``size`` is the file's size, or the sum of a directory's files' sizes.
- The one exception to real hashes: a discovered entry whose file did not exist when the run
  was committed (a depfile may name a header a ``-MG`` compile did not find) has ``"hash":
  null`` and ``"size": 0`` and no ``nfiles``. As Ninja does, the stage is stale (``dep-missing``)
  while the file is missing and runs again once it exists (its hash then differs from null).
- A discovered entry is shaped as a dep (a directory, which no compiler names, would carry
  ``nfiles``); a path may be both declared and discovered only if the stage's deps changed
  since the run: the lock records what that run saw.

A lock that does not follow this (truncated, hand-edited, from a newer pivotbuild) is not an
error: ``read_lock`` returns a ``LockProblem`` and the stage is treated as stale.

Input hash, version 1
---------------------
``input_hash`` is the XXH3-128 (32 hex) of the ASCII bytes of
``json.dumps(form, sort_keys=True, separators=(",", ":"), ensure_ascii=True)`` where::

    form = {"v": 1, "cmd": [...], "params": {key: value, ...},
            "deps": [[path, hash], ...] sorted, "outs": [path, ...] sorted, "wdir": wdir}

so the order of deps, outs and params never matters, and out flags (cache, persist),
desc and frozen are not inputs.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pivotbuild.atomic import write_if_changed
from pivotbuild.errors import OperationError, UsageError
from pivotbuild.hashing import get_backend
from pivotbuild.names import is_hash
from pivotbuild.paths import LOCKS_DIR

SCHEMA_VERSION = 1
INPUT_HASH_VERSION = 1



#: The hash of a discovered dep that was missing when its run was committed (``null`` in the
#: lock: see above); no file's digest ever equals it.
MISSING_HASH = ""


@dataclass(frozen=True, slots=True)
class LockedDep:
    path: str
    hash: str  # MISSING_HASH: a discovered dep that was missing
    size: int
    nfiles: int | None = None  # set for a directory dep

    @property
    def missing(self) -> bool:
        return self.hash == MISSING_HASH

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hash": None if self.missing else self.hash, "path": self.path,
                               "size": self.size}
        if self.nfiles is not None:
            out["nfiles"] = self.nfiles
        return out


@dataclass(frozen=True, slots=True)
class LockedOut:
    path: str
    hash: str
    size: int
    cache: bool = True
    persist: bool = False
    nfiles: int | None = None  # set for a directory output

    @property
    def is_dir(self) -> bool:
        return self.nfiles is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cache": self.cache, "hash": self.hash, "path": self.path,
            "persist": self.persist, "size": self.size,
        }
        if self.nfiles is not None:
            out["nfiles"] = self.nfiles
        return out


class LockFormatError(ValueError):
    """A lock document that does not follow the format; the message names the field."""


@dataclass(frozen=True, slots=True)
class Lock:
    stage: str
    cmd: list[str]
    deps: list[LockedDep]
    outs: list[LockedOut]
    params: dict[str, Any]
    input_hash: str
    schema: int = SCHEMA_VERSION
    discovered: list[LockedDep] | None = None  # None: the stage discovers nothing (no key)

    def __post_init__(self) -> None:
        # Kept sorted by path, as written: two locks with the same entries compare equal.
        object.__setattr__(self, "deps", sorted(self.deps, key=lambda d: d.path))
        object.__setattr__(self, "outs", sorted(self.outs, key=lambda o: o.path))
        if self.discovered is not None:
            object.__setattr__(self, "discovered", sorted(self.discovered, key=lambda d: d.path))

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "cmd": list(self.cmd),
            "deps": [d.to_dict() for d in self.deps],
            "input_hash": self.input_hash,
            "outs": [o.to_dict() for o in self.outs],
            "params": dict(self.params),
            "schema": self.schema,
            "stage": self.stage,
        }
        if self.discovered is not None:
            doc["discovered"] = [d.to_dict() for d in self.discovered]
        return doc

    def to_json(self) -> str:
        """The lock's exact file content (deps and outs sorted by path, final newline)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any, stage: str | None = None) -> Lock:
        """Validate a parsed lock document; raises LockFormatError naming the bad field.

        ``stage``, when given, is the name the lock must carry (its file name).
        """
        lock = _accept(data, stage)
        if lock is not None:
            return lock
        from pivotbuild.lockschema import validate_dict  # pydantic: only for a doubtful lock

        return validate_dict(data, stage)


@dataclass(frozen=True, slots=True)
class LockProblem:
    """A lock file that exists but cannot be used; ``message`` is one line for the user."""

    path: Path
    message: str

    def __str__(self) -> str:
        return self.message


# ---- validation -----------------------------------------------------------------------------
# A sound lock is accepted by the hand-written checks below, which import nothing heavy. They
# check what the schema (lockschema.py, pydantic) checks, and more (paths sorted, counts below
# 2**63); whatever they do not recognise as valid is judged by the schema, which then names
# the problem. So they are never looser than the schema: tests/test_lock.py runs both.


def is_safe_path(path: Any) -> bool:
    """A normalised project-relative path: no absolute path, no empty/./.. component."""
    if not isinstance(path, str) or not path or "\0" in path:
        return False
    if path == ".":
        return True
    if path.startswith("/"):
        return False
    parts = path.split("/")
    return "" not in parts and "." not in parts and ".." not in parts


_TOP_KEYS = frozenset(("cmd", "deps", "input_hash", "outs", "params", "schema", "stage"))
_TOP_KEYS_DISCOVERED = _TOP_KEYS | {"discovered"}
_FILE_KEYS = frozenset(("hash", "path", "size"))
_DIR_KEYS = _FILE_KEYS | {"nfiles"}
_FLAG_KEYS = frozenset(("cache", "persist"))
_FILE_OUT_KEYS = _FILE_KEYS | _FLAG_KEYS
_DIR_OUT_KEYS = _DIR_KEYS | _FLAG_KEYS
_COUNT_LIMIT = 1 << 63  # a size or nfiles beyond any real one goes to the schema


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value < _COUNT_LIMIT  # not a bool, not a float


def _accept_entries(items: Any, kind: str) -> list[Any] | None:
    """The entries of a ``deps``, ``outs`` or ``discovered`` list if each is plainly valid
    and the paths strictly ascend (sorted, unique); None otherwise."""
    if type(items) is not list:
        return None
    found: list[Any] = []
    last = None
    out = kind == "outs"
    for item in items:
        if type(item) is not dict:
            return None
        path: Any = item.get("path")
        digest: Any = item.get("hash")
        size: Any = item.get("size")
        if type(path) is not str or not is_safe_path(path) or (last is not None
                                                                and not last < path):
            return None
        last = path
        if not _count(size):
            return None
        keys = item.keys()
        nfiles = None
        if digest is None and kind == "discovered":  # missing when its run was committed
            if size != 0 or keys != _FILE_KEYS:
                return None
            digest = MISSING_HASH
        elif is_hash(digest, directory=False):
            if keys != (_FILE_OUT_KEYS if out else _FILE_KEYS):
                return None
        elif is_hash(digest, directory=True):
            nfiles = item.get("nfiles")
            if keys != (_DIR_OUT_KEYS if out else _DIR_KEYS) or not _count(nfiles):
                return None
        else:
            return None
        if out:
            cache, persist = item["cache"], item["persist"]
            if type(cache) is not bool or type(persist) is not bool:
                return None
            found.append(LockedOut(path, digest, size, cache, persist, nfiles))
        else:
            found.append(LockedDep(path, digest, size, nfiles))
    return found


def _accept(data: Any, stage: str | None) -> Lock | None:
    """The Lock of a parsed document that is plainly valid (the file's ``stage``, if known);
    None for anything else, to be judged by the schema."""
    if type(data) is not dict:
        return None
    keys = data.keys()
    if keys != _TOP_KEYS and keys != _TOP_KEYS_DISCOVERED:
        return None
    schema, name, cmd, params = data["schema"], data["stage"], data["cmd"], data["params"]
    if type(schema) is not int or schema != SCHEMA_VERSION:
        return None
    if type(name) is not str or not name or (stage is not None and name != stage):
        return None
    if type(cmd) is not list or any(type(part) is not str for part in cmd):
        return None
    if not is_hash(data["input_hash"], directory=False):
        return None
    if type(params) is not dict or any(type(key) is not str for key in params):
        return None
    deps = _accept_entries(data["deps"], "deps")
    outs = _accept_entries(data["outs"], "outs")
    discovered = None
    if "discovered" in data:
        discovered = _accept_entries(data["discovered"], "discovered")
        if discovered is None:
            return None
    if deps is None or outs is None:
        return None
    return Lock(stage=name, cmd=list(cmd), deps=deps, outs=outs, params=dict(params),
                input_hash=data["input_hash"], schema=schema, discovered=discovered)


# ---- where locks live -----------------------------------------------------------------------


# A lock's file name, ``<stage>.json``, must fit NAME_MAX (255 bytes); config.py refuses
# longer stage names (a matrix instance's included) when pivot.toml is loaded, through
# stage_name_size_problem; check_stage_name is the last guard.
MAX_STAGE_NAME_BYTES = 255 - len(".json")


def stage_name_size_problem(name: str) -> str | None:
    """Why ``name`` is too long to name its lock file, or None."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if size <= MAX_STAGE_NAME_BYTES:
        return None
    shown = repr(name) if len(name) <= 40 else repr(name[:40])[:-1] + "…'"
    return (f"stage name {shown} is {size} bytes: too long for its lock file's name "
            f"(at most {MAX_STAGE_NAME_BYTES} bytes)")


def check_stage_name(stage: str) -> None:
    """Refuse a stage name that could not be a file directly inside locks/."""
    if (not stage or "/" in stage or "\0" in stage or stage.startswith(".")
            or stage in (".", "..")):
        raise UsageError(f"invalid stage name for a lock file: {stage!r}")
    too_long = stage_name_size_problem(stage)
    if too_long:
        raise UsageError(too_long)


def lock_path(state_dir: Path, stage: str) -> Path:
    """``<state_dir>/locks/<stage>.json``; UsageError for a name that would escape locks/."""
    check_stage_name(stage)
    return Path(state_dir) / LOCKS_DIR / f"{stage}.json"


def _shown(path: Path) -> str:
    """The path as the user would type it: relative to the working directory when below it."""
    try:
        return str(Path(path).absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _stage_of(path: Path) -> str | None:
    name = Path(path).name
    return name[: -len(".json")] if name.endswith(".json") else None


# ---- reading and writing --------------------------------------------------------------------


def parse_lock(text: bytes | str, stage: str | None = None) -> Lock:
    """Parse lock file content; raises LockFormatError with a short reason.

    ``stage``, when given, is the name the lock must carry (its file's name).
    """
    try:
        # The common case, a sound lock, without pydantic (see _accept).
        data = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except Exception:  # noqa: BLE001 - whatever it is, the schema's path below names it
        data = None
    lock = _accept(data, stage)
    if lock is not None:
        return lock
    from pivotbuild.lockschema import parse_checked  # pydantic: only for a doubtful lock

    return parse_checked(text, stage)


def read_lock(
    path: Path, stage: str | None = None, shown: str | None = None
) -> Lock | LockProblem | None:
    """The lock at ``path``; None if there is none; a LockProblem if it cannot be used.

    ``stage`` defaults to the file's name without ``.json``; ``shown`` is how the path is
    named in the problem's message (default: relative to the working directory).
    """
    path = Path(path)
    if stage is None:
        stage = _stage_of(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:  # a file where locks/ should be: no lock there
            return None
        reason = f"cannot be read: {exc.strerror or exc}"
        return _problem(path, shown, reason)
    try:
        return parse_lock(raw, stage)
    except LockFormatError as exc:
        return _problem(path, shown, str(exc))


def _problem(path: Path, shown: str | None, reason: str) -> LockProblem:
    reason = " ".join(reason.split())  # always one line
    where = shown if shown is not None else _shown(path)
    return LockProblem(path, f"{where}: invalid lock ({reason}); the stage is treated as stale")


def write_lock(path: Path, lock: Lock) -> bool:
    """Write ``lock`` atomically; False (file untouched, same inode) if it holds these bytes.

    The lock is validated first, so pivotbuild never writes a lock it would refuse to read.
    """
    path = Path(path)
    text = lock.to_json()
    try:
        parse_lock(text, _stage_of(path))
    except LockFormatError as exc:
        raise OperationError(f"{_shown(path)}: refusing to write an invalid lock ({exc})") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_if_changed(path, text.encode("ascii"))
    except OSError as exc:
        raise OperationError(
            f"{_shown(path)}: cannot write the lock: {exc.strerror or exc}"
        ) from None


# ---- the input hash -------------------------------------------------------------------------


def input_form(
    cmd: Sequence[str] | str,
    params: Mapping[str, Any],
    deps: Iterable[tuple[str, str]],
    outs: Iterable[str],
    wdir: str,
) -> bytes:
    """The canonical bytes hashed into the input hash (documented at the top)."""
    form = {
        "v": INPUT_HASH_VERSION,
        "cmd": [cmd] if isinstance(cmd, str) else list(cmd),
        "params": dict(params),
        "deps": sorted([str(path), str(digest)] for path, digest in deps),
        "outs": sorted(str(path) for path in outs),
        "wdir": wdir,
    }
    try:
        text = json.dumps(form, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    except (TypeError, ValueError) as exc:
        raise OperationError(f"cannot compute the input hash: {exc}") from None
    return text.encode("ascii")


def input_hash(
    cmd: Sequence[str] | str,
    params: Mapping[str, Any],
    deps: Iterable[tuple[str, str]],
    outs: Iterable[str],
    wdir: str,
) -> str:
    """XXH3-128 of the canonical input form: same inputs, same hash, on any machine."""
    return get_backend().hash_bytes(input_form(cmd, params, deps, outs, wdir))


__all__ = [
    "INPUT_HASH_VERSION", "MAX_STAGE_NAME_BYTES", "SCHEMA_VERSION", "Lock", "LockFormatError",
    "LockProblem", "LockedDep", "LockedOut", "check_stage_name", "input_form", "input_hash",
    "is_safe_path", "lock_path", "parse_lock", "read_lock", "stage_name_size_problem",
    "write_lock",
]
