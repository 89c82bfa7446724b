"""gc: delete cache objects and run-cache entries that no current lock references.

"Current locks" are every lock file in this project's ``.pivotbuild/locks``
(also those of stages since removed from pivot.toml, until their lock is
deleted). A lock references its outputs' objects, every file a referenced
``.dir`` manifest lists, and its run-cache entry (by input hash). Nothing a
lock references is ever deleted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from pivotbuild.atomic import is_temp_name
from pivotbuild.cache import MissingObjectsError
from pivotbuild.errors import OperationError
from pivotbuild.lock import LOCKS_DIR, Lock, read_lock
from pivotbuild.pipeline import Pipeline


@dataclass(slots=True)
class GcReport:
    objects: list[str] = field(default_factory=list)  # deleted (or, dry run, to delete)
    runs: list[str] = field(default_factory=list)
    kept_objects: int = 0
    problems: list[str] = field(default_factory=list)


def current_locks(pipeline: Pipeline) -> tuple[list[Lock], list[str]]:
    locks, problems = [], []
    directory = pipeline.project.state_dir / LOCKS_DIR
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        found = read_lock(path, shown=str(path.relative_to(pipeline.root)))
        if isinstance(found, Lock):
            locks.append(found)
        elif found is not None:
            problems.append(found.message)
    return locks, problems


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
    for name in list(cache.iter_objects()):
        if name in keep:
            report.kept_objects += 1
            continue
        report.objects.append(name)
    keep_runs = {lock.input_hash for lock in locks}
    report.runs = [h for h in cache.iter_runs() if h not in keep_runs]
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
