"""The lock format's pydantic schema: the full check, and the reason a lock is refused.

lock.py owns the format (documented there) and accepts a well-formed lock with hand-written
checks that import nothing heavy (``lock._accept``). Everything it does not recognise as
valid comes here: this schema is the format's reference check, and ``_reason`` words the
first problem as the user sees it. It is imported only then, so reading sound locks never
imports pydantic (about 70 ms of CPU at start-up).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
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

from pivotbuild.lock import (
    MISSING_HASH,
    SCHEMA_VERSION,
    Lock,
    LockedDep,
    LockedOut,
    LockFormatError,
    is_safe_path,
)
from pivotbuild.names import is_dir_hash, is_hash


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


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


# ---- the checks lock.py falls back to -------------------------------------------------------


def validate_dict(data: Any, stage: str | None = None) -> Lock:
    """A parsed lock document validated by the schema; LockFormatError naming the first bad
    field (``stage``: the name the lock must carry, if known)."""
    try:
        doc = _LockDoc.model_validate(data, context={"stage": stage})
    except ValidationError as exc:
        raise LockFormatError(_reason(exc, data, stage)) from None
    return doc.to_lock()


def parse_checked(text: bytes | str, stage: str | None = None) -> Lock:
    """Lock file content validated by the schema; LockFormatError with a short reason."""
    try:
        # One pass in pydantic's JSON parser for a sound lock; anything else is diagnosed
        # below, with Python's own words for a JSON syntax error.
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
    except ValueError:  # Python's limit on the digits of an int (pydantic has one too)
        raise LockFormatError(f"not valid JSON here (a number of more than "
                              f"{sys.get_int_max_str_digits()} digits)") from None
    return validate_dict(data, stage)


__all__ = ["parse_checked", "validate_dict"]
