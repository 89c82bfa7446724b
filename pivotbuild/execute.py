"""Scheduling a plan: stages -j wide in dependency order, pools, keep-going, interrupts.

A stage starts as soon as every selected upstream stage has succeeded and its pool (SPEC §9
``[pools]``) has room; without keep-going no new stage starts after a failure (running ones
finish). A stage of the ``console`` pool (size 1) gets the terminal, and the reporter holds
every other line until it ends. A stage that was stale only because
its upstream was is decided again when it is about to start: if the upstream run left its
deps byte-identical, it is skipped (content decides, not timestamps).

What the executor does per stage goes through what it is given, so the whole algorithm runs
in memory in tests (tests/test_execute.py): the planner (re-decisions), ``Outputs`` (deleting,
preparing and restoring outputs in the workspace), a ``StageRunner`` (runners/: the commands),
the commit writer (commit.py), the ``History`` of runs and a ``Listener`` (report.py: what
the user sees).
"""

from __future__ import annotations

import heapq
import itertools
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Protocol

from pivotbuild import paths
from pivotbuild.commit import Committer, MissingPathsError
from pivotbuild.config_models import CONSOLE_POOL
from pivotbuild.discovery import Discovery, discovers
from pivotbuild.errors import OperationError
from pivotbuild.plan import (
    FAILED,
    NOT_RUN,
    OK,
    RESTORE,
    RUN,
    SKIP,
    Decision,
    Planner,
    Reason,
    glob_hint,
)
from pivotbuild.runners import Cancel, OutputSink, StageRunner, StageSpec
from pivotbuild.store.objects import CorruptObjectsError, MissingObjectsError

if TYPE_CHECKING:
    from pivotbuild.auditrun import Audit
    from pivotbuild.config_models import Project
    from pivotbuild.dag import StageGraph
    from pivotbuild.hasher import PathDigest
    from pivotbuild.store.place import Placer


@dataclass(slots=True)
class StageResult:
    """What happened to one stage in a repro (SPEC §4 `repro --json`)."""

    name: str
    action: str
    status: str
    reasons: list[Reason] = field(default_factory=list)
    input_hash: str | None = None
    duration_s: float = 0.0
    error: str | None = None
    undeclared_reads: list[str] | None = None  # repro --audit: a traced successful run's

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "action": self.action, "status": self.status,
            "input_hash": self.input_hash, "duration_s": round(self.duration_s, 3),
            "reasons": [r.to_dict() for r in self.reasons],
        }
        if self.error is not None:
            out["error"] = self.error
        if self.undeclared_reads is not None:
            out["undeclared_reads"] = list(self.undeclared_reads)
        return out


# ---- what the executor is given -------------------------------------------------------------


class Listener(Protocol):
    """What the executor tells the user, from its threads (report.Reporter)."""

    def start(self, total: int) -> None: ...
    def decided(self, decision: Decision) -> None: ...
    def stage_started(self, name: str, action: str) -> None: ...
    def stage_finished(self, result: StageResult) -> None: ...
    def interrupted(self) -> None: ...

    def stage_lines(self, stage: str, prefix: bool, stream: IO[str] | None) -> OutputSink:
        """Where the output of a stage's commands goes, a line at a time."""
        ...

    def console(self, stage: str) -> AbstractContextManager[None]:
        """While a console-pool stage has the terminal: print nothing over it."""
        ...


class History(Protocol):
    """The record of runs (state.StateDB)."""

    def add_run(self, stage: str, started_at: float, duration_s: float, status: str,
                input_hash: str | None, committed: bool) -> int: ...


class Outputs(Protocol):
    """A stage's outputs in the workspace (``CachedOutputs`` below)."""

    def prepare(self, decision: Decision) -> None:
        """Before a run: delete non-persist outputs, bring missing persist ones back, create
        their directories; OperationError (nothing touched) if one resolves outside."""

    def restore(self, decision: Decision) -> bool:
        """Action restore: the locked outputs back from the cache; False: run instead."""
        ...

    def restore_run(self, decision: Decision) -> bool:
        """Action run-cache: the run entry's outputs from the cache; False: run instead."""
        ...


@dataclass(slots=True)
class RunOptions:
    jobs: int = 1
    keep_going: bool = False
    no_commit: bool = False
    forced: frozenset[str] = frozenset()
    stage_output: IO[str] | None = None  # default: stdout
    audit: Audit | None = None  # repro --audit (the runner is then an auditrun.TracingRunner)


class Executor:
    """Carries out a plan."""

    def __init__(self, project: Project, graph: StageGraph, planner: Planner,
                 committer: Committer, outputs: Outputs, runner: StageRunner,
                 history: History, reporter: Listener, options: RunOptions) -> None:
        self.project = project
        self.graph = graph
        self.planner = planner
        self.committer = committer
        self.outputs = outputs
        self.runner = runner
        self.history = history
        self.reporter = reporter
        self.options = options
        self._cancel = Cancel()
        self._prefix = False

    # ---- scheduling -------------------------------------------------------------

    def execute(self, decisions: list[Decision]) -> list[StageResult]:
        """Run the plan; on an interrupt (KeyboardInterrupt: Ctrl-C, or SIGTERM / SIGHUP as
        entry.py raises them) stops every command, then raises it again.

        Event-driven: each stage counts its unfinished upstream stages and becomes ready
        at zero; ready stages start in topological order. A stage decided `skip` with
        nothing upstream left to run is settled on the spot, without a thread."""
        jobs = max(1, self.options.jobs)
        pool_size = {**self.project.pools, CONSOLE_POOL: 1}
        in_pool = dict.fromkeys(pool_size, 0)  # how many stages of each pool are running
        order = [d.name for d in decisions]
        position = {name: i for i, name in enumerate(order)}
        pending = {d.name: d for d in decisions}
        waiting = {n: sum(1 for u in self.graph.predecessors(n) if u in position) for n in order}
        ready = [position[n] for n in order if waiting[n] == 0]
        heapq.heapify(ready)
        will_run = [d.name for d in decisions if d.action != SKIP]
        self._prefix = jobs > 1 and not self._chain(will_run)
        if will_run:
            self.runner.open(self._cancel)  # from this, the main thread
        results: dict[str, StageResult] = {}
        running: dict[Future[StageResult], str] = {}
        stop = False
        self.reporter.start(len(order))

        def settle(name: str, result: StageResult) -> None:
            results[name] = result
            for down in self.graph.successors(name):
                if down in waiting:
                    waiting[down] -= 1
                    if waiting[down] == 0:
                        heapq.heappush(ready, position[down])

        try:
            # The pool's threads start the commands and wait for them; they live until this
            # `with` ends, which is after every task (hence every command) has finished.
            with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="stage") as pool:
                try:
                    while ready or running:
                        full: list[int] = []  # ready, but their pool is full: kept for later
                        while ready and len(running) < jobs:
                            at = heapq.heappop(ready)
                            name = order[at]
                            decision = pending[name]
                            ups = [u for u in self.graph.predecessors(name) if u in position]
                            if (stop and not self.options.keep_going) or any(
                                    results[u].status != OK for u in ups):
                                del pending[name]
                                settle(name, StageResult(name, decision.action, NOT_RUN,
                                                         decision.reasons, decision.input_hash))
                            elif decision.action == SKIP and not decision.upstream_stale:
                                del pending[name]
                                settle(name, StageResult(name, SKIP, OK, decision.reasons,
                                                         decision.input_hash))
                                self.reporter.stage_finished(results[name])
                            elif (group := decision.stage.pool) is not None and (
                                    in_pool[group] >= pool_size[group]):
                                full.append(at)  # a stage of its pool is running: it frees one
                            else:
                                del pending[name]
                                if group is not None:
                                    in_pool[group] += 1
                                running[pool.submit(self._process, decision)] = name
                        for at in full:
                            heapq.heappush(ready, at)
                        if not running:
                            continue
                        done, _ = wait(list(running), timeout=0.25, return_when=FIRST_COMPLETED)
                        for future in done:
                            name = running.pop(future)
                            if (group := self.project.stages[name].pool) is not None:
                                in_pool[group] -= 1
                            settle(name, future.result())
                            self.reporter.stage_finished(results[name])
                            if results[name].status == FAILED:
                                stop = True
                except KeyboardInterrupt:
                    while True:  # a second interrupt must not cut the stopping short
                        try:
                            self._cancel.set()  # the runner stops every command
                            pool.shutdown(wait=True, cancel_futures=True)
                            break
                        except KeyboardInterrupt:
                            continue
                    self.reporter.interrupted()
                    raise
        finally:
            self.runner.close()
        return [results[n] for n in order]

    def _chain(self, names: list[str]) -> bool:
        """True if these stages (in topological order) can never run two at a time:
        each one lies downstream of the one before it."""
        return all(self.graph.has_path(a, b) for a, b in itertools.pairwise(names))

    # ---- one stage --------------------------------------------------------------

    def _process(self, decision: Decision) -> StageResult:
        name, started = decision.name, time.monotonic()
        action = decision.action
        try:
            if decision.upstream_stale:
                # The upstream ran: look again at what it left behind.
                self.planner.hash_paths(self.planner.stage_paths(decision.stage,
                                                                 decision.lock))
                decision = self.planner.decide(name, force=name in self.options.forced)
                action = decision.action
            self.reporter.decided(decision)
            if action == SKIP:
                return StageResult(name, SKIP, OK, decision.reasons, decision.input_hash)
            self.reporter.stage_started(name, action)
            if action != RUN and self._restore(decision):
                return StageResult(name, action, OK, decision.reasons, decision.input_hash,
                                   time.monotonic() - started)
        except (OperationError, OSError) as exc:
            # e.g. a restore whose output resolves outside the project, a full disk
            return self._failed(decision, action, decision.input_hash, started, exc)
        if action != RUN:  # a cache object was bad (named, removed): run the stage instead
            self.reporter.stage_started(name, RUN)
        return self._run(decision, started)

    def _restore(self, decision: Decision) -> bool:
        """Actions restore and run-cache (the latter committed, as a run would be); False if
        an object turned out missing or corrupt."""
        if decision.action == RESTORE:
            return self.outputs.restore(decision)
        if not self.outputs.restore_run(decision):
            return False
        if not self.options.no_commit:
            # the lock records the discovered deps of the run it takes the outputs of
            found = (decision.run_entry or {}).get("discovered")
            self.committer.commit(decision.stage, discovered=None if found is None
                                  else [d["path"] for d in found])
        return True

    def _failed(self, decision: Decision, action: str, input_hash: str | None,
                started: float, exc: OperationError | OSError) -> StageResult:
        """The result of a stage that raised (a run of it goes into the history)."""
        if isinstance(exc, OperationError):
            error = str(exc)
        else:
            error = f"{self._shown(exc.filename)}: " if exc.filename else ""
            error += exc.strerror or str(exc)
        duration = time.monotonic() - started
        if action == RUN:
            self.history.add_run(decision.name, time.time() - duration, duration, "failed",
                                 input_hash, False)
        return StageResult(decision.name, action, FAILED, decision.reasons, input_hash,
                           duration, error)

    def _shown(self, path: Any) -> str:
        """A path for a message: project-relative when it lies inside the project."""
        return _shown(os.fsdecode(path), str(self.project.root))

    def _run(self, decision: Decision, started: float) -> StageResult:
        """Run the stage (_run_stage) with the discovery of its deps around it, if it has
        any (discovery.py: an import record made before, and removed after, the run)."""
        finder = None
        if discovers(decision.stage):
            try:
                finder = Discovery(decision.stage, self.project.root, os.environ)
            except OperationError as exc:
                return self._failed(decision, RUN, decision.input_hash, started, exc)
        try:
            return self._run_stage(decision, started, finder)
        finally:
            if finder is not None:
                finder.discard()

    def _run_stage(self, decision: Decision, started: float, finder: Discovery | None
                   ) -> StageResult:
        stage, name = decision.stage, decision.name
        early = self._unusable_deps(decision)
        if early is not None:
            # Failed before its deps could be hashed: no input hash, but a history record.
            self.history.add_run(name, time.time(), 0.0, "failed", None, False)
            return StageResult(name, RUN, FAILED, decision.reasons, None, 0.0, early)
        input_hash = decision.input_hash or self.planner.input_hash(decision)
        console = stage.pool == CONSOLE_POOL
        env = {"PIVOTBUILD_ROOT": str(self.project.root), "PIVOTBUILD_STAGE": name}
        if finder is not None:
            env.update(finder.env)
        spec = StageSpec(
            name=name, cmd=tuple(stage.cmd), root=str(self.project.root), wdir=stage.wdir,
            deps=tuple(stage.deps), outs=tuple(o.path for o in stage.outs),
            persist=tuple(o.path for o in stage.outs if o.persist),
            env=env,
            console=console, console_stdout=self._console_stdout() if console else 1,
        )
        try:
            # e.g. an out whose directory resolves outside the project, a missing wdir
            self.outputs.prepare(decision)
            wall_start = time.time()
            output = self.reporter.stage_lines(name, self._prefix, self.options.stage_output)
            if console:
                with self.reporter.console(name):
                    code = self.runner.run(spec, output, self._cancel)
            else:
                code = self.runner.run(spec, output, self._cancel)
        except (OperationError, OSError) as exc:
            return self._failed(decision, RUN, input_hash, started, exc)
        duration = time.monotonic() - started
        if self._cancel.is_set():
            self.history.add_run(name, wall_start, duration, "interrupted", input_hash, False)
            return StageResult(name, RUN, FAILED, decision.reasons, input_hash, duration,
                               "interrupted")
        error, committed = None, False
        found: list[str] | None = None  # the discovered deps of a successful run
        if code != 0:
            error = f"command exited with code {code}"
        else:
            try:
                found = finder.collect() if finder is not None else None
                if self.options.no_commit:
                    input_hash = self.committer.snapshot(stage, found).input_hash
                else:
                    input_hash = self.committer.commit(stage, discovered=found).lock.input_hash
                    committed = True
            except MissingPathsError as exc:
                outs = [p for p in exc.paths if p in {o.path for o in stage.outs}]
                error = ("declared output " + ", ".join(repr(p) for p in outs)
                         + " not produced") if outs else str(exc)
            except OperationError as exc:
                error = str(exc)
        self.history.add_run(name, wall_start, duration, "ok" if error is None else "failed",
                             input_hash, committed)
        undeclared = None
        if error is None and self.options.audit is not None:
            undeclared = self.options.audit.undeclared(stage, found or ())
        return StageResult(name, RUN, OK if error is None else FAILED, decision.reasons,
                           input_hash, duration, error, undeclared)

    def _console_stdout(self) -> int:
        """Where a console stage's stdout goes: the descriptor of the stream stage output goes
        to (stderr under ``--json``), stdout when that has none."""
        stream = self.options.stage_output
        try:
            return stream.fileno() if stream is not None else 1
        except (AttributeError, ValueError, OSError):
            return 1

    def _unusable_deps(self, decision: Decision) -> str | None:
        """What is wrong with the stage's deps (missing, or a file in them unreadable, named
        as `commit` names it), or None."""
        if decision.missing_deps:
            missing = ", ".join(repr(p) for p in decision.missing_deps)
            hint = next(filter(None, map(glob_hint, decision.missing_deps)), None)
            return f"missing dependency {missing}" + (f" ({hint})" if hint else "")
        problems = [digest.problem(str(self.project.root)) for digest in decision.deps.values()
                    if digest.hash is None and not digest.missing]
        if problems:
            return f"dependency cannot be read ({'; '.join(problems)})"
        return None


def _shown(path: str, root: str) -> str:
    return path[len(root) + 1:] if path.startswith(root + "/") else path


# ---- outputs in the workspace, from the cache --------------------------------------------------


class CachedOutputs:
    """``Outputs`` for a real workspace: deleting, preparing and restoring a stage's outputs,
    from the project's cache (through store/place.py: a stage owns its outputs, so whatever
    is in their way is replaced)."""

    def __init__(self, project: Project, placer: Placer, say: Callable[[str], None]) -> None:
        self.project = project
        self.placer = placer
        self.say = say

    def restore(self, decision: Decision) -> bool:
        """Inputs match the lock: put the locked outputs back from the cache. False if an
        object turned out missing or corrupt: the stage must run instead."""
        assert decision.lock is not None
        changed = {r.path for r in decision.reasons}
        return all(self._place(out.hash, out.path, decision.outs.get(out.path))
                   for out in decision.lock.outs if out.path in changed)

    def restore_run(self, decision: Decision) -> bool:
        """A run with these inputs was seen before: take its outputs (the executor commits
        them). False if an object turned out missing or corrupt: run instead. A non-cached
        output is only accepted when already on disk (see the planner)."""
        assert decision.run_entry is not None
        cached = {o.path for o in decision.stage.outs if o.cache}
        return all(self._place(out["hash"], out["path"], decision.outs.get(out["path"]))
                   for out in decision.run_entry["outs"]
                   if out["path"] in cached and out.get("cache", True))

    def _place(self, digest: str, path: str, current: PathDigest | None,
               methods: list[str] | None = None) -> bool:
        """Put an output back from the cache; False, after a warning naming the output, if
        one of its objects is missing or does not match its name (a corrupt one is removed
        from the cache, and so is a ``.dir`` object that no longer has all its files)."""
        try:
            self.placer.restore(digest, path, current, methods or self.project.checkout,
                                overwrite=True)
        except (MissingObjectsError, CorruptObjectsError) as exc:
            self.say(f"pivotbuild: warning: {exc}")
            return False
        return True

    def prepare(self, decision: Decision) -> None:
        """Delete non-persist outputs; bring missing persist outputs back as copies; create
        their directories. Every out is checked first (paths.py): one whose directory
        resolves outside the project fails the stage before anything is touched."""
        locked = {o.path: o for o in decision.lock.outs} if decision.lock else {}
        root = self.project.root
        resolved = {out.path: paths.resolve(root, out.path) for out in decision.stage.outs}
        for out in decision.stage.outs:
            dest = resolved[out.path]
            if not out.persist:
                paths.remove(root, out.path)
            elif not os.path.lexists(dest) and out.path in locked and self.placer.objects.has(
                locked[out.path].hash
            ):
                self._place(locked[out.path].hash, out.path, None, ["copy"])
            paths.make_parent(root, out.path)
