"""gc: delete cache objects and run-cache entries that no current lock references.

"Current locks" are every lock file in the ``.pivotbuild/locks`` of every
project that uses this cache (also those of stages since removed from
pivot.toml, until their lock is deleted). A lock references its outputs'
objects, every file a referenced ``.dir`` manifest lists, and its run-cache
entry (by input hash). Nothing a lock references is ever deleted.

A cache may be shared (``cache_dir``, ``PIVOTBUILD_CACHE_DIR``). The rule that
keeps one project's gc from deleting another's work:
- every project that writes to a cache registers its root in
  ``cache_dir/projects/`` (cache.py), and gc honours the locks of every
  registered project whose root still exists (one that is gone is unregistered);
- an object or run-cache entry changed within the last hour (its ctime: storing
  sets it) is never deleted, since another project may have stored it and not
  yet written the lock that references it;
- an unreadable lock in any of those projects stops gc: it might reference anything.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pivotbuild.atomic import is_temp_name
from pivotbuild.cache import MissingObjectsError
from pivotbuild.errors import OperationError
from pivotbuild.lock import LOCKS_DIR, Lock, read_lock
from pivotbuild.pipeline import Pipeline
from pivotbuild.workspace import STATE_DIR


@dataclass(slots=True)
class GcReport:
    objects: list[str] = field(default_factory=list)  # deleted (or, dry run, to delete)
    runs: list[str] = field(default_factory=list)
    kept_objects: int = 0
    problems: list[str] = field(default_factory=list)


# Objects and entries younger than this are kept whatever the locks say (see above);
# PIVOTBUILD_GC_GRACE_S overrides it (tests use 0).
GRACE_S = 3600.0


def _grace_s() -> float:
    try:
        return float(os.environ.get("PIVOTBUILD_GC_GRACE_S", GRACE_S))
    except ValueError:
        return GRACE_S


def current_locks(pipeline: Pipeline) -> tuple[list[Lock], list[str]]:
    """The locks of this project and of every other project registered in its cache."""
    locks, problems = [], []
    roots = {pipeline.root, *pipeline.cache.registered_projects()}
    for root in sorted(roots):
        directory = root / STATE_DIR / LOCKS_DIR
        for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
            shown = (str(path.relative_to(pipeline.root)) if root == pipeline.root
                     else str(path))
            found = read_lock(path, shown=shown)
            if isinstance(found, Lock):
                locks.append(found)
            elif found is not None:
                problems.append(found.message)
    return locks, problems


def _young(path: Path, now: float, grace: float) -> bool:
    try:
        return now - path.lstat().st_ctime < grace
    except OSError:
        return True  # being replaced right now: certainly not garbage


def gc(pipeline: Pipeline, *, dry_run: bool = False) -> GcReport:
    report = GcReport()
    locks, report.problems = current_locks(pipeline)
    if report.problems:
        # An unreadable lock may reference anything: deleting would risk its outputs.
        raise OperationError(f"{report.problems[0]}; gc refuses to run until it is fixed")
    cache = pipeline.cache
    keep: set[str] = set()
    for lock in locks:
        for out in lock.outs:
            if not out.cache:
                continue
            keep.add(out.hash)
            if out.is_dir and cache.has(out.hash):
                try:
                    keep.update(e.hash for e in cache.read_manifest(out.hash))
                except MissingObjectsError:
                    pass
    now, grace = time.time(), _grace_s()
    for name in list(cache.iter_objects()):
        if name in keep or _young(cache.object_path(name), now, grace):
            report.kept_objects += 1
            continue
        report.objects.append(name)
    keep_runs = {lock.input_hash for lock in locks}
    report.runs = [h for h in cache.iter_runs()
                   if h not in keep_runs and not _young(cache.run_path(h), now, grace)]
    if not dry_run:
        # Directory objects first: a .dir object must never outlive the files it lists.
        for name in sorted(report.objects, key=lambda n: not n.endswith(".dir")):
            cache.remove(name)
        for input_hash in report.runs:
            cache.remove_run(input_hash)
        cache.remove_stale_temps()
        _remove_stale_staging(pipeline.project.state_dir / "tmp")
    return report


def _remove_stale_staging(staging: Path, older_than_s: float = 24 * 3600) -> None:
    """Temps a killed process left in the workspace staging directory."""
    if not staging.is_dir():
        return
    cutoff = time.time() - older_than_s
    for entry in staging.iterdir():
        try:
            if is_temp_name(entry.name) and entry.lstat().st_mtime < cutoff:
                entry.unlink()
        except OSError:
            pass
