"""Running stages: scheduling -j wide in dependency order, keep-going, output
streaming without interleaving, Ctrl-C, and handing results to the commit writer.

A stage starts as soon as every selected upstream stage has succeeded. A stage
that was stale only because its upstream was is decided again when it is about
to start: if the upstream run left its deps byte-identical, it is skipped
(content decides, not timestamps).
"""

from __future__ import annotations

import heapq
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import IO, Any

import networkx as nx

from pivotbuild.cache import Cache
from pivotbuild.commit import Committer
from pivotbuild.config import Project, Stage
from pivotbuild.errors import OperationError
from pivotbuild.plan import RESTORE, RUN, RUN_CACHE, SKIP, Decision, Planner, Reason
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


class Output:
    """Writes stage output a whole line at a time, prefixed with the stage when
    several stages may run at once, so parallel output never mixes mid-line."""

    def __init__(self, stream: IO[str] | None, prefix: bool) -> None:
        self.stream = stream  # None: whatever sys.stdout is when a line is written
        self.prefix = prefix
        self._lock = threading.Lock()

    def line(self, stage: str, text: str) -> None:
        if not text.endswith("\n"):
            text += "\n"
        with self._lock:
            stream = self.stream or sys.stdout
            stream.write(f"[{stage}] {text}" if self.prefix else text)
            stream.flush()


class Reporter:
    """Tells the user what is happening (stderr). Subclassed by the live display."""

    def __init__(self, verbose: int = 0, quiet: bool = False, explain: bool = False) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self.explain = explain

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def start(self, total: int) -> None:
        pass

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
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._procs_lock = threading.Lock()
        self.output: Output | None = None

    # ---- scheduling -------------------------------------------------------------

    def execute(self, decisions: list[Decision]) -> list[StageResult]:
        """Run the plan; raises KeyboardInterrupt (after cleaning up) on Ctrl-C.

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
                                                     decision.reasons))
                        elif decision.action == SKIP and not decision.upstream_stale:
                            settle(name, StageResult(name, SKIP, OK, decision.reasons))
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
                self._stop_all()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return [results[n] for n in order]

    def _chain(self, names: list[str]) -> bool:
        """True if these stages (in topological order) can never run two at a time:
        each one lies downstream of the one before it."""
        return all(nx.has_path(self.graph, a, b) for a, b in itertools.pairwise(names))

    def _stop_all(self) -> None:
        """Ctrl-C: stop every running command (its whole process group)."""
        with self._procs_lock:
            procs = list(self._procs.values())
        for sig, grace in ((signal.SIGINT, 2.0), (signal.SIGTERM, 2.0), (signal.SIGKILL, 0)):
            alive = [p for p in procs if p.poll() is None]
            for proc in alive:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while grace and time.monotonic() < deadline and any(p.poll() is None for p in alive):
                time.sleep(0.02)

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
                return StageResult(name, SKIP, OK, decision.reasons)
            self.reporter.stage_started(name, decision.action)
            if decision.action == RESTORE:
                self._restore(decision)
            elif decision.action == RUN_CACHE:
                self._restore_run(decision)
            else:
                return self._run(decision, started)
            return StageResult(name, decision.action, OK, decision.reasons,
                               decision.input_hash, time.monotonic() - started)
        except OperationError as exc:
            return StageResult(name, decision.action, FAILED, decision.reasons,
                               decision.input_hash, time.monotonic() - started, str(exc))
        except OSError as exc:  # e.g. a missing wdir, a full disk while preparing outputs
            where = f"{exc.filename}: " if exc.filename else ""
            return StageResult(name, decision.action, FAILED, decision.reasons,
                               decision.input_hash, time.monotonic() - started,
                               f"{where}{exc.strerror or exc}")

    def _restore(self, decision: Decision) -> None:
        """Inputs match the lock: put the locked outputs back from the cache."""
        assert decision.lock is not None
        changed = {r.path for r in decision.reasons}
        for out in decision.lock.outs:
            if out.path in changed:
                self._link_out(out.hash, out.path)

    def _restore_run(self, decision: Decision) -> None:
        """A run with these inputs was seen before: take its outputs, then commit."""
        assert decision.run_entry is not None
        cached = {o.path for o in decision.stage.outs if o.cache}
        for out in decision.run_entry["outs"]:
            if out["path"] in cached and out.get("cache", True):
                self._link_out(out["hash"], out["path"])
            # a non-cached output is only accepted when already on disk (see the planner)
        if not self.options.no_commit:
            self.committer.commit(decision.stage)

    def _link_out(self, digest: str, path: str, methods: list[str] | None = None) -> None:
        dest = self.project.root / path
        remove_path(dest)
        if digest.endswith(".dir"):
            self.cache.checkout_dir(digest, dest, methods or self.project.checkout,
                                    self.project.root)
        else:
            self.cache.link_out(digest, dest, methods or self.project.checkout, self.project.root)

    def _prepare_outs(self, decision: Decision) -> None:
        """Delete non-persist outputs; bring missing persist outputs back as copies."""
        locked = {o.path: o for o in decision.lock.outs} if decision.lock else {}
        root = self.project.root
        for out in decision.stage.outs:
            dest = root / out.path
            if not out.persist:
                remove_path(dest)
            elif not os.path.lexists(dest) and out.path in locked and self.cache.has(
                locked[out.path].hash
            ):
                self._link_out(locked[out.path].hash, out.path, ["copy"])
            dest.parent.mkdir(parents=True, exist_ok=True)

    def _run(self, decision: Decision, started: float) -> StageResult:
        stage, name = decision.stage, decision.name
        if decision.missing_deps:
            missing = ", ".join(repr(p) for p in decision.missing_deps)
            return StageResult(name, RUN, FAILED, decision.reasons, decision.input_hash, 0.0,
                               f"missing dependency {missing}")
        if decision.unreadable_deps:
            problems = "; ".join(f"{p}: {why}" for p, why in decision.unreadable_deps)
            return StageResult(name, RUN, FAILED, decision.reasons, decision.input_hash, 0.0,
                               f"dependency cannot be read ({problems})")
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

    def _run_commands(self, stage: Stage) -> int:
        """Run each command under /bin/sh -c in wdir; stop at the first failure."""
        assert self.output is not None
        env = {**os.environ, "PIVOTBUILD_ROOT": str(self.project.root),
               "PIVOTBUILD_STAGE": stage.name}
        cwd = self.project.root / stage.wdir
        for command in stage.cmd:
            if self._interrupted.is_set():
                return 130
            proc = subprocess.Popen(
                ["/bin/sh", "-c", command], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: Ctrl-C is ours to forward
            )
            with self._procs_lock:
                self._procs[stage.name] = proc
            assert proc.stdout is not None
            for raw in proc.stdout:
                self.output.line(stage.name, raw.decode("utf-8", "replace"))
            code = proc.wait()
            with self._procs_lock:
                self._procs.pop(stage.name, None)
            if code != 0:
                return code if code > 0 else 128 - code
        return 0


def remove_path(path: os.PathLike[str] | str) -> None:
    """Delete a file, symlink or directory tree (never following a symlink)."""
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path, onerror=_make_writable_and_retry)


def _make_writable_and_retry(function: Callable[..., Any], path: str, _exc: Any) -> None:
    # Outputs hardlinked from the cache are read-only, and so may be their dirs.
    os.chmod(os.path.dirname(path), 0o755)
    function(path)
