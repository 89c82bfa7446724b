"""Running stages: scheduling -j wide in dependency order, keep-going, output
streaming without interleaving, interrupts, and handing results to the commit writer.

A stage starts as soon as every selected upstream stage has succeeded. A stage
that was stale only because its upstream was is decided again when it is about
to start: if the upstream run left its deps byte-identical, it is skipped
(content decides, not timestamps).
"""

from __future__ import annotations

import heapq
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import IO, Any

import networkx as nx

from pivotbuild import paths
from pivotbuild.cache import Cache, CorruptObjectsError, MissingObjectsError
from pivotbuild.commit import Committer
from pivotbuild.config import Project, Stage
from pivotbuild.errors import OperationError
from pivotbuild.paths import remove_path  # noqa: F401 - re-exported (checkout.py imports it)
from pivotbuild.plan import RESTORE, RUN, RUN_CACHE, SKIP, Decision, Planner, Reason
from pivotbuild.procs import Commands
from pivotbuild.state import StateDB

OK, FAILED, NOT_RUN = "ok", "failed", "not-run"


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

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "action": self.action, "status": self.status,
            "input_hash": self.input_hash, "duration_s": round(self.duration_s, 3),
            "reasons": [r.to_dict() for r in self.reasons],
        }
        if self.error is not None:
            out["error"] = self.error
        return out


class LineWriter:
    """The one writer of the lines a run prints: stage output (stdout, or stderr with
    --json) and the reporter's lines (stderr), from every thread. One lock; each line is
    written whole and flushed before the next, so lines never glue together. While a live
    display is attached (progress.py), lines bound for the terminal go through it, above
    its bar."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._display: Callable[[str], None] | None = None
        self._terminal: list[IO[str]] = []

    def line(self, text: str, stream: IO[str] | None = None) -> None:
        """Write ``text`` (one line or several) to ``stream`` (None: sys.stdout now)."""
        text = text if text.endswith("\n") else text + "\n"
        with self._lock:
            target = stream or sys.stdout
            if self._display is not None and any(target is s for s in self._terminal):
                self._display(text[:-1])
                return
            target.write(text)
            target.flush()

    def attach(self, display: Callable[[str], None]) -> None:
        """Send the lines for the terminal (stderr; stdout too if it is a terminal) to
        ``display`` until detach()."""
        with self._lock:
            self._display = display
            streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
            self._terminal = [s for s in streams if s is not None and (
                s is sys.stderr or s is sys.__stderr__ or _isatty(s))]

    def detach(self) -> None:
        with self._lock:
            self._display = None
            self._terminal = []


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


LINES = LineWriter()


class Output:
    """Stage output, a whole line at a time (through LINES), prefixed with the stage when
    several stages may run at once."""

    def __init__(self, stream: IO[str] | None, prefix: bool) -> None:
        self.stream = stream  # None: whatever sys.stdout is when a line is written
        self.prefix = prefix

    def line(self, stage: str, text: str) -> None:
        LINES.line(f"[{stage}] {text}" if self.prefix else text, self.stream)


class Reporter:
    """Tells the user what is happening (stderr, through LINES). Subclassed by the live
    display."""

    def __init__(self, verbose: int = 0, quiet: bool = False, explain: bool = False) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self.explain = explain

    def say(self, text: str) -> None:
        if not self.quiet:
            LINES.line(text, sys.stderr)

    def start(self, total: int) -> None:
        pass

    def interrupted(self) -> None:
        """The run was interrupted (its commands stopped): no finish() will come."""

    def decided(self, decision: Decision) -> None:
        if self.explain and decision.action != SKIP:
            why = "; ".join(str(r) for r in decision.reasons) or "forced"
            self.say(f"stage '{decision.name}' {decision.action}: {why}")

    def stage_started(self, name: str, action: str) -> None:
        if action == RUN:
            self.say(f"Running stage '{name}'")
        elif action == RESTORE:
            self.say(f"Restoring outputs of '{name}' from the cache")
        elif action == RUN_CACHE:
            self.say(f"Restoring '{name}' from the run cache")

    def stage_finished(self, result: StageResult) -> None:
        if result.status == FAILED:
            self.say(f"pivotbuild: error: stage '{result.name}' failed: {result.error}")
        elif result.action == SKIP and self.verbose:
            self.say(f"Stage '{result.name}' is up to date")

    def finish(self, results: list[StageResult], wall_s: float) -> None:
        counts = {k: 0 for k in ("ran", "skipped", "restored", "failed", "not run")}
        for r in results:
            if r.status == FAILED:
                counts["failed"] += 1
            elif r.status == NOT_RUN:
                counts["not run"] += 1
            elif r.action == RUN:
                counts["ran"] += 1
            elif r.action == SKIP:
                counts["skipped"] += 1
            else:
                counts["restored"] += 1
        parts = [f"{n} {k}" for k, n in counts.items() if n or k in ("ran", "failed")]
        self.say(f"pivotbuild: {', '.join(parts)} in {wall_s:.2f}s")


@dataclass(slots=True)
class RunOptions:
    jobs: int = 1
    keep_going: bool = False
    no_commit: bool = False
    forced: frozenset[str] = frozenset()
    stage_output: IO[str] | None = None  # default: stdout


class Executor:
    """Carries out a plan."""

    def __init__(self, project: Project, graph: nx.DiGraph, planner: Planner,
                 committer: Committer, cache: Cache, state: StateDB, reporter: Reporter,
                 options: RunOptions) -> None:
        self.project = project
        self.graph = graph
        self.planner = planner
        self.committer = committer
        self.cache = cache
        self.state = state
        self.reporter = reporter
        self.options = options
        self._interrupted = threading.Event()
        self._commands = Commands()
        self.output: Output | None = None

    # ---- scheduling -------------------------------------------------------------

    def execute(self, decisions: list[Decision]) -> list[StageResult]:
        """Run the plan; on an interrupt (KeyboardInterrupt: Ctrl-C, or SIGTERM / SIGHUP as
        entry.py raises them) stops every command, then raises it again.

        Event-driven: each stage counts its unfinished upstream stages and becomes ready
        at zero; ready stages start in topological order. A stage decided `skip` with
        nothing upstream left to run is settled on the spot, without a thread."""
        jobs = max(1, self.options.jobs)
        order = [d.name for d in decisions]
        position = {name: i for i, name in enumerate(order)}
        pending = {d.name: d for d in decisions}
        waiting = {n: sum(1 for u in self.graph.predecessors(n) if u in position) for n in order}
        ready = [position[n] for n in order if waiting[n] == 0]
        heapq.heapify(ready)
        will_run = [d.name for d in decisions if d.action != SKIP]
        self.output = Output(self.options.stage_output, jobs > 1 and not self._chain(will_run))
        if will_run:
            self._commands.prepare()  # the watchdog (procs.py), from this, the main thread
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
                        while ready and len(running) < jobs:
                            name = order[heapq.heappop(ready)]
                            decision = pending.pop(name)
                            ups = [u for u in self.graph.predecessors(name) if u in position]
                            if (stop and not self.options.keep_going) or any(
                                    results[u].status != OK for u in ups):
                                settle(name, StageResult(name, decision.action, NOT_RUN,
                                                         decision.reasons, decision.input_hash))
                            elif decision.action == SKIP and not decision.upstream_stale:
                                settle(name, StageResult(name, SKIP, OK, decision.reasons,
                                                         decision.input_hash))
                                self.reporter.stage_finished(results[name])
                            else:
                                running[pool.submit(self._process, decision)] = name
                        if not running:
                            continue
                        done, _ = wait(list(running), timeout=0.25, return_when=FIRST_COMPLETED)
                        for future in done:
                            name = running.pop(future)
                            settle(name, future.result())
                            self.reporter.stage_finished(results[name])
                            if results[name].status == FAILED:
                                stop = True
                except KeyboardInterrupt:
                    self._interrupted.set()
                    while True:  # a second interrupt must not cut the stopping short
                        try:
                            self._commands.stop_all()
                            pool.shutdown(wait=True, cancel_futures=True)
                            break
                        except KeyboardInterrupt:
                            continue
                    self.reporter.interrupted()
                    raise
        finally:
            self._commands.close()
        return [results[n] for n in order]

    def _chain(self, names: list[str]) -> bool:
        """True if these stages (in topological order) can never run two at a time:
        each one lies downstream of the one before it."""
        return all(nx.has_path(self.graph, a, b) for a, b in itertools.pairwise(names))

    # ---- one stage --------------------------------------------------------------

    def _process(self, decision: Decision) -> StageResult:
        name = decision.name
        started = time.monotonic()
        try:
            if decision.upstream_stale:
                # The upstream ran: look again at what it left behind.
                self.planner.hash_paths(self.planner.stage_paths(decision.stage))
                decision = self.planner.decide(name, force=name in self.options.forced)
            self.reporter.decided(decision)
            if decision.action == SKIP:
                return StageResult(name, SKIP, OK, decision.reasons, decision.input_hash)
            self.reporter.stage_started(name, decision.action)
            if decision.action == RESTORE:
                restored = self._restore(decision)
            elif decision.action == RUN_CACHE:
                restored = self._restore_run(decision)
            else:
                return self._run(decision, started)
            if not restored:  # a cache object was bad (named, removed): run the stage instead
                decision.action = RUN
                self.reporter.stage_started(name, RUN)
                return self._run(decision, started)
            return StageResult(name, decision.action, OK, decision.reasons,
                               decision.input_hash, time.monotonic() - started)
        except (OperationError, OSError) as exc:
            # e.g. an out whose directory resolves outside the project, a missing wdir, a
            # full disk while preparing outputs
            if isinstance(exc, OperationError):
                error = str(exc)
            else:
                error = f"{self._shown(exc.filename)}: " if exc.filename else ""
                error += exc.strerror or str(exc)
            duration = time.monotonic() - started
            if decision.action == RUN:
                self.state.add_run(name, time.time() - duration, duration, "failed",
                                   decision.input_hash, False)
            return StageResult(name, decision.action, FAILED, decision.reasons,
                               decision.input_hash, duration, error)

    def _shown(self, path: Any) -> str:
        """A path for a message: project-relative when it lies inside the project."""
        text = os.fsdecode(path)
        root = str(self.project.root)
        return text[len(root) + 1:] if text.startswith(root + "/") else text

    def _restore(self, decision: Decision) -> bool:
        """Inputs match the lock: put the locked outputs back from the cache. False if an
        object turned out missing or corrupt: the stage must run instead."""
        assert decision.lock is not None
        changed = {r.path for r in decision.reasons}
        for out in decision.lock.outs:
            if out.path in changed and not self._link_out(out.hash, out.path):
                return False
        return True

    def _restore_run(self, decision: Decision) -> bool:
        """A run with these inputs was seen before: take its outputs, then commit. False
        (nothing committed) if an object turned out missing or corrupt: run instead."""
        assert decision.run_entry is not None
        cached = {o.path for o in decision.stage.outs if o.cache}
        for out in decision.run_entry["outs"]:
            if out["path"] in cached and out.get("cache", True):
                if not self._link_out(out["hash"], out["path"]):
                    return False
            # a non-cached output is only accepted when already on disk (see the planner)
        if not self.options.no_commit:
            self.committer.commit(decision.stage)
        return True

    def _link_out(self, digest: str, path: str, methods: list[str] | None = None) -> bool:
        """Put an output back from the cache; False, after a warning naming the output, if
        one of its objects is missing or does not match its name (a corrupt one is removed
        from the cache, and so is a ``.dir`` object that no longer has all its files)."""
        dest = self.project.root / path
        paths.remove(self.project.root, path)
        try:
            if digest.endswith(".dir"):
                self.cache.checkout_dir(digest, dest, methods or self.project.checkout,
                                        self.project.root, shown=path)
            else:
                self.cache.link_out(digest, dest, methods or self.project.checkout,
                                    self.project.root, shown=path)
        except (MissingObjectsError, CorruptObjectsError) as exc:
            if digest.endswith(".dir"):
                self.cache.remove(digest)  # incomplete: the next commit stores it whole
            self.reporter.say(f"pivotbuild: warning: {exc}")
            return False
        return True

    def _prepare_outs(self, decision: Decision) -> None:
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
            elif not os.path.lexists(dest) and out.path in locked and self.cache.has(
                locked[out.path].hash
            ):
                self._link_out(locked[out.path].hash, out.path, ["copy"])
            paths.make_parent(root, out.path)

    def _run(self, decision: Decision, started: float) -> StageResult:
        stage, name = decision.stage, decision.name
        early = self._unusable_deps(decision)
        if early is not None:
            # Failed before its deps could be hashed: no input hash, but a history record.
            self.state.add_run(name, time.time(), 0.0, "failed", None, False)
            return StageResult(name, RUN, FAILED, decision.reasons, None, 0.0, early)
        if decision.input_hash is None:
            decision.input_hash = self.planner.input_hash(decision)
        self._prepare_outs(decision)
        wall_start = time.time()
        code = self._run_commands(stage)
        duration = time.monotonic() - started
        error = None
        if self._interrupted.is_set():
            self.state.add_run(name, wall_start, duration, "interrupted", decision.input_hash,
                               False)
            return StageResult(name, RUN, FAILED, decision.reasons, decision.input_hash,
                               duration, "interrupted")
        if code != 0:
            error = f"command exited with code {code}"
        else:
            missing = [o.path for o in stage.outs
                       if not os.path.lexists(self.project.root / o.path)]
            if missing:
                error = "declared output " + ", ".join(repr(p) for p in missing) + " not produced"
        committed = False
        if error is None:
            try:
                if self.options.no_commit:
                    decision.input_hash = self.committer.snapshot(stage).input_hash
                else:
                    decision.input_hash = self.committer.commit(stage).lock.input_hash
                    committed = True
            except OperationError as exc:
                error = str(exc)
        self.state.add_run(name, wall_start, duration, "ok" if error is None else "failed",
                           decision.input_hash, committed)
        return StageResult(name, RUN, OK if error is None else FAILED, decision.reasons,
                           decision.input_hash, duration, error)

    def _unusable_deps(self, decision: Decision) -> str | None:
        """What is wrong with the stage's deps (missing, or a file in them unreadable, named
        as `commit` names it), or None."""
        if decision.missing_deps:
            missing = ", ".join(repr(p) for p in decision.missing_deps)
            return f"missing dependency {missing}"
        problems = []
        for path, digest in decision.deps.items():
            if digest.hash is None and not digest.missing:
                shown, why = digest.errors[0] if digest.errors else (path, "cannot be hashed")
                problems.append(f"{self._shown(shown)}: {why}")
        if problems:
            return f"dependency cannot be read ({'; '.join(problems)})"
        return None

    def _run_commands(self, stage: Stage) -> int:
        """Run each command under /bin/sh -c in wdir; stop at the first failure."""
        assert self.output is not None
        env = {**os.environ, "PIVOTBUILD_ROOT": str(self.project.root),
               "PIVOTBUILD_STAGE": stage.name}
        cwd = self.project.root / stage.wdir
        for command in stage.cmd:
            proc = self._commands.start(command, cwd, env)
            if proc is None:  # interrupted: the other commands are being stopped
                return 130
            try:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    self.output.line(stage.name, raw.decode("utf-8", "replace"))
                code = proc.wait()
            finally:
                self._commands.finished(proc)
            if code != 0:
                return code if code > 0 else 128 - code
        return 0
