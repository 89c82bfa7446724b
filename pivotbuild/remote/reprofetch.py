"""What ``repro --pull`` fetches: before planning, what the stages can be restored from
(their locks' objects, and the run-cache entries of the input hashes they will have); while
running, the remote run-cache entry of an input hash the local run cache lacks.

Input hashes come from the planner's decisions (one plan of the selected stages): a stage
whose deps are in the workspace as they will stay has the input hash the planner gives it.
A stage below one that is not up to date gets its input hash from what that upstream will
produce (``plan.stage_input_hash`` over the predicted dep hashes): the locked outputs when the
upstream's lock matches its inputs, else those of the run-cache entry found for it. Those are
read from the (fetched) cache, the workspace is not touched; a dep inside a directory output
is hashed from that output's manifest. A stage whose inputs cannot be known so (below an
upstream that will really run) is left to the planner: RemoteRunCache looks it up once its
input hash is known.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pivotbuild import manifest
from pivotbuild.errors import OperationError
from pivotbuild.names import dir_hash, is_dir_hash
from pivotbuild.paths import is_inside
from pivotbuild.plan import stage_input_hash
from pivotbuild.remote.base import Remote
from pivotbuild.remote.fetcher import Fetcher
from pivotbuild.remote.refs import Scope, TransferReport
from pivotbuild.remote.transfer import default_jobs
from pivotbuild.report import Progress

if TYPE_CHECKING:
    from pivotbuild.pipeline import Pipeline
    from pivotbuild.plan import Decision, Planner


def prefetch_for_repro(pipeline: Pipeline, names: list[str], remote: Remote, jobs: int = 0,
                       run_cache: bool = True, progress: bool | None = None) -> TransferReport:
    """Fetch, before planning, what ``repro`` of ``names`` can restore instead of running:
    first every object the stages' locks reference; then, in topological order, each stage's
    input hash and the run-cache entry for it (local or remote) with the objects it names."""
    from pivotbuild.paths import ensure_state_dir

    jobs = jobs or default_jobs()
    report = TransferReport(remote.name, "fetch")
    scope = Scope.of(pipeline)
    locks = scope.locks(names, None)
    remote.check()
    ensure_state_dir(pipeline.root)
    bar = Progress(f"fetch ← {remote.name}", progress)
    fetcher = Fetcher(scope.cache, remote, jobs, report, bar)
    try:
        fetcher.objects(scope.lock_refs(locks))
        if run_cache:
            _Predictor(scope, fetcher, pipeline.planner).walk(names)
    finally:
        bar.close()
    return report


def bring_run(scope: Scope, fetcher: Fetcher, input_hash: str, stage: str
              ) -> dict[str, Any] | None:
    """The run-cache entry for ``input_hash`` (the local one, else the remote's) with every
    object it names in the local cache; stored locally last. None if that cannot be had.

    Nothing is taken on trust: objects fetched are checked as they arrive, and those
    already in the local cache are checked against their names first (through the memo):
    a corrupt one is removed, and so fetched again."""
    cache = scope.cache
    entry = cache.runs.get(input_hash)
    fetched = entry is None
    if entry is None:
        entry = fetcher.run_entry(input_hash, stage)
        if entry is None:
            return None
    refs = scope.entry_refs(stage, entry)
    for ref in refs:
        cache.objects.check_output(ref.hash, ref.shown)
    complete = fetcher.objects(refs)
    if not all(r.hash in complete for r in refs):
        return None
    if fetched:
        fetcher.store_run(input_hash, entry)
    return entry


class RemoteRunCache:
    """A run-cache miss handler for ``repro --pull``: called by the planner with an input hash
    the local run cache lacks (typically a stage whose upstream just ran), it fetches the
    remote's entry for it and the objects that entry names, so that the planner, looking
    again, finds them locally. Safe to call from the executor's threads (one at a time)."""

    def __init__(self, pipeline: Pipeline, remote: Remote, report: TransferReport,
                 jobs: int = 0,
                 on_failure: Callable[[str, str], None] | None = None) -> None:
        """Failures go into ``report``, and each to ``on_failure`` as it happens."""
        self.scope = Scope.of(pipeline)
        self.remote = remote
        self.report = report
        self.jobs = jobs or default_jobs()
        self.on_failure = on_failure
        self._lock = threading.Lock()

    def __call__(self, input_hash: str, stage: str = "") -> bool:
        """True if an entry for ``input_hash`` and its objects are now in the local cache."""
        with self._lock:
            seen = len(self.report.failed)
            fetcher = Fetcher(self.scope.cache, self.remote, self.jobs, self.report,
                              Progress("", False))
            try:
                found = bring_run(self.scope, fetcher, input_hash, stage or "?") is not None
            except OperationError as exc:  # e.g. the remote went away: the stage just runs
                self.report.fail(f"run-cache entry {input_hash} ({stage or '?'})", str(exc))
                found = False
            if self.on_failure is not None:
                for what, why in self.report.failed[seen:]:
                    self.on_failure(what, why)
            return found


class _Predictor:
    """Works out stages' input hashes in topological order without running anything."""

    def __init__(self, scope: Scope, fetcher: Fetcher, planner: Planner) -> None:
        self.scope = scope
        self.fetcher = fetcher
        self.planner = planner
        self.outs: dict[str, str] = {}  # out path -> the hash it will have after repro
        self.unknown: set[str] = set()  # out paths that only a run can tell
        self.now: dict[str, str | None] = {}  # out path -> its hash in the workspace now

    def walk(self, names: Iterable[str]) -> None:
        decisions = self.planner.plan(list(names))
        for decision in decisions:
            self.now.update((path, d.hash) for path, d in decision.outs.items())
        for decision in decisions:
            if decision.stage.frozen:  # never runs nor restores: its outs stay as they are
                continue
            outs = self._stage(decision)
            for out in decision.stage.outs:
                if outs is not None and out.path in outs:
                    self.outs[out.path] = outs[out.path]
                else:
                    self.unknown.add(out.path)

    def _stage(self, decision: Decision) -> dict[str, str] | None:
        """The hashes the stage's outs will have after repro; None if only a run can tell."""
        input_hash = decision.input_hash
        if input_hash is None:  # below a stage that is not up to date, or a dep missing
            deps: dict[str, str | None] = {}
            for path, digest in decision.deps.items():
                deps[path] = self._dep(path, digest.hash)
                if deps[path] is None:
                    return None
            input_hash = stage_input_hash(decision.stage, deps)
        lock = decision.lock
        if lock is not None and lock.input_hash == input_hash:
            return {o.path: o.hash for o in lock.outs}
        entry = bring_run(self.scope, self.fetcher, input_hash, decision.name)
        return None if entry is None else {o["path"]: o["hash"] for o in entry["outs"]}

    def _dep(self, dep: str, now: str | None) -> str | None:
        """The hash ``dep`` (``now`` in the workspace) will have when its upstream stages are
        done; None: unknown."""
        related = [p for p in (*self.outs, *self.unknown) if is_inside(dep, p) or
                   is_inside(p, dep)]
        if any(p in self.unknown for p in related):
            return None
        if all(self.now.get(p) == self.outs[p] for p in related):
            return now  # the workspace already is what the upstream makes
        if len(related) != 1 or not is_inside(dep, related[0]):
            return None  # a dep holding an upstream output and other files: left to the run
        out = related[0]
        if dep == out:
            return self.outs[out]
        if not is_dir_hash(self.outs[out]):
            return None
        try:
            entries = self.scope.cache.objects.read_manifest(self.outs[out])
        except OperationError:
            return None
        rel = dep[len(out) + 1:]
        inner = []
        for e in entries:
            if e.path == rel:
                digest: str = e.hash
                return digest
            if e.path.startswith(rel + "/"):
                inner.append(manifest.ManifestEntry(e.path[len(rel) + 1:], e.hash, e.size,
                                                    e.executable))
        if not inner:
            return None
        return dir_hash(manifest.build(inner))
