"""checkout: put the cached outputs recorded in the locks back into the workspace.

It never clobbers: a workspace file whose content differs from its lock, or an
untracked file inside an output directory, is left alone and reported unless
``force``. A missing cache object is reported with a hint to pull; the rest is
still restored. An object whose content does not match its name is never placed:
it is removed from the cache and reported (exit 1). Outputs that pivot.toml does
not cache (``cache = false``, whatever the lock says) are never touched. A second
checkout finds everything in place and does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pivotbuild import manifest, paths
from pivotbuild.cache import CorruptObjectsError, MissingObjectsError
from pivotbuild.errors import OperationError
from pivotbuild.lock import Lock, LockedOut, LockProblem
from pivotbuild.pipeline import Pipeline
from pivotbuild.hasher import PathDigest


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
    """Restores the outputs of the selected stages."""

    def __init__(self, pipeline: Pipeline, *, force: bool = False, relink: bool = False) -> None:
        self.p = pipeline
        self.force = force
        self.relink = relink
        self.report = CheckoutReport()

    def run(self, names: list[str]) -> CheckoutReport:
        locks: list[Lock] = []
        for name in names:
            found = self.p.planner.read_lock(name)
            if isinstance(found, LockProblem):
                self.report.problems.append(found.message)
            elif found is not None:
                locks.append(found)
        outs = [out for lock in locks for out in self.p.planner.cached_outs(lock.stage, lock)]
        self.p.planner.hash_paths(out.path for out in outs)
        for out in outs:
            try:
                self._one(out, self.p.planner.digest(out.path, strict=False))
            except MissingObjectsError as exc:
                self.report.missing.extend(exc.missing)
            except CorruptObjectsError as exc:
                self.report.corrupt.extend(exc.corrupt)
                self.report.missing.extend(exc.missing)
                self.report.problems.append(f"{exc} ({REPAIR_HINT})")
            except OperationError as exc:
                self.report.problems.append(str(exc))
        return self.report

    def _one(self, out: LockedOut, current: PathDigest) -> None:
        if current.hash == out.hash and not self.relink:
            self.report.unchanged.append(out.path)
            return
        dest = self.p.root / out.path
        if current.hash is None and not current.missing:
            # Something unhashable is there (a link out of the project, say).
            if not self.force:
                self.report.conflicts.append(out.path)
                return
            paths.remove(self.p.root, out.path)
        methods = self.p.project.checkout
        if not out.is_dir:
            if current.hash is not None and current.hash != out.hash and not self.force:
                self.report.conflicts.append(out.path)
                return
            if current.is_dir:
                if not self.force:
                    self.report.conflicts.append(out.path)
                    return
                paths.remove(self.p.root, out.path)
            self.p.cache.link_out(out.hash, dest, methods, self.p.root, shown=out.path)
            self.report.restored.append(out.path)
            return
        wanted = self.p.cache.dir_entries(out.hash, out.path)
        only = None
        if current.hash is not None and current.is_dir and current.manifest is not None:
            only = self._dir_changes(out.path, wanted, manifest.parse(current.manifest))
            if only is None:
                return  # refused: conflicts recorded
        elif current.hash is not None and not self.force:
            self.report.conflicts.append(out.path)  # a file where a directory belongs
            return
        elif current.hash is not None:
            paths.remove(self.p.root, out.path)
        if self.relink:
            only = None
        self.p.cache.checkout_dir(out.hash, dest, methods, self.p.root, only=only,
                                  shown=out.path)
        self.report.restored.append(out.path)

    def _dir_changes(self, path: str, wanted: list[manifest.ManifestEntry],
                     have: list[manifest.ManifestEntry]) -> list[str] | None:
        """The files of a directory output to (re)place, or None if that would clobber."""
        want = {e.path: e for e in wanted}
        got = {e.path: e for e in have}
        modified = [p for p, e in got.items()
                    if p in want and (e.hash, e.executable) != (want[p].hash, want[p].executable)]
        untracked = [p for p in got if p not in want]
        if (modified or untracked) and not self.force:
            self.report.conflicts.extend(f"{path}/{p}" for p in sorted(modified + untracked))
            return None
        for rel in untracked:  # only with force
            paths.remove(self.p.root, f"{path}/{rel}")
        return [p for p in want if p not in got or p in modified]

