"""verify: a CI gate. Passes only when every selected stage is up to date and
every cached output its lock names is in the cache (with ``--cache``, also
unaltered: each object is hashed again and must match its name). Which outputs
are cached is read from pivot.toml, not from the lock: an output made cached
since its lock was written must be stored (``commit``) before verify passes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pivotbuild.errors import OperationError
from pivotbuild.lock import Lock, LockedOut
from pivotbuild.pipeline import Pipeline
from pivotbuild.plan import STALE
from pivotbuild.store.objects import MissingObjectsError

if TYPE_CHECKING:
    from pivotbuild.tracked import Record


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # stale | invalid-lock | missing-object | corrupt-object | tracked-changed | missing
    stage: str | None  # None: a tracked path's problem
    message: str
    path: str | None = None
    hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("kind", self.kind), ("stage", self.stage),
                                  ("path", self.path), ("hash", self.hash),
                                  ("message", self.message)) if v is not None}


@dataclass(slots=True)
class VerifyReport:
    problems: list[Problem] = field(default_factory=list)
    checked_objects: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(pipeline: Pipeline, names: list[str], *, rehash: bool = False,
           tracked: Sequence[Record] = ()) -> VerifyReport:
    """Check the stages ``names`` and the ``tracked`` paths: each must be as its record says
    in the workspace, and its objects in the cache."""
    report = VerifyReport()
    _check_tracked(pipeline, tracked, rehash, report)
    for decision in pipeline.status(names):
        if decision.lock_problem:
            report.problems.append(Problem("invalid-lock", decision.name, decision.lock_problem))
        elif decision.status == STALE:
            why = "; ".join(str(r) for r in decision.reasons)
            report.problems.append(Problem("stale", decision.name,
                                           f"stage '{decision.name}' is stale: {why}"))
        if decision.lock is not None:
            _check_objects(pipeline, decision.lock, rehash, report)
    return report


def _check_tracked(pipeline: Pipeline, records: Sequence[Record], rehash: bool,
                   report: VerifyReport) -> None:
    from pivotbuild import tracked

    for record, state in tracked.statuses(pipeline.root, records, pipeline.hasher):
        if state != tracked.UP_TO_DATE:
            what = "is missing" if state == tracked.MISSING else "differs from its record"
            report.problems.append(Problem(
                state, None, f"{record.path}: {what} ({record.file}; 'pivotbuild checkout "
                f"{record.path}' restores it, 'pivotbuild track {record.path}' records it)",
                record.path, record.hash))
    outs = [LockedOut(r.path, r.hash, r.size, nfiles=r.nfiles) for r in records]
    _check_outs(pipeline, None, outs, rehash, report)


def _check_objects(pipeline: Pipeline, lock: Lock, rehash: bool, report: VerifyReport) -> None:
    _check_outs(pipeline, lock.stage, pipeline.planner.cached_outs(lock.stage, lock), rehash,
                report)


def _check_outs(pipeline: Pipeline, stage: str | None, outs: Sequence[LockedOut], rehash: bool,
                report: VerifyReport) -> None:
    """Every object of these outputs (of ``stage``; None: tracked paths) is in the cache."""
    objects = pipeline.cache.objects
    for out in outs:
        # An output the lock records as not cached was never stored: committing stores it.
        hint = ("run 'pivotbuild pull' or 'pivotbuild repro'" if stage is None or out.cache
                else f"it is cached since its lock was written: run 'pivotbuild commit "
                f"{stage}'")
        found = [(out.path, out.hash)]
        if out.is_dir and objects.has(out.hash):
            try:
                found += [(f"{out.path}/{e.path}", e.hash)
                          for e in objects.read_manifest(out.hash)]
            except (MissingObjectsError, OperationError) as exc:
                report.problems.append(Problem("corrupt-object", stage, str(exc),
                                               out.path, out.hash))
                continue
        for path, digest in found:
            if not objects.has(digest):
                report.problems.append(Problem(
                    "missing-object", stage,
                    f"{path}: cache object {digest} is missing ({hint})", path, digest))
            elif rehash:
                report.checked_objects += 1
                if not objects.verify(digest):
                    report.problems.append(Problem(
                        "corrupt-object", stage,
                        f"{path}: cache object {digest} is corrupted (its content no longer "
                        f"matches its name)", path, digest))
