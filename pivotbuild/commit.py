"""The one commit writer: a stage's deps and outputs hashed from the workspace,
cached outputs stored, the lock written last, the run-cache entry recorded.

``repro`` (after a run, or a run-cache restore) and ``commit`` (the command)
both come here; nothing else derives lock contents. Per stage it is all or
nothing: every cached output is in the cache before the lock is written, and
the lock and cache objects are written atomically, so a crash leaves the old
lock or the new one, never a lock naming an object the cache lacks.

The committer is given the hasher, the cache and the lock store (plan.LockStore) it
writes through, so it can be exercised in memory (tests/test_commit.py).

Discovered deps (a stage with a ``depfile`` or ``discover``: discovery.py) are hashed in the
same batch as the declared deps and outputs, and recorded in the lock's ``discovered`` and the
run-cache entry. One that does not exist after a run (a depfile's prerequisite a ``-MG``
compile did not find) is recorded with a null hash, never an error, and that run is not put in
the run cache (its entries name real hashes): the stage stays stale until the file exists;
`commit`, told the stage is up to date, drops the missing ones instead. Which paths:
after a run, those the run discovered (given by the executor); after a run-cache restore,
those of the entry's run; for `commit` (nothing ran), the lock's discovered list plus a
depfile present on disk (discovery.recorded), every one hashed again as it is now.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pivotbuild import manifest
from pivotbuild.config_models import Project, Stage
from pivotbuild.discovery import discovers, recorded, undeclared
from pivotbuild.errors import OperationError
from pivotbuild.hasher import PathDigest
from pivotbuild.lock import MISSING_HASH, Lock, LockedDep, LockedOut
from pivotbuild.plan import LockStore, PathHasher, stage_input_hash
from pivotbuild.store import Cache
from pivotbuild.store.objects import CorruptObjectsError
from pivotbuild.store.place import Placer


class MissingPathsError(OperationError):
    """A stage cannot be committed because some of its deps or outputs are missing."""

    def __init__(self, stage: str, paths: list[str]) -> None:
        self.stage = stage
        self.paths = paths
        listed = ", ".join(repr(p) for p in paths)
        super().__init__(f"missing {listed}; nothing committed for it")  # the caller names
        # the stage: "stage 'x' failed: ..." (repro), "stage 'x': ..." (commit)


@dataclass(slots=True)
class Snapshot:
    """A stage's deps and outputs as they are on disk now, and its input hash."""

    stage: Stage
    deps: dict[str, PathDigest]
    outs: dict[str, PathDigest]
    input_hash: str
    discovered: dict[str, PathDigest] | None = None  # None: the stage discovers nothing

    def lock(self) -> Lock:
        stage = self.stage
        found = None if self.discovered is None else [
            LockedDep(path, MISSING_HASH, 0) if d.missing
            else LockedDep(path, d.hash or "", d.size, d.nfiles)
            for path, d in sorted(self.discovered.items())]
        return Lock(
            stage=stage.name,
            cmd=list(stage.cmd),
            deps=[
                LockedDep(path, d.hash or "", d.size, d.nfiles)
                for path, d in sorted(self.deps.items())
            ],
            outs=[
                LockedOut(out.path, self.outs[out.path].hash or "", self.outs[out.path].size,
                          out.cache, out.persist, self.outs[out.path].nfiles)
                for out in sorted(stage.outs, key=lambda o: o.path)
            ],
            params=dict(stage.param_values),
            input_hash=self.input_hash,
            discovered=found,
        )


@dataclass(slots=True)
class CommitResult:
    lock: Lock
    written: bool  # False: the lock already held these bytes and was left alone


class Committer:
    """Writes what a stage produced into the cache, the lock and the run cache."""

    def __init__(self, project: Project, hasher: PathHasher, cache: Cache, locks: LockStore,
                 placer: Placer) -> None:
        """``placer``: links workspace files back to objects that were in the cache already
        (see _link_back)."""
        self.project = project
        self.hasher = hasher
        self.cache = cache
        self.locks = locks
        self.placer = placer
        self._links_work = True
        self._registered = False
        methods = project.checkout
        self._prefers_hardlinks = "hardlink" in methods and (
            "copy" not in methods or methods.index("hardlink") < methods.index("copy"))

    def _hash(self, name: str, paths: list[str]) -> dict[str, PathDigest]:
        root = self.project.root
        digests = self.hasher.hash_paths([str(root / p) for p in paths])
        out = {}
        for path, digest in zip(paths, digests, strict=True):
            if digest.hash is None and not digest.missing:
                raise OperationError(digest.problem(str(root)))  # the caller names the stage
            digest.path = path
            out[path] = digest
        return out

    def snapshot(self, stage: Stage, discovered: Sequence[str] | None = None) -> Snapshot:
        """Hash the stage's deps and outputs (and discovered deps: ``discovered``, or for a
        stage that discovers, None: discovery.recorded) from disk in one batch; raise if a
        dep or output is missing."""
        extra: list[str] = []
        ran = discovered is not None  # a run's (or run-cache entry's) list, not `commit`'s
        if discovers(stage):
            if discovered is None:
                lock = self.locks.read_lock(stage.name)
                discovered = recorded(stage, lock if isinstance(lock, Lock) else None,
                                      self.project.root)
            extra = undeclared(dict.fromkeys(discovered), stage)
        declared = [*stage.deps, *(o.path for o in stage.outs)]
        digests = self._hash(stage.name, [*declared, *extra])
        missing = [path for path in declared if digests[path].missing]
        if missing:
            raise MissingPathsError(stage.name, missing)
        deps = {p: digests[p] for p in stage.deps}
        outs = {o.path: digests[o.path] for o in stage.outs}
        input_hash = stage_input_hash(stage, {p: d.hash for p, d in deps.items()})
        # After a run a missing one is recorded too (hash null, lock.py): the stage stays stale
        # until it exists, as Ninja treats a depfile's missing prerequisite. `commit` (nothing
        # ran) is told the stage is up to date: it drops the missing ones.
        found = {p: digests[p] for p in extra if ran or not digests[p].missing} \
            if discovers(stage) else None
        return Snapshot(stage, deps, outs, input_hash, found)

    def commit(self, stage: Stage, snapshot: Snapshot | None = None,
               discovered: Sequence[str] | None = None) -> CommitResult:
        """Store cached outputs, then write the lock, then the run-cache entry.
        ``discovered``: as for snapshot (when no ``snapshot`` is given)."""
        snap = snapshot or self.snapshot(stage, discovered)
        root = self.project.root
        if not self._registered:
            self.cache.projects.register(root)  # so that gc from a sharing project keeps ours
            self._registered = True
        relink: list[tuple[str, str]] = []  # (output, file) whose object already existed
        for out in stage.outs:
            digest = snap.outs[out.path]
            if not out.cache or digest.hash is None:
                continue
            if (digest.is_dir and self.cache.objects.has(digest.hash)
                    and not self.cache.objects.check_output(digest.hash, out.path)):
                continue  # its .dir object exists, hence every file it lists, all sound
                # (a corrupt one was removed with the .dir object: both stored again below)
            # Where hardlinks are the preferred checkout, the output itself becomes the
            # cache object (no copy, no extra space); persist outputs stay private.
            link = self._prefers_hardlinks and not out.persist
            existing: list[str] = []
            # An object already there is checked against its name (and replaced if corrupt):
            # the lock written below must never name a bad object.
            if digest.is_dir:
                self.cache.objects.store_dir(root / out.path, digest, link=link,
                                             existing=existing, shown=out.path)
            else:
                self.cache.objects.store_file(root / out.path, digest.hash, link=link,
                                              existing=existing, shown=out.path)
            if not out.persist:
                relink.extend((out.path, path) for path in existing)
        self._link_back(stage, snap, relink)
        lock = snap.lock()
        written = self.locks.write_lock(lock)
        if not stage.always_changed and not any(o.persist for o in stage.outs) and not any(
                d.missing for d in lock.discovered or ()):  # run-cache entries name real hashes
            found = None if lock.discovered is None else [d.to_dict() for d in lock.discovered]
            self.cache.runs.put(lock.input_hash, [o.to_dict() for o in lock.outs], found)
        return CommitResult(lock, written)

    def _link_back(self, stage: Stage, snap: Snapshot, files: list[tuple[str, str]]) -> None:
        """Replace workspace files whose object was already in the cache by reflinks or
        hardlinks to it (the project's checkout preference), so that an output is not kept
        on disk twice. (Files stored by hardlink already are their object.) Where no
        link works, the workspace copies are simply kept, and so are symlinks: what the
        stage made a link stays one."""
        methods = [m for m in self.project.checkout if m != "copy"]
        if not methods or not self._links_work or not files:
            return
        root = self.project.root
        manifests: dict[str, dict[str, str]] = {}
        for out_path, path in files:
            if os.path.islink(path):
                continue
            digest = snap.outs[out_path]
            rel = os.path.relpath(path, root / out_path)
            try:
                if digest.is_dir:
                    if out_path not in manifests:
                        manifests[out_path] = {
                            e.path: e.hash for e in manifest.parse(digest.manifest or b"")}
                    file_hash = manifests[out_path][rel.replace(os.sep, "/")]
                else:
                    file_hash = digest.hash or ""
                self.placer.link_file(file_hash, Path(path), methods)
            except CorruptObjectsError:
                # Found corrupt (and removed) after it was checked moments ago: store it again
                # from this very file, which was hashed with that content.
                self.cache.objects.store_file(Path(path), file_hash,
                                              shown=os.path.relpath(path, root))
            except OperationError:
                self._links_work = False  # e.g. the cache is on another file system
                return
