"""checkout: put the cached outputs of the locks and the tracked paths back into the workspace.

Tracked paths (``.pvt`` records, tracked.py) are restored by the same rules as outputs, but
never hardlinked to the cache unless the project allows nothing else (tracked.py says why).

It never loses work: a workspace file whose content differs from its lock is replaced only when
that content is already a sound object in the cache (as after ``git checkout`` of an older lock
or ``.pvt``: the newer version was committed, nothing is lost); otherwise it is left alone and
reported unless ``force``. A file inside an output directory that the lock's manifest does not
list is replaced (removed) only when the whole directory as it stands is a committed version
(its ``.dir`` object and every file in the cache). A missing cache object is reported with a
hint to pull; the rest is still restored. An object whose content does not match its name is
never placed: it is removed from the cache and reported (exit 1). Outputs that pivot.toml does
not cache (``cache = false``, whatever the lock says) are never touched. A second checkout
finds everything in place and does nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pivotbuild import manifest
from pivotbuild.errors import OperationError
from pivotbuild.hasher import PathDigest
from pivotbuild.lock import Lock, LockedOut, LockProblem
from pivotbuild.names import is_dir_hash
from pivotbuild.pipeline import Pipeline
from pivotbuild.store.objects import CorruptObjectsError, MissingObjectsError
from pivotbuild.tracked import checkout_methods

if TYPE_CHECKING:
    from pivotbuild.tracked import Record

REPAIR_HINT = "run 'pivotbuild repro' to make it again, or 'pivotbuild pull'"


@dataclass(slots=True)
class CheckoutReport:
    restored: list[str] = field(default_factory=list)  # outputs (re)placed
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # paths it refused to clobber
    missing: list[tuple[str, str]] = field(default_factory=list)  # (path, object hash)
    corrupt: list[tuple[str, str]] = field(default_factory=list)  # (path, hash): removed
    problems: list[str] = field(default_factory=list)  # invalid locks, unwritable paths,
    # corrupt objects

    @property
    def ok(self) -> bool:
        return not (self.conflicts or self.missing or self.corrupt or self.problems)


class Checkout:
    """Restores the outputs of the selected stages (through store/place.py, whose rules
    decide what may be overwritten: with ``force``, anything in the way)."""

    def __init__(self, pipeline: Pipeline, *, force: bool = False, relink: bool = False) -> None:
        self.p = pipeline
        self.force = force
        self.relink = relink
        self.report = CheckoutReport()

    def run(self, names: list[str], tracked: Sequence[Record] = ()) -> CheckoutReport:
        """Restore the cached outputs of the stages ``names`` and the ``tracked`` paths (their
        ``.pvt`` records' content, by the same rules)."""
        locks: list[Lock] = []
        for name in names:
            found = self.p.planner.read_lock(name)
            if isinstance(found, LockProblem):
                self.report.problems.append(found.message)
            elif found is not None:
                locks.append(found)
        outs = [out for lock in locks for out in self.p.planner.cached_outs(lock.stage, lock)]
        outs += [LockedOut(r.path, r.hash, r.size, nfiles=r.nfiles) for r in tracked]
        by_hand = {r.path for r in tracked}
        self.p.planner.hash_paths(out.path for out in outs)
        for out in outs:
            try:
                self._one(out, self.p.planner.digest(out.path, strict=False),
                          checkout_methods(self.p.project.checkout) if out.path in by_hand
                          else self.p.project.checkout)
            except MissingObjectsError as exc:
                self.report.missing.extend(exc.missing)
            except CorruptObjectsError as exc:
                self.report.corrupt.extend(exc.corrupt)
                self.report.missing.extend(exc.missing)
                self.report.problems.append(f"{exc} ({REPAIR_HINT})")
            except OperationError as exc:
                self.report.problems.append(str(exc))
        return self.report

    def _one(self, out: LockedOut, current: PathDigest, methods: Sequence[str]) -> None:
        overwrite = self.force or self._cached(out, current)
        done = self.p.placer.restore(out.hash, out.path, current, methods,
                                     overwrite=overwrite, relink=self.relink)
        if done.conflicts:
            self.report.conflicts.extend(done.conflicts)
        elif done.placed:
            self.report.restored.append(out.path)
        else:
            self.report.unchanged.append(out.path)

    def _cached(self, out: LockedOut, current: PathDigest) -> bool:
        """True when everything ``restore`` would overwrite or remove at ``out.path`` is already
        a sound object in the cache: replacing it loses nothing (rules at the top)."""
        if current.missing or current.hash is None or current.hash == out.hash:
            return False
        if not current.is_dir:
            return not is_dir_hash(out.hash) and self._sound([(current.hash, out.path)])
        if not is_dir_hash(out.hash) or current.manifest is None:
            return False
        wanted = {e.path: e for e in self.p.placer.objects.read_manifest(out.hash, out.path)}
        have = manifest.parse(current.manifest)
        differing = [e for e in have if e.path not in wanted
                     or (e.hash, e.executable) != (wanted[e.path].hash, wanted[e.path].executable)]
        if any(e.path not in wanted for e in have):  # files the lock does not list
            if not self.p.placer.objects.verify(current.hash):
                return False
            differing = have  # the whole version must be committed
        return self._sound([(e.hash, f"{out.path}/{e.path}") for e in differing])

    def _sound(self, items: list[tuple[str, str]]) -> bool:
        """True if every (hash, shown) object is in the cache and matches its name."""
        objects = self.p.placer.objects
        return all(objects.has(h) for h, _ in items) and not objects.checker.check(items)
