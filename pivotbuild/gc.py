"""gc: delete cache objects and run-cache entries that no current lock or record references.

"Current locks" are every lock file in the ``.pivotbuild/locks`` of every
project that uses this cache (also those of stages since removed from
pivot.toml, until their lock is deleted). A lock references its outputs'
objects, every file a referenced ``.dir`` manifest lists, and its run-cache
entry (by input hash). Nothing a lock references is ever deleted. Likewise the
``.pvt`` records (tracked.py) of every such project: their objects are kept.

``gc --rev REV…`` / ``--all-commits`` also keep what the locks and records of those git
revisions reference, read from git (gitrev.py: for a revision one ``ls-tree`` and one
``cat-file --batch``; for every commit one ``git log`` listing each version of each lock and
record, then one ``cat-file --batch``), nothing checked out. Every output hash an old lock
names is kept, whatever its ``cache`` flag then; a ``.dir`` object kept that way keeps the
files its manifest lists (when the cache has it); a lock's input hash keeps its run-cache
entry. A lock or record of the history that is not JSON stops gc, as an unreadable current
lock does.

A cache may be shared (``cache_dir``, ``PIVOTBUILD_CACHE_DIR``). The rule that
keeps one project's gc from deleting another's work:
- every project that writes to a cache registers its root in
  ``cache_dir/projects/`` (store/registry.py), and gc honours the locks of every
  registered project whose root still exists (one that is gone is unregistered);
- an object or run-cache entry changed within the grace period (its ctime:
  storing sets it) is never deleted, since another project may have stored it
  and not yet written the lock that references it. The period is ``gc --grace
  SECONDS``, else ``PIVOTBUILD_GC_GRACE_S``, else an hour; gc counts what it kept
  for that reason, so that the user learns why garbage stayed;
- an unreadable lock in any of those projects stops gc: it might reference anything.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pivotbuild import tracked
from pivotbuild.atomic import is_temp_name
from pivotbuild.errors import OperationError, PivotError, UsageError
from pivotbuild.lock import Lock, read_lock
from pivotbuild.names import is_dir_hash, is_hash
from pivotbuild.paths import GIT_DIR, LOCKS_DIR, STATE_DIR
from pivotbuild.pipeline import Pipeline
from pivotbuild.store.objects import MissingObjectsError
from pivotbuild.store.place import STAGING_DIR
from pivotbuild.tracked import Record


@dataclass(slots=True)
class GcReport:
    objects: list[str] = field(default_factory=list)  # deleted (or, dry run, to delete)
    runs: list[str] = field(default_factory=list)
    kept_objects: int = 0  # referenced by a lock
    young_objects: int = 0  # unreferenced, but changed within the grace period
    young_runs: int = 0  # run-cache entries likewise
    grace_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    history_files: int = 0  # distinct lock and record versions read from git


# Objects and entries younger than this are kept whatever the locks say (see above).
GRACE_S = 3600.0
GRACE_ENV = "PIVOTBUILD_GC_GRACE_S"


def grace_seconds(flag: float | None) -> float:
    """The grace period: ``--grace`` if given, else the environment's, else GRACE_S."""
    if flag is not None:
        if math.isnan(flag):
            raise UsageError("--grace: expected a number of seconds, 0 or more")
        return flag
    raw = os.environ.get(GRACE_ENV, "").strip()
    if not raw:
        return GRACE_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{GRACE_ENV}={raw!r}: expected a number of seconds, 0 or more")
    return value


def current_locks(pipeline: Pipeline) -> tuple[list[Lock], list[str]]:
    """The locks of this project and of every other project registered in its cache."""
    locks, problems = [], []
    roots = {pipeline.root, *pipeline.cache.projects.projects()}
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


def current_records(pipeline: Pipeline) -> list[Record]:
    """The ``.pvt`` records of this project and of every other project registered in its
    cache; an invalid one stops gc (it might reference anything)."""
    records = []
    roots = {pipeline.root, *pipeline.cache.projects.projects()}
    for root in sorted(roots):
        try:
            if root == pipeline.root:
                records += tracked.project_records(pipeline.project)
            else:
                records += tracked.read_records(root)
        except PivotError as exc:
            where = "" if root == pipeline.root else f" (in the project at {root})"
            raise OperationError(f"{exc}{where}; gc refuses to run until it is fixed") from None
    return records


LOCK_PATTERN = f"{STATE_DIR}/{LOCKS_DIR}/*.json"
RECORD_PATTERN = f"*{tracked.SUFFIX}"


def revision_refs(root: Path, revs: Sequence[str], all_commits: bool
                  ) -> tuple[set[str], set[str], int]:
    """(object hashes, input hashes, files read) that the locks and records of the git
    revisions ``revs`` (and with ``all_commits`` of every commit) reference."""
    from pivotbuild import gitrev

    why = (("gc --all-commits" if all_commits else "gc --rev") + " cannot keep what its "
           "commits reference (drop the option, or run gc inside the git work tree)")
    gitrev.repository(root, why)  # outside a work tree: one clear line, before anything
    blobs: dict[str, tuple[str, str]] = {}  # blob id -> (path in the project, where found)
    if all_commits:
        for path, oid in gitrev.history_blobs(root, [LOCK_PATTERN, RECORD_PATTERN], why):
            if _lock_or_record(path):
                blobs.setdefault(oid, (path, f"{path} in the git history"))
    for rev in revs:
        revision = gitrev.open_revision(root, rev)
        locks = [e for e in revision.list_dir(f"{STATE_DIR}/{LOCKS_DIR}")
                 if e.kind == "blob" and not e.is_symlink]
        records = [e for e in revision.entries() if _lock_or_record(e.path)
                   and e.path.endswith(tracked.SUFFIX) and not e.is_symlink]
        for entry in (*locks, *records):
            if _lock_or_record(entry.path):
                blobs.setdefault(entry.oid, (entry.path, f"{entry.path} at {revision.label}"))
    if not blobs:
        return set(), set(), 0
    contents = gitrev.read_blobs(root, blobs, why)
    objects: set[str] = set()
    inputs: set[str] = set()
    for oid, (path, where) in blobs.items():
        data = contents.get(oid)
        try:
            doc = json.loads(data or b"")
        except (ValueError, RecursionError):
            doc = None
        if not isinstance(doc, dict):
            raise OperationError(f"{where} (git blob {oid[:12]}): not valid JSON, so it might "
                                 "reference anything; gc refuses to run")
        if path.endswith(tracked.SUFFIX):
            if is_hash(doc.get("hash")):
                objects.add(doc["hash"])
            continue
        outs = doc.get("outs")
        for out in outs if isinstance(outs, list) else []:
            if isinstance(out, dict) and is_hash(out.get("hash")):
                objects.add(out["hash"])
        if is_hash(doc.get("input_hash"), directory=False):
            inputs.add(doc["input_hash"])
    return objects, inputs, len(blobs)


def _lock_or_record(path: str) -> bool:
    """A lock (directly in .pivotbuild/locks) or a record outside .pivotbuild and .git."""
    parts = path.split("/")
    if path.endswith(".json") and len(parts) == 3 and parts[:2] == [STATE_DIR, LOCKS_DIR]:
        return True
    return (path.endswith(tracked.SUFFIX) and STATE_DIR not in parts and GIT_DIR not in parts
            and len(parts[-1]) > len(tracked.SUFFIX))


def _young(path: Path, now: float, grace: float) -> bool | None:
    """Changed within the grace period? None if it is gone (or being replaced right now:
    certainly not garbage either way)."""
    try:
        return now - path.lstat().st_ctime < grace
    except OSError:
        return None


def gc(pipeline: Pipeline, *, dry_run: bool = False, grace_s: float | None = None,
       revs: Sequence[str] = (), all_commits: bool = False) -> GcReport:
    """Delete (``dry_run``: list) what no lock or record references and is older than the
    grace period (``grace_s``; None: grace_seconds(None)). ``revs`` / ``all_commits``: also
    keep what those git revisions' locks and records reference."""
    report = GcReport(grace_s=grace_seconds(grace_s))
    locks, report.problems = current_locks(pipeline)
    if report.problems:
        # An unreadable lock may reference anything: deleting would risk its outputs.
        raise OperationError(f"{report.problems[0]}; gc refuses to run until it is fixed")
    records = current_records(pipeline)
    old_objects, old_inputs, report.history_files = (
        revision_refs(pipeline.root, revs, all_commits) if revs or all_commits
        else (set(), set(), 0))
    objects, runs = pipeline.cache.objects, pipeline.cache.runs
    referenced = {out.hash for lock in locks for out in lock.outs if out.cache}
    referenced.update(record.hash for record in records)
    referenced.update(old_objects)
    keep: set[str] = set()
    for digest in referenced:
        keep.add(digest)
        if is_dir_hash(digest) and objects.has(digest):
            try:
                keep.update(e.hash for e in objects.read_manifest(digest))
            except MissingObjectsError:
                pass
    now, grace = time.time(), report.grace_s
    names = list(objects.iter_objects())
    young = {name: _young(objects.object_path(name), now, grace)
             for name in names if name not in keep}
    # A young manifest is kept, so are the files it lists, however old: a .dir object never
    # outlives its files (the project that stored it may be about to write its lock).
    listed: set[str] = set()
    for name in names:
        if is_dir_hash(name) and young.get(name):
            try:
                listed.update(e.hash for e in objects.read_manifest(name))
            except (MissingObjectsError, OperationError, ValueError):
                pass
    for name in names:
        if name in keep:
            report.kept_objects += 1
        elif young[name] or name in listed:
            report.young_objects += 1
        elif young[name] is not None:
            report.objects.append(name)
    keep_runs = {lock.input_hash for lock in locks} | old_inputs
    for input_hash in runs:
        young_run = (None if input_hash in keep_runs
                     else _young(runs.path(input_hash), now, grace))
        if young_run:
            report.young_runs += 1
        elif young_run is not None:
            report.runs.append(input_hash)
    if not dry_run:
        # Directory objects first: a .dir object must never outlive the files it lists.
        for name in sorted(report.objects, key=lambda n: not is_dir_hash(n)):
            objects.remove(name)
        for input_hash in report.runs:
            runs.remove(input_hash)
        objects.remove_stale_temps()
        runs.remove_stale_temps()
        _remove_stale_staging(pipeline.project.state_dir / STAGING_DIR)
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
