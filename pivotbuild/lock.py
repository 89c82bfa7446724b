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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from pivotbuild.atomic import write_if_changed
from pivotbuild.errors import OperationError, UsageError
from pivotbuild.hashing import get_backend
from pivotbuild.names import is_dir_hash, is_hash
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
        try:
            doc = _LockDoc.model_validate(data, context={"stage": stage})
        except ValidationError as exc:
            raise LockFormatError(_reason(exc, data, stage)) from None
        return doc.to_lock()


@dataclass(frozen=True, slots=True)
class LockProblem:
    """A lock file that exists but cannot be used; ``message`` is one line for the user."""

    path: Path
    message: str

    def __str__(self) -> str:
        return self.message


# ---- validation (pydantic; measured a little faster than the hand-written checks it replaced)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def is_safe_path(path: Any) -> bool:
    """A normalised project-relative path: no absolute path, no empty/./.. component."""
    if not isinstance(path, str) or not path or "\0" in path:
        return False
    if path == ".":
        return True
    if path.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def _rule(check: Callable[[Any], bool], kind: str) -> AfterValidator:
    """A check whose failure is a pydantic error of type ``kind`` (_reason words it)."""
    def validate(value: Any) -> Any:
        if not check(value):
            raise PydanticCustomError(kind, kind)
        return value
    return AfterValidator(validate)


_STRICT = ConfigDict(strict=True, extra="forbid")
_ABSENT = object()  # no "nfiles" key (null is a value, and wrong beside a file hash)


class _Dep(BaseModel):
    model_config = _STRICT
    path: Annotated[str, _rule(is_safe_path, "path")]
    hash: Annotated[str, _rule(is_hash, "hash")]
    size: Annotated[int, Field(ge=0)]
    nfiles: Any = Field(_ABSENT, validate_default=True)

    @field_validator("nfiles")
    @classmethod
    def _nfiles_with_a_dir_hash_only(cls, nfiles: Any, info: ValidationInfo) -> Any:
        if "hash" in info.data and info.data["hash"] is None:  # a missing discovered dep
            if nfiles is not _ABSENT:
                raise PydanticCustomError("file_nfiles", "file_nfiles")
            return None
        digest = info.data.get("hash")
        if digest is None:  # the hash is wrong already
            return None
        if is_dir_hash(digest):
            if type(nfiles) is not int or nfiles < 0:
                raise PydanticCustomError("nfiles", "nfiles")
        elif nfiles is not _ABSENT:
            raise PydanticCustomError("file_nfiles", "file_nfiles")
        return None if nfiles is _ABSENT else nfiles

    def to_dep(self) -> LockedDep:
        return LockedDep(self.path, self.hash, self.size, self.nfiles)


class _Discovered(_Dep):
    # null: missing when its run was committed (a dep's field, widened: pydantic's override)
    hash: Annotated[  # type: ignore[assignment]
        str | None, _rule(lambda v: v is None or is_hash(v), "hash")]

    @field_validator("size")
    @classmethod
    def _no_size_when_missing(cls, size: int, info: ValidationInfo) -> int:
        if "hash" in info.data and info.data["hash"] is None and size != 0:
            raise PydanticCustomError("missing_size", "missing_size")
        return size

    def to_dep(self) -> LockedDep:
        return LockedDep(self.path, MISSING_HASH if self.hash is None else self.hash, self.size,
                         self.nfiles)


class _Out(_Dep):
    cache: bool
    persist: bool

    def to_out(self) -> LockedOut:
        return LockedOut(self.path, self.hash, self.size, self.cache, self.persist, self.nfiles)


class _LockDoc(BaseModel):
    model_config = _STRICT
    schema_: Annotated[int, Field(alias="schema"),
                       _rule(lambda v: v == SCHEMA_VERSION, "schema")]
    stage: str
    cmd: list[str]
    input_hash: Annotated[str, _rule(lambda v: is_hash(v, directory=False), "hash")]
    params: dict[str, Any]
    deps: list[_Dep]
    outs: list[_Out]
    discovered: list[_Discovered] | None = None  # absent: None; null is refused below

    @field_validator("discovered", mode="before")
    @classmethod
    def _a_list_when_present(cls, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError("list_type", "list_type")
        return value

    @field_validator("stage")
    @classmethod
    def _the_files_stage(cls, name: str, info: ValidationInfo) -> str:
        expected = (info.context or {}).get("stage")
        if not name:
            raise PydanticCustomError("stage", "stage")
        if expected is not None and name != expected:
            raise PydanticCustomError("other_stage", "other_stage")
        return name

    def to_lock(self) -> Lock:
        """The Lock, once the paths are known to be unique."""
        lists: list[tuple[str, list[Any]]] = [("deps", self.deps), ("outs", self.outs),
                                              ("discovered", self.discovered or [])]
        for where, entries in lists:
            seen: set[str] = set()
            for entry in entries:
                if entry.path in seen:
                    raise LockFormatError(f"{where} lists {entry.path!r} twice")
                seen.add(entry.path)
        return Lock(stage=self.stage, cmd=self.cmd, deps=[d.to_dep() for d in self.deps],
                    outs=[o.to_out() for o in self.outs], params=self.params,
                    input_hash=self.input_hash, schema=self.schema_,
                    discovered=None if self.discovered is None
                    else [d.to_dep() for d in self.discovered])


_TOP_FIELD = {"stage": "stage is not a stage name", "cmd": "cmd is not a list of strings",
              "input_hash": "input_hash is not a hash", "params": "params is not an object"}
_ENTRY_FIELD = {"hash": "is not a hash", "size": "is not a size",
                "nfiles": "is missing or not a count", "cache": "is not true or false",
                "persist": "is not true or false"}
_FIELDS = ("stage", "cmd", "input_hash", "params", "deps", "outs", "discovered")
_ENTRY_FIELDS = ("path", "hash", "size", "nfiles", "cache", "persist")


def _order(error: ErrorDetails) -> tuple[Any, ...]:
    """Where a problem comes in the order the format is checked (and documented): schema,
    missing keys, unknown keys, then field by field, entry by entry."""
    loc, kind = error["loc"], error["type"]
    if not loc or loc[0] == "schema":
        return (0,)
    if len(loc) == 1 and kind in ("missing", "extra_forbidden"):
        return (1 if kind == "missing" else 2, loc[0])
    place = (3, _FIELDS.index(str(loc[0])), *loc[1:2])
    if len(loc) < 3 or loc[0] not in ("deps", "outs", "discovered"):
        return place
    if kind in ("missing", "extra_forbidden"):
        return (*place, 1 if kind == "missing" else 2, loc[2])
    return (*place, 3, _ENTRY_FIELDS.index(str(loc[2])))


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _reason(exc: ValidationError, data: Any, stage: str | None) -> str:
    """The first problem (see _order) in the document ``data``, worded as the format's fields
    are named."""
    # Without the inputs: pydantic cannot copy out a string holding a lone surrogate (a path
    # of undecodable bytes); the value is read from data instead.
    error = min(exc.errors(include_url=False, include_input=False), key=_order)
    loc, kind = error["loc"], error["type"]
    value = data
    for part in loc:
        value = value.get(part) if isinstance(value, dict) else (
            value[part] if isinstance(value, list) and isinstance(part, int) else None)
    if kind == "string_unicode" and isinstance(value, dict):
        # A key pydantic cannot read (it holds a lone surrogate): unknown, whatever it says.
        key = min(k for k in value if not _utf8(k))
        return f"{loc[0]}[{loc[1]}] has an unknown key {key!r}" if loc else f"unknown key {key!r}"
    if not loc:
        return f"top level is {_kind(value)}, not an object"
    if kind == "missing" and len(loc) == 1:
        return f"missing key {loc[0]!r}"
    if loc[0] == "schema":
        return (f"unsupported schema {json.dumps(value)} (this pivotbuild reads schema "
                f"{SCHEMA_VERSION})")
    if kind == "extra_forbidden" and len(loc) == 1:
        return f"unknown key {loc[0]!r}"
    if kind == "other_stage":
        return f"it belongs to stage {value!r}, not {stage!r}"
    if loc[0] in _TOP_FIELD:
        return _TOP_FIELD[str(loc[0])]
    if len(loc) == 1:  # deps, outs or discovered
        return f"{loc[0]} is {_kind(value)}, not a list"
    where = f"{loc[0]}[{loc[1]}]"
    if len(loc) == 2:
        return f"{where} is {_kind(value)}, not an object"
    key = loc[2]
    if kind == "missing":
        return f"{where} has no {key!r}"
    if kind == "extra_forbidden":
        return f"{where} has an unknown key {key!r}"
    if key == "path":
        return f"{where}.path is not a project-relative path: {value!r}"
    if kind == "file_nfiles":
        return f"{where} has nfiles but a file hash (or null)"
    if kind == "missing_size":
        return f"{where}.size is not 0 for a missing file (hash null)"
    return f"{where}.{key} {_ENTRY_FIELD[str(key)]}"


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
    """Parse lock file content; raises LockFormatError with a short reason."""
    try:
        # One pass in pydantic's JSON parser for the common case, a sound lock; anything
        # else is diagnosed below, with Python's own words for a JSON syntax error.
        return _LockDoc.model_validate_json(text, context={"stage": stage}).to_lock()
    except ValidationError:
        pass
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise LockFormatError("not UTF-8 text") from None
    if not text.strip():
        raise LockFormatError("the file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # Some of json's messages end in "at" already ("Unterminated string starting at").
        where = f"line {exc.lineno} column {exc.colno}"
        what = f"{exc.msg} {where}" if exc.msg.endswith(" at") else f"{exc.msg} at {where}"
        raise LockFormatError(f"not valid JSON, truncated? {what}") from None
    except RecursionError:
        raise LockFormatError("not valid JSON (nested too deeply)") from None
    return Lock.from_dict(data, stage)


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
