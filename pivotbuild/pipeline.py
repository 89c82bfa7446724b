"""One opened project and the verbs on it: status, repro, commit.

Phases are named in code (collect → select → plan → execute → commit): the CLI
calls one method here and renders what it returns.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pivotbuild import dag
from pivotbuild.cache import Cache
from pivotbuild.commit import Committer, MissingPathsError
from pivotbuild.config import Project, load_project
from pivotbuild.errors import OperationError, UsageError
from pivotbuild.plan import FROZEN, STALE, Decision, Planner
from pivotbuild.prefetch import Prefetch
from pivotbuild.state import StateDB
from pivotbuild.workspace import Hasher

if TYPE_CHECKING:  # execute.py (subprocess, threads) is only loaded when something runs
    from pivotbuild.execute import Reporter, RunOptions, StageResult


@dataclass(slots=True)
class CommitOutcome:
    """What `commit` did (SPEC §5 `commit --json`)."""

    committed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (stage, error)
    unchanged: list[str] = field(default_factory=list)
    plan: list[Decision] = field(default_factory=list)


class Pipeline:
    """A project loaded, its graph built, its memo, cache and planner ready."""

    def __init__(self, root: Path, hash_jobs: int = 0, prefetch: Prefetch | None = None
                 ) -> None:
        self.project: Project = load_project(root)
        self.root = self.project.root
        self.graph = dag.build_graph(self.project)
        self.state = StateDB(self.project.state_dir / "state.db")
        self.hasher = Hasher(self.root, self.state, hash_jobs)
        self.cache = Cache(self.project.cache_dir, staging=self.project.state_dir / "tmp",
                           memo=self.state)
        self.planner = Planner(self.project, self.graph, self.hasher, self.cache)
        self.planner.prefetch = prefetch
        self.committer = Committer(self.project, self.hasher, self.cache)

    def close(self) -> None:
        self.state.close()

    # ---- collect and select -------------------------------------------------------

    def _target(self, target: str) -> str:
        """Stage names pass through; paths are made project-relative (from the cwd)."""
        if target in self.graph or any(
            s.base == target for s in self.project.stages.values()
        ):
            return target
        absolute = os.path.abspath(target)
        root = str(self.root)
        if absolute == root:
            return "."
        if absolute.startswith(root + "/"):
            return absolute[len(root) + 1:]
        raise UsageError(f"unknown stage or output: '{target}'")

    def stage_names(self, name: str) -> list[str]:
        """The stages a stage name or a matrix base name names; UsageError for any other."""
        if name in self.graph:
            return [name]
        instances = [s.name for s in self.project.stages.values() if s.base == name]
        if not instances:
            raise UsageError(f"unknown stage: '{name}'")
        return instances

    def select(self, targets: list[str], *, single_item: bool = False,
               downstream: bool = False) -> list[str]:
        return dag.select(self.graph, [self._target(t) for t in targets],
                          single_item=single_item, downstream=downstream)

    # ---- verbs --------------------------------------------------------------------

    def status(self, names: list[str]) -> list[Decision]:
        decisions = self.planner.plan(names)
        self._refresh_snapshot(decisions)
        return decisions

    def _refresh_snapshot(self, decisions: list[Decision]) -> None:
        """A plan of every stage leaves the snapshot the no-op fast path answers from
        (snapshot.py) if nothing is stale, and removes it otherwise."""
        from pivotbuild import snapshot

        snapshot.refresh(self, decisions, len(decisions) == self.graph.number_of_nodes())

    def repro(self, names: list[str], *, options: RunOptions, reporter: Reporter,
              force: bool = False, single_item: bool = False, dry_run: bool = False,
              use_run_cache: bool = True) -> tuple[list[Decision], list[StageResult]]:
        self.planner.use_run_cache = use_run_cache
        forced = frozenset(names if force else ())
        if force and single_item:
            forced = frozenset(names)
        options.forced = forced
        decisions = self.planner.plan(names, force=forced)
        if not forced:
            self._refresh_snapshot(decisions)
        if dry_run:
            for decision in decisions:
                reporter.decided(decision)
            return decisions, []
        from pivotbuild.execute import Executor

        executor = Executor(self.project, self.graph, self.planner, self.committer, self.cache,
                            self.state, reporter, options)
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

    return StageResult(decision.name, decision.action, "not-run", decision.reasons,
                       decision.input_hash)


@contextmanager
def opened(root: Path, hash_jobs: int = 0, prefetch: Prefetch | None = None
           ) -> Iterator[Pipeline]:
    pipeline = Pipeline(root, hash_jobs, prefetch)
    try:
        yield pipeline
    finally:
        pipeline.close()
