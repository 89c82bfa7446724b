"""The run cache: which outputs a stage run with a given input hash produced.

Entry (``runs/<names.run_entry_name(input_hash)>`` of a cache directory or a remote; JSON as
``json.dumps(entry, indent=2, sort_keys=True) + "\\n"`` writes it). Schema 1, for a stage
that discovers no deps::

    {"input_hash": "<32 hex>", "schema": 1,
     "outs": [{"cache": true, "hash": "<hash>", "path": "model", "size": 10, "nfiles": 2}, …]}

Schema 2 (revision 2026-12), for a stage with a ``depfile`` or ``discover`` (SPEC §9, §13),
whose runs with one input hash may have read different headers or modules: besides the newest
run's ``outs``, the deps that run discovered, with their hashes, and older runs with other
discovered contents, newest first (like ccache's direct-mode manifest)::

    {"input_hash": "<32 hex>", "schema": 2,
     "outs": [...],                                         # the newest run's
     "discovered": [{"hash": "<hash>", "path": "include/calc.h", "size": 321}, …],
     "earlier": [{"discovered": [...], "outs": [...]}, …]}  # at most MAX_VARIANTS - 1

- ``input_hash`` is the entry's name (lock.py defines it); ``outs`` and every ``discovered``
  list are sorted by path, each path project-relative and normalised (paths.normalize_path),
  never the root, never twice in one list;
- ``hash`` a file or directory hash (names.py), ``size`` a byte count, ``cache`` (outs only)
  whether the run stored the output in the cache, ``nfiles`` present exactly for a directory
  hash;
- schema 1 has neither ``discovered`` nor ``earlier``; schema 2 has both (``earlier`` maybe
  empty); no two variants of one entry have the same ``discovered`` list.

A variant (``variants``) is usable only when every discovered dep it lists still has the
recorded hash; the planner takes the first usable one, newest first. Recording a run
(``RunCache.put``) puts its variant first and drops an older one with the same discovered
list, then the oldest beyond MAX_VARIANTS or beyond ENTRY_MAX_BYTES. A schema 1 entry keeps
``outs`` at the top, so readers that only want outputs (push, fetch) read both schemas alike.
A pivotbuild older than schema 2 treats a schema 2 entry as absent (locally) or refuses it
(from a remote): it could not check the discovered deps, so it must not use it.

``entry_bytes`` is the one writer's format and ``entry_problem`` the one validator, whoever
reads an entry (the planner, push, a fetch from a remote). Locally, an entry that does not
follow this is treated as absent, never an error; from a remote it is refused and named.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pivotbuild.atomic import write_if_changed
from pivotbuild.errors import OperationError, key_path
from pivotbuild.names import RUN_SUFFIX, is_dir_hash, is_hash, run_entry_name
from pivotbuild.paths import PathProblem, normalize_path
from pivotbuild.store.fileio import why
from pivotbuild.store.shards import iter_hashes, remove_stale_temps

RUNS_DIR = "runs"
RUN_SCHEMA_VERSION = 2  # what entries with discovered deps are written as
PLAIN_SCHEMA_VERSION = 1  # what entries without are written as (and were, before schema 2)
MAX_VARIANTS = 8  # runs with different discovered contents kept per input hash
ENTRY_MAX_BYTES = 1 << 20  # an entry is a few hundred bytes; a remote's larger one is refused
_OUT_KEYS = ("path", "hash", "size", "cache", "nfiles")
_DEP_KEYS = ("path", "hash", "size", "nfiles")


@functools.cache
def _entry_model() -> Any:
    """The pydantic model of an entry. Built on first use, for an entry the plain checks
    (_plainly_valid) pass on: importing this module, or reading a sound entry, loads no
    pydantic."""
    from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

    class RunDep(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

        path: str
        hash: str
        size: int = Field(ge=0)
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
        def _nfiles_for_directories(self) -> RunDep:
            given = "nfiles" in self.model_fields_set and self.nfiles is not None
            if given != is_dir_hash(self.hash) or given != ("nfiles" in self.model_fields_set):
                raise ValueError("nfiles must be a count, present exactly for a directory hash")
            return self

    class RunOut(RunDep):
        cache: bool

    def paths_once(name: str, entries: Sequence[RunDep] | None) -> None:
        seen: set[str] = set()
        for i, entry in enumerate(entries or ()):
            if entry.path in seen:
                raise ValueError(f"{name}[{i}]: path {entry.path!r} repeated")
            seen.add(entry.path)

    class Variant(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

        outs: list[RunOut]
        discovered: list[RunDep]

        @model_validator(mode="after")
        def _paths_once(self) -> Variant:
            paths_once("outs", self.outs)
            paths_once("discovered", self.discovered)
            return self

    class RunEntry(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

        input_hash: str
        outs: list[RunOut]
        discovered: list[RunDep] | None = None
        earlier: list[Variant] | None = None
        schema_version: int = Field(alias="schema")

        @field_validator("schema_version")
        @classmethod
        def _known_schema(cls, version: int) -> int:
            if version not in (PLAIN_SCHEMA_VERSION, RUN_SCHEMA_VERSION):
                raise ValueError(f"unsupported schema {version!r}")
            return version

        @model_validator(mode="after")
        def _paths_once(self) -> RunEntry:
            paths_once("outs", self.outs)
            paths_once("discovered", self.discovered)
            plain = self.schema_version == PLAIN_SCHEMA_VERSION
            if plain and (self.discovered is not None or self.earlier is not None):
                raise ValueError("schema 1 has no discovered or earlier")
            if not plain and (self.discovered is None or self.earlier is None):
                raise ValueError("schema 2 needs discovered and earlier")
            lists = [_dep_key(self.discovered)] + [_dep_key(v.discovered)
                                                   for v in self.earlier or ()]
            if len(set(lists)) != len(lists):
                raise ValueError("two variants have the same discovered list")
            return self

    return RunEntry


def _dep_key(entries: Iterable[Any] | None) -> tuple[tuple[str, str], ...]:
    """A discovered list as a comparable value: its (path, hash) pairs."""
    return tuple((e["path"], e["hash"]) if isinstance(e, Mapping) else (e.path, e.hash)
                 for e in entries or ())


_FILE_DEP_KEYS = frozenset(("hash", "path", "size"))
_DIR_DEP_KEYS = _FILE_DEP_KEYS | {"nfiles"}
_FILE_OUT_KEYS = _FILE_DEP_KEYS | {"cache"}
_DIR_OUT_KEYS = _DIR_DEP_KEYS | {"cache"}
_ENTRY_KEYS = {PLAIN_SCHEMA_VERSION: frozenset(("input_hash", "outs", "schema")),
               RUN_SCHEMA_VERSION: frozenset(("discovered", "earlier", "input_hash", "outs",
                                              "schema"))}
_VARIANT_KEYS = frozenset(("discovered", "outs"))
_COUNT_LIMIT = 1 << 63  # a size or nfiles beyond any real one goes to the model


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value < _COUNT_LIMIT  # not a bool, not a float


def _plain_list(items: Any, out: bool) -> tuple[tuple[str, str], ...] | None:
    """A plainly valid ``outs`` (``out``) or ``discovered`` list as _dep_key gives it; paths
    strictly ascending (sorted, each once), as the writer writes them. None: anything else."""
    if type(items) is not list:
        return None
    pairs: list[tuple[str, str]] = []
    last = None
    for item in items:
        if type(item) is not dict:
            return None
        path: Any = item.get("path")
        digest: Any = item.get("hash")
        if type(path) is not str or path == "." or (last is not None and not last < path):
            return None
        last = path
        try:
            if normalize_path(path) != path:
                return None
        except PathProblem:
            return None
        if is_hash(digest, directory=False):
            keys = _FILE_OUT_KEYS if out else _FILE_DEP_KEYS
        elif is_hash(digest, directory=True) and _count(item.get("nfiles")):
            keys = _DIR_OUT_KEYS if out else _DIR_DEP_KEYS
        else:
            return None
        if item.keys() != keys or not _count(item["size"]):
            return None
        if out and type(item["cache"]) is not bool:
            return None
        pairs.append((path, digest))
    return tuple(pairs)


def _plainly_valid(doc: Any, input_hash: str) -> bool:
    """Is ``doc`` an entry named ``input_hash`` by checks that need no pydantic? They check
    what the model checks and more; False leaves the verdict (and its words) to the model."""
    if type(doc) is not dict:
        return False
    schema = doc.get("schema")
    if type(schema) is not int or schema not in _ENTRY_KEYS or doc.keys() != _ENTRY_KEYS[schema]:
        return False
    if type(doc["input_hash"]) is not str or doc["input_hash"] != input_hash:
        return False
    if _plain_list(doc["outs"], out=True) is None:
        return False
    if schema == PLAIN_SCHEMA_VERSION:
        return True
    earlier = doc["earlier"]
    if type(earlier) is not list:
        return False
    lists = [_plain_list(doc["discovered"], out=False)]
    for variant in earlier:
        if (type(variant) is not dict or variant.keys() != _VARIANT_KEYS
                or _plain_list(variant["outs"], out=True) is None):
            return False
        lists.append(_plain_list(variant["discovered"], out=False))
    return None not in lists and len(set(lists)) == len(lists)


def entry_problem(doc: Any, input_hash: str) -> str | None:
    """Why ``doc`` (parsed JSON) is not a valid entry named ``input_hash``, or None.

    A sound entry is recognised without pydantic (the planner reads one, a commit writes one,
    on every run): only another needs the model, to say what is wrong."""
    if _plainly_valid(doc, input_hash):
        return None
    return _model_problem(doc, input_hash)


def _model_problem(doc: Any, input_hash: str) -> str | None:
    """entry_problem by the pydantic model alone."""
    from pydantic import ValidationError

    if not isinstance(doc, dict):
        return "not an object with input_hash, outs and schema"
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


def _normal(entries: Iterable[Mapping[str, Any] | Any], keys: tuple[str, ...]
            ) -> list[dict[str, Any]]:
    """Mappings (or objects with ``to_dict()``) reduced to ``keys``, sorted by path; ``cache``
    defaults to true where it is one of the keys; a None ``nfiles`` is dropped."""
    items = []
    for entry in entries:
        if not isinstance(entry, Mapping) and hasattr(entry, "to_dict"):
            entry = entry.to_dict()
        item = {key: entry[key] for key in keys if key in entry}
        if "cache" in keys:
            item.setdefault("cache", True)
        if item.get("nfiles") is None:
            item.pop("nfiles", None)
        items.append(item)
    items.sort(key=lambda o: str(o.get("path")))
    return items


def variants(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The runs a (valid) entry records, newest first, each ``{"outs": [...], "discovered":
    [...]}``; ``discovered`` is None in a schema 1 entry's one variant."""
    found = [{"outs": entry["outs"], "discovered": entry.get("discovered")}]
    found += [{"outs": v["outs"], "discovered": v["discovered"]}
              for v in entry.get("earlier") or ()]
    return found


def new_entry(input_hash: str, outs: Iterable[Mapping[str, Any] | Any],
              discovered: Iterable[Mapping[str, Any] | Any] | None = None,
              previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The entry (not yet validated) after a run with ``input_hash`` produced ``outs``.

    ``discovered`` None: a run of a stage that discovers nothing (schema 1; ``previous`` is
    replaced). Otherwise its discovered deps (mappings ``{path, hash, size, nfiles?}`` or
    lock.LockedDep); the run becomes the newest variant of ``previous`` (the entry recorded
    so far, if any), replacing one with the same discovered list, at most MAX_VARIANTS kept.
    Other keys (``persist``) are dropped: they are not results of the run."""
    doc: dict[str, Any] = {"input_hash": input_hash, "outs": _normal(outs, _OUT_KEYS)}
    if discovered is None:
        doc["schema"] = PLAIN_SCHEMA_VERSION
        return doc
    found = _normal(discovered, _DEP_KEYS)
    earlier = [v for v in (variants(previous) if previous else [])
               if v["discovered"] is not None and _dep_key(v["discovered"]) != _dep_key(found)]
    doc.update(schema=RUN_SCHEMA_VERSION, discovered=found, earlier=earlier[:MAX_VARIANTS - 1])
    return doc


def _serialised(doc: dict[str, Any]) -> bytes:
    """``doc`` validated and as written; the oldest variants dropped while it is larger than
    ENTRY_MAX_BYTES. OperationError naming what does not fit."""
    problem = entry_problem(doc, doc["input_hash"])
    if problem:
        raise OperationError(f"refusing to record {problem}")
    while True:
        data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("ascii")
        if len(data) <= ENTRY_MAX_BYTES or not doc.get("earlier"):
            return data
        doc["earlier"] = doc["earlier"][:-1]


def entry_bytes(input_hash: str, outs: Iterable[Mapping[str, Any] | Any],
                discovered: Iterable[Mapping[str, Any] | Any] | None = None,
                previous: Mapping[str, Any] | None = None) -> bytes:
    """The entry recording ``outs`` (and ``discovered``, on top of ``previous``: see
    new_entry) for ``input_hash``, in the format above; OperationError naming the out that
    does not fit.

    Each out is a mapping ``{path, hash, size, cache?, nfiles?}`` or has ``to_dict()`` giving
    one (lock.LockedOut); ``cache`` defaults to true.
    """
    return _serialised(new_entry(input_hash, outs, discovered, previous))


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

    def put(self, input_hash: str, outs: Iterable[Mapping[str, Any] | Any],
            discovered: Iterable[Mapping[str, Any] | Any] | None = None) -> bool:
        """Record the outputs a run with ``input_hash`` produced, and the deps it discovered
        (None: the stage discovers nothing; see new_entry); False if exactly this was
        recorded already (the file is left alone)."""
        previous = None if discovered is None else self.get(input_hash)
        return self._write(input_hash, lambda: entry_bytes(input_hash, outs, discovered,
                                                           previous))

    def put_entry(self, input_hash: str, entry: Mapping[str, Any]) -> bool:
        """Record every run of a (valid) entry from elsewhere (a remote's), its newest last,
        so that it is the newest here too."""
        doc = self.get(input_hash)
        for variant in reversed(variants(entry)):
            doc = new_entry(input_hash, variant["outs"], variant["discovered"], doc)
        assert doc is not None
        final = doc
        return self._write(input_hash, lambda: _serialised(final))

    def _write(self, input_hash: str, data_of: Callable[[], bytes]) -> bool:
        path = self.path(input_hash)
        try:
            data = data_of()
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


__all__ = ["ENTRY_MAX_BYTES", "MAX_VARIANTS", "PLAIN_SCHEMA_VERSION", "RUNS_DIR",
           "RUN_SCHEMA_VERSION", "RunCache", "entry_bytes", "entry_problem", "new_entry",
           "parse_entry", "variants"]
