"""The run cache: which outputs a stage run with a given input hash produced.

Entry, schema 1 (``runs/<names.run_entry_name(input_hash)>`` of a cache directory or a remote;
JSON as ``json.dumps(entry, indent=2, sort_keys=True) + "\\n"`` writes it)::

    {"input_hash": "<32 hex>", "schema": 1,
     "outs": [{"cache": true, "hash": "<hash>", "path": "model", "size": 10, "nfiles": 2}, …]}

- ``input_hash`` is the entry's name (lock.py defines it); ``outs`` are sorted by path, each
  path project-relative and normalised (paths.normalize_path), never the root, never twice;
- ``hash`` a file or directory hash (names.py), ``size`` a byte count, ``cache`` whether the
  run stored the output in the cache, ``nfiles`` present exactly for a directory hash.

``entry_bytes`` is the one writer's format and ``entry_problem`` the one validator, whoever
reads an entry (the planner, push, a fetch from a remote). Locally, an entry that does not
follow this is treated as absent, never an error; from a remote it is refused and named.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pivotbuild.atomic import write_if_changed
from pivotbuild.errors import OperationError, key_path
from pivotbuild.names import RUN_SUFFIX, is_dir_hash, is_hash, run_entry_name
from pivotbuild.paths import PathProblem, normalize_path
from pivotbuild.store.fileio import why
from pivotbuild.store.shards import iter_hashes, remove_stale_temps

RUNS_DIR = "runs"
RUN_SCHEMA_VERSION = 1
ENTRY_MAX_BYTES = 1 << 20  # an entry is a few hundred bytes; a remote's larger one is refused
_OUT_KEYS = ("path", "hash", "size", "cache", "nfiles")

@functools.cache
def _entry_model() -> Any:
    """The pydantic model of an entry. Built on first use: pydantic is loaded by then (every
    reader has loaded pivot.toml), and importing this module must not load it."""
    from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

    class RunOut(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

        path: str
        hash: str
        size: int = Field(ge=0)
        cache: bool
        nfiles: int | None = Field(default=None, ge=0)

        @field_validator("path")
        @classmethod
        def _project_relative(cls, path: str) -> str:
            try:
                safe = path != "." and normalize_path(path) == path
            except PathProblem:
                safe = False
            if not safe:
                raise ValueError(f"unsafe path {path!r}")
            return path

        @field_validator("hash")
        @classmethod
        def _a_hash(cls, digest: str) -> str:
            if not is_hash(digest):
                raise ValueError(f"not a hash: {digest!r}")
            return digest

        @model_validator(mode="after")
        def _nfiles_for_directories(self) -> RunOut:
            given = "nfiles" in self.model_fields_set and self.nfiles is not None
            if given != is_dir_hash(self.hash) or given != ("nfiles" in self.model_fields_set):
                raise ValueError("nfiles must be a count, present exactly for a directory hash")
            return self

    class RunEntry(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

        input_hash: str
        outs: list[RunOut]
        schema_version: int = Field(alias="schema")

        @field_validator("schema_version")
        @classmethod
        def _known_schema(cls, version: int) -> int:
            if version != RUN_SCHEMA_VERSION:
                raise ValueError(f"unsupported schema {version!r}")
            return version

        @model_validator(mode="after")
        def _paths_once(self) -> RunEntry:
            seen: set[str] = set()
            for i, out in enumerate(self.outs):
                if out.path in seen:
                    raise ValueError(f"outs[{i}]: path {out.path!r} repeated")
                seen.add(out.path)
            return self

    return RunEntry


def entry_problem(doc: Any, input_hash: str) -> str | None:
    """Why ``doc`` (parsed JSON) is not a valid entry named ``input_hash``, or None."""
    from pydantic import ValidationError

    if not isinstance(doc, dict):
        return "not an object with exactly input_hash, outs and schema"
    try:
        _entry_model().model_validate(doc)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = key_path(*error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    if doc["input_hash"] != input_hash:
        return "its input_hash is not its name"
    return None


def parse_entry(data: bytes, input_hash: str) -> dict[str, Any]:
    """The entry named ``input_hash`` from these bytes, validated; OperationError saying what
    is wrong with it otherwise."""
    if len(data) > ENTRY_MAX_BYTES:
        raise OperationError("too large to be a run-cache entry")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise OperationError("not valid JSON") from None
    problem = entry_problem(doc, input_hash)
    if problem:
        raise OperationError(problem)
    return doc  # type: ignore[no-any-return]


def entry_bytes(input_hash: str, outs: Iterable[Mapping[str, Any] | Any]) -> bytes:
    """The entry recording ``outs`` for ``input_hash``, in the format above; OperationError
    naming the out that does not fit.

    Each out is a mapping ``{path, hash, size, cache?, nfiles?}`` or has ``to_dict()`` giving
    one (lock.LockedOut); other keys (``persist``) are dropped: they are not results of the
    run. ``cache`` defaults to true.
    """
    entries = []
    for out in outs:
        if not isinstance(out, Mapping) and hasattr(out, "to_dict"):
            out = out.to_dict()
        item = {key: out[key] for key in _OUT_KEYS if key in out}
        item.setdefault("cache", True)
        if item.get("nfiles") is None:
            item.pop("nfiles", None)
        entries.append(item)
    entries.sort(key=lambda o: str(o.get("path")))
    doc = {"input_hash": input_hash, "outs": entries, "schema": RUN_SCHEMA_VERSION}
    problem = entry_problem(doc, input_hash)
    if problem:
        raise OperationError(f"refusing to record {problem}")
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("ascii")


class RunCache:
    """The run-cache entries of one cache directory (its ``runs/``)."""

    def __init__(self, runs_dir: Path, durable: bool = True) -> None:
        """``durable``: flush entries to disk before they become visible (off: tests)."""
        self.runs_dir = Path(runs_dir)
        self.durable = durable

    def path(self, input_hash: str) -> Path:
        """Where the entry for ``input_hash`` lives (InvalidHashError for what is not a file
        hash)."""
        return self.runs_dir / run_entry_name(input_hash)

    def get(self, input_hash: str) -> dict[str, Any] | None:
        """The entry for ``input_hash``; None if absent, unreadable or invalid."""
        try:
            return parse_entry(self.path(input_hash).read_bytes(), input_hash)
        except (OSError, OperationError):
            return None

    def put(self, input_hash: str, outs: Iterable[Mapping[str, Any] | Any]) -> bool:
        """Record the outputs a run with ``input_hash`` produced (see entry_bytes); False if
        exactly this was recorded already (the file is left alone)."""
        path = self.path(input_hash)
        try:
            data = entry_bytes(input_hash, outs)
        except OperationError as exc:
            raise OperationError(f"{path}: {exc}") from None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return write_if_changed(path, data, durable=self.durable)
        except OSError as exc:
            raise OperationError(f"{path}: cannot write the run-cache entry: {why(exc)}") \
                from None

    def __iter__(self) -> Iterator[str]:
        """Every input hash with an entry, sorted."""
        return iter_hashes(self.runs_dir, RUN_SUFFIX)

    def remove(self, input_hash: str) -> bool:
        """Delete an entry; False if it was not there."""
        path = self.path(input_hash)
        try:
            os.unlink(path)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise OperationError(f"{path}: cannot delete the run-cache entry: {why(exc)}") \
                from None

    def remove_stale_temps(self, older_than_s: float = 24 * 3600) -> int:
        """Delete temp files left by interrupted writes; how many were deleted."""
        return remove_stale_temps(self.runs_dir, older_than_s)


__all__ = ["ENTRY_MAX_BYTES", "RUNS_DIR", "RUN_SCHEMA_VERSION", "RunCache", "entry_bytes",
           "entry_problem", "parse_entry"]
