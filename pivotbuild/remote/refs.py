"""What a transfer concerns and what it reports: the cached outputs that locks and run-cache
entries reference (pivot.toml, never the lock, saying which are cached), the tracked paths'
content (``.pvt`` records, tracked.py), and the report.

A transfer is handed what it reads of the project (``Scope``): the local cache, the stages
pivot.toml declares, the lock store and the planner's rule for which outs are cached. It
looks nothing up in the planner's or the graph's internals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pivotbuild.lock import Lock, LockedOut, LockProblem
from pivotbuild.plan import cached_paths

if TYPE_CHECKING:
    from pivotbuild.config import Stage
    from pivotbuild.pipeline import Pipeline
    from pivotbuild.store import Cache
    from pivotbuild.tracked import Record


@dataclass(frozen=True, slots=True)
class OutputRef:
    """A cached output a lock (or a run-cache entry) records."""

    stage: str
    path: str
    hash: str

    @property
    def shown(self) -> str:
        """How a message names it: ``model (train)``; without a stage, ``model``."""
        return f"{self.path} ({self.stage})" if self.stage else self.path


def inner_shown(shown: str, rel: str) -> str:
    """How a message names the file ``rel`` inside a shown output: 'model (train)' and 'w'
    give 'model/w (train)'."""
    path, sep, stage = shown.rpartition(" (") if shown.endswith(")") else (shown, "", "")
    return f"{path}/{rel}{sep}{stage}"


@dataclass(frozen=True, slots=True)
class Scope:
    """What a transfer reads of the project."""

    cache: Cache
    stages: Mapping[str, Stage]  # every stage pivot.toml declares, by name
    read_lock: Callable[[str], Lock | LockProblem | None]
    cached_outs: Callable[[str, Lock], list[LockedOut]]  # the planner's rule

    @classmethod
    def of(cls, pipeline: Pipeline) -> Scope:
        return cls(pipeline.cache, pipeline.project.stages, pipeline.locks.read_lock,
                   pipeline.planner.cached_outs)

    def locks(self, names: Iterable[str], problems: list[str] | None) -> dict[str, Lock]:
        """The valid locks of these stages; the problems of invalid ones go to ``problems``."""
        locks: dict[str, Lock] = {}
        for name in names:
            found = self.read_lock(name)
            if isinstance(found, LockProblem):
                if problems is not None:
                    problems.append(found.message)
            elif found is not None:
                locks[name] = found
        return locks

    def lock_refs(self, locks: Mapping[str, Lock]) -> list[OutputRef]:
        """The outputs of these locks that pivot.toml caches (never the lock's own flag)."""
        return [OutputRef(name, out.path, out.hash)
                for name, lock in locks.items() for out in self.cached_outs(name, lock)]

    def entry_refs(self, stage: str, entry: Mapping[str, Any]) -> list[OutputRef]:
        """The outputs a run-cache entry has in the cache (its ``cache`` flag: stored by that
        run) that pivot.toml caches too; for a stage pivot.toml does not know, the entry's."""
        refs = [OutputRef(stage, out["path"], out["hash"]) for out in entry["outs"]
                if out["cache"]]
        if stage not in self.stages:
            return refs
        cached = cached_paths(self.stages[stage])
        return [ref for ref in refs if ref.path in cached]


def tracked_refs(records: Iterable[Record]) -> list[OutputRef]:
    """The content of tracked paths (always cached), named by path in messages."""
    return [OutputRef("", record.path, record.hash) for record in records]


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


@dataclass(slots=True)
class TransferReport:
    """What one push or fetch did."""

    remote: str
    direction: str  # "push" or "fetch"
    objects: int = 0  # objects sent or received
    bytes: int = 0
    runs: int = 0  # run-cache entries sent or received
    skipped: int = 0  # objects and entries already where they were going
    failed: list[tuple[str, str]] = field(default_factory=list)  # (what, why)

    @property
    def ok(self) -> bool:
        return not self.failed

    def fail(self, what: str, why: str) -> None:
        self.failed.append((what, " ".join(why.split())))

    def summary(self) -> str:
        verb, prep = ("sent", "to") if self.direction == "push" else ("received", "from")
        runs = f", {self.runs} run-cache entr{'y' if self.runs == 1 else 'ies'}" if self.runs \
            else ""
        return (f"{self.direction} {prep} '{self.remote}': {self.objects} object(s) "
                f"({_human(self.bytes)}) {verb}{runs}, {self.skipped} already there, "
                f"{len(self.failed)} failed")

    def to_dict(self) -> dict[str, Any]:
        return {"remote": self.remote, "direction": self.direction, "objects": self.objects,
                "bytes": self.bytes, "runs": self.runs, "skipped": self.skipped,
                "failed": [{"object": w, "error": e} for w, e in self.failed]}
