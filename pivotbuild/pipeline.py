"""One opened project and the verbs on it: status, repro, commit.

Phases are named in code (collect → select → plan → execute → commit): the CLI
calls one method here and renders what it returns. This is where the pieces are
wired: the planner, the executor and the commit writer get the hasher, the locks
(``LockFiles``), the cache, the run cache and the runner they work with.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pivotbuild import dag
from pivotbuild import lock as lockfile
from pivotbuild.commit import Committer, MissingPathsError
from pivotbuild.config_models import Project
from pivotbuild.errors import OperationError
from pivotbuild.hasher import Hasher, PathDigest
from pivotbuild.lock import Lock, LockProblem
from pivotbuild.plan import FROZEN, NOT_RUN, SKIP, STALE, Decision, Planner, RunCacheLookup
from pivotbuild.projectcache import load_project
from pivotbuild.state import StateDB
from pivotbuild.store import Cache
from pivotbuild.store.place import STAGING_DIR, Placer

if TYPE_CHECKING:  # execute.py (subprocess, threads) is only loaded when something runs
    from pivotbuild.execute import RunOptions, StageResult
    from pivotbuild.report import Reporter
    from pivotbuild.runners import StageRunner

#: ``repro --pull``'s remote run cache: (input hash, stage) → True once the remote's entry
#: for that input hash and the objects it names are in the local cache.
RunCacheMiss = Callable[[str, str], bool]


@dataclass(slots=True)
class CommitOutcome:
    """What `commit` did (SPEC §5 `commit --json`)."""

    committed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (stage, error)
    unchanged: list[str] = field(default_factory=list)
    plan: list[Decision] = field(default_factory=list)


class LockFiles:
    """The lock store on disk: one ``.pivotbuild/locks/<stage>.json`` per stage (lock.py)."""

    def __init__(self, project: Project) -> None:
        self.root = project.root
        self.state_dir = project.state_dir

    def read_lock(self, name: str) -> Lock | LockProblem | None:
        path = lockfile.lock_path(self.state_dir, name)
        return lockfile.read_lock(path, name, shown=str(path.relative_to(self.root)))

    def write_lock(self, lock: Lock) -> bool:
        return lockfile.write_lock(lockfile.lock_path(self.state_dir, lock.stage), lock)


class Pipeline:
    """A project loaded, its graph built, its memo, cache, locks and planner ready.

    ``ahead``: digests hashed ahead of time (prefetch.Prefetch.take), each used at most once
    by the planners' hasher."""

    def __init__(self, root: Path, hash_jobs: int = 0,
                 ahead: Callable[[str], PathDigest | None] | None = None, *,
                 overrides: Mapping[str, str] | None = None) -> None:
        from pivotbuild import snapshot

        # Before pivot.toml and the locks are read: what a no-op snapshot is valid for.
        self._snapshot_key = snapshot.key_before(os.path.realpath(root))
        # --set values: the project differs from what pivot.toml says, so no snapshot is
        # ever saved from it (the fast path does not answer such a command line either).
        self.overrides = dict(overrides or {})
        self.project: Project = load_project(root, self.overrides)
        self.root = self.project.root
        self.graph = dag.build_graph(self.project)
        self.state = StateDB(self.project.state_dir / "state.db")
        self.hasher = Hasher(self.root, self.state, hash_jobs)
        self._planning_hasher = Hasher(self.root, self.state, hash_jobs, ahead=ahead)
        self.cache = Cache(self.project.cache_dir, memo=self.state)
        self.placer = Placer(self.cache.objects, self.root, self.project.state_dir / STAGING_DIR)
        self.locks = LockFiles(self.project)
        self.planner = self.make_planner()
        self.committer = Committer(self.project, self.hasher, self.cache, self.locks, self.placer)

    def make_planner(self, use_run_cache: bool = True, run_cache_miss: RunCacheMiss | None = None
                     ) -> Planner:
        """A planner over this project; ``run_cache_miss``: asked on a local run-cache miss
        (or an entry whose objects the cache lacks), then the local run cache is read again."""
        lookup = self._run_cache_lookup(run_cache_miss) if use_run_cache else None
        return Planner(self.project, self.graph, self._planning_hasher, self.locks,
                       self.cache.objects, lookup)

    def _run_cache_lookup(self, miss: RunCacheMiss | None) -> RunCacheLookup:
        cache = self.cache

        def local(input_hash: str, stage: str) -> dict[str, Any] | None:
            return cache.runs.get(input_hash)

        if miss is None:
            return local

        def complete(entry: dict[str, Any]) -> bool:
            return all(cache.objects.has(out["hash"]) for out in entry.get("outs", [])
                       if isinstance(out, dict) and out.get("cache", True))

        def with_remote(input_hash: str, stage: str) -> dict[str, Any] | None:
            entry = cache.runs.get(input_hash)
            if (entry is None or not complete(entry)) and miss(input_hash, stage):
                entry = cache.runs.get(input_hash)
            return entry

        return with_remote

    def close(self) -> None:
        self.state.close()

    # ---- collect and select -------------------------------------------------------

    def stage_names(self, name: str) -> list[str]:
        """The stages a stage name or a matrix base name names; UsageError for any other."""
        return dag.stage_names(self.graph, name)

    def select(self, targets: list[str], *, single_item: bool = False,
               downstream: bool = False) -> list[str]:
        return dag.select(self.graph, [dag.target_from_cwd(self.graph, str(self.root), t)
                                       for t in targets],
                          single_item=single_item, downstream=downstream)

    def orphaned_locks(self) -> list[str]:
        """The stages that have a lock but are no longer in pivot.toml (a glob instance whose
        file is gone, a renamed or removed stage), sorted. gc still keeps what such a lock
        references until the lock file is deleted."""
        directory = lockfile.lock_path(self.project.state_dir, "-").parent
        if not directory.is_dir():
            return []
        return sorted(path.name[:-len(".json")] for path in directory.glob("*.json")
                      if path.name[:-len(".json")] not in self.project.stages)

    # ---- verbs --------------------------------------------------------------------

    def status(self, names: list[str]) -> list[Decision]:
        decisions = self.planner.plan(names)
        self._refresh_snapshot(decisions)
        return decisions

    def _refresh_snapshot(self, decisions: list[Decision]) -> None:
        """A plan of every stage leaves the snapshot the no-op fast path answers from
        (snapshot.py) if nothing is stale, and removes it otherwise."""
        from pivotbuild import snapshot

        if self.overrides:
            return
        if self.orphaned_locks():  # status lists them; the fast path does not know them
            snapshot.forget(str(self.root))
            return
        snapshot.refresh(self, decisions, len(decisions) == len(self.graph),
                         self._snapshot_key)

    def repro(self, names: list[str], *, options: RunOptions, reporter: Reporter,
              force: bool = False, single_item: bool = False, dry_run: bool = False,
              use_run_cache: bool = True, run_cache_miss: RunCacheMiss | None = None,
              runner: StageRunner | None = None) -> tuple[list[Decision], list[StageResult]]:
        """Plan, then (unless ``dry_run``) execute. ``force``: every stage of ``names`` runs
        (``single_item`` changes nothing here: ``select`` already left only the targets).
        ``runner``: how commands run (default: runners.local)."""
        planner = self.make_planner(use_run_cache, run_cache_miss)
        forced = frozenset(names) if force else frozenset()  # with -s: only the targets
        decisions = planner.plan(names, force=forced)
        if not forced:
            self._refresh_snapshot(decisions)
        if dry_run:
            for decision in decisions:
                reporter.decided(decision)
            return decisions, []
        from pivotbuild.execute import CachedOutputs, Executor

        if runner is None:
            from pivotbuild.runners.local import LocalRunner

            runner = LocalRunner()
        committer: Committer = self.committer
        prepare = getattr(runner, "prepare", None)  # a cluster runner (runners/dask.py)
        if prepare is not None and any(d.action != SKIP or d.upstream_stale for d in decisions):
            # It connects and uploads the plan's inputs; it says how many stages run at once
            # (options.jobs 0: its default) and checks the commits against its results.
            committer, jobs = prepare(decisions, committer, options.jobs)
            options = dataclasses.replace(options, jobs=jobs)
        if options.audit is not None:  # repro --audit: the commands run traced
            from pivotbuild.auditrun import TracingRunner

            runner = TracingRunner(runner, options.audit)
        outputs = CachedOutputs(self.project, self.placer, reporter.say)
        executor = Executor(self.project, self.graph, planner, committer, outputs, runner,
                            self.state, reporter, dataclasses.replace(options, forced=forced))
        return decisions, executor.execute(decisions)

    def commit(self, names: list[str], *, explicit: bool, dry_run: bool = False
               ) -> CommitOutcome:
        """Record stale stages (or the named ones, even if up to date) from the workspace.

        Each committed stage gets its own history record (status ``committed``); earlier
        records, those of `repro --no-commit` included, are never rewritten. ``dry_run``
        hashes what commit would (writing only the stat memo) and reports the stages that
        would fail as failed, so that it exits as commit would."""
        outcome = CommitOutcome()
        decisions = self.planner.plan(names)
        for decision in decisions:
            wanted = explicit or decision.status == STALE
            if not wanted or decision.status == FROZEN and not explicit:
                outcome.unchanged.append(decision.name)
                continue
            outcome.plan.append(decision)
        for decision in outcome.plan:
            wall_start, started = time.time(), time.monotonic()
            try:
                if dry_run:
                    self.committer.snapshot(decision.stage)
                    outcome.committed.append(decision.name)
                    continue
                result = self.committer.commit(decision.stage)
            except (MissingPathsError, OperationError) as exc:
                outcome.failed.append((decision.name, str(exc)))
                continue
            outcome.committed.append(decision.name)
            self.state.add_run(decision.name, wall_start, time.monotonic() - started,
                               "committed", result.lock.input_hash, True)
        return outcome

    def dag_names(self, targets: list[str]) -> list[str]:
        return self.select(targets) if targets else dag.topological(self.graph)


def plan_result(decision: Decision) -> StageResult:
    """A decision shown as a `repro --dry-run --json` stage entry."""
    from pivotbuild.execute import StageResult

    return StageResult(decision.name, decision.action, NOT_RUN, decision.reasons,
                       decision.input_hash)


@contextmanager
def opened(root: Path, hash_jobs: int = 0,
           ahead: Callable[[str], PathDigest | None] | None = None, *,
           overrides: Mapping[str, str] | None = None) -> Iterator[Pipeline]:
    pipeline = Pipeline(root, hash_jobs, ahead, overrides=overrides)
    try:
        yield pipeline
    finally:
        pipeline.close()
