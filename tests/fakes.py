"""In-memory stand-ins for the planner's, executor's and commit writer's surroundings.

As Ninja's build tests run against a virtual file system, tests/test_plan.py,
tests/test_execute.py and tests/test_commit.py run the real Planner, Executor and
Committer against these: a workspace that is a dict (path → content), a hasher over it, a
lock store, a cache (objects and run cache), outputs placed from that cache, a runner whose
"commands" are Python functions over the workspace, a history and a listener. Nothing here
touches the disk or starts a process.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pivotbuild import dag
from pivotbuild.commit import Committer
from pivotbuild.config import Out, Project, Stage
from pivotbuild.execute import Executor, RunOptions, StageResult
from pivotbuild.hasher import PathDigest
from pivotbuild.lock import Lock, LockProblem, parse_lock
from pivotbuild.plan import Decision, Planner
from pivotbuild.runners import INTERRUPTED, Cancel, OutputSink, StageSpec

ROOT = "/virtual/project"  # never created: every path below it lives in Workspace.files


def digest_of(content: str) -> str:
    """The fake content hash of a file (32 hex digits, as real hashes have)."""
    return hashlib.blake2b(content.encode(), digest_size=16).hexdigest()


def stage(name: str, cmd: str | list[str] = "", deps: Sequence[str] = (),
          outs: Sequence[str | Out] = (), **fields: Any) -> Stage:
    outs_ = [o if isinstance(o, Out) else Out(path=o) for o in outs]
    return Stage(name=name, cmd=[cmd] if isinstance(cmd, str) else cmd, deps=list(deps),
                 outs=outs_, **fields)


def project(*stages: Stage, checkout: list[str] | None = None,
            pools: Mapping[str, int] | None = None) -> Project:
    extra: dict[str, Any] = {"checkout": checkout} if checkout is not None else {}
    if pools is not None:
        extra["pools"] = dict(pools)
    return Project(root=Path(ROOT), stages={s.name: s for s in stages}, **extra)


class Workspace:
    """The project's files: path → content; a path in ``unreadable`` exists but cannot be
    hashed. Thread-safe."""

    def __init__(self, files: Mapping[str, str] | None = None) -> None:
        self.files: dict[str, str] = dict(files or {})
        self.unreadable: set[str] = set()
        self.lock = threading.Lock()

    def write(self, path: str, content: str) -> None:
        with self.lock:
            self.files[path] = content

    def read(self, path: str) -> str:
        with self.lock:
            return self.files[path]

    def remove(self, path: str) -> None:
        with self.lock:
            self.files.pop(path, None)


class FakeHasher:
    """plan.PathHasher over a Workspace (absolute paths below ROOT); counts what it hashed."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.hashed: list[str] = []

    def hash_paths(self, paths: Sequence[str]) -> list[PathDigest]:
        out = []
        for given in paths:
            rel = given[len(ROOT) + 1:]
            self.hashed.append(rel)
            with self.workspace.lock:
                content = self.workspace.files.get(rel)
                unreadable = rel in self.workspace.unreadable
            if unreadable:
                out.append(PathDigest(given, errors=[(given, "Permission denied")]))
            elif content is None:
                out.append(PathDigest(given, missing=True,
                                      errors=[(given, "No such file or directory")]))
            else:
                out.append(PathDigest(given, digest_of(content), len(content)))
        return out


class FakeLocks:
    """plan.LockStore in memory. Locks are kept as the text a lock file would hold (and
    parsed back when read), so a lock the real format would refuse fails here too."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}
        self.writes: list[str] = []  # stage names, one per lock actually (re)written
        self.lock = threading.Lock()

    def read_lock(self, name: str) -> Lock | LockProblem | None:
        text = self.texts.get(name)
        if text is None:
            return None
        if text == "garbage":
            return LockProblem(Path(f"locks/{name}.json"), f"locks/{name}.json: not JSON")
        return parse_lock(text, name)

    def write_lock(self, lock: Lock) -> bool:
        text = lock.to_json()
        parse_lock(text, lock.stage)
        with self.lock:
            if self.texts.get(lock.stage) == text:
                return False
            self.texts[lock.stage] = text
            self.writes.append(lock.stage)
        return True

    def get(self, name: str) -> Lock:
        found = self.read_lock(name)
        assert isinstance(found, Lock), found
        return found


class FakeObjects(dict[str, str]):
    """store.objects.ObjectStore as the planner and the committer use it: hash → content.
    ``fail_store``: paths whose storing raises OSError."""

    def __init__(self, workspace: Workspace) -> None:
        super().__init__()
        self.workspace = workspace
        self.fail_store: set[str] = set()
        self.lock = threading.Lock()

    def has(self, digest: str) -> bool:
        return digest in self

    def check_output(self, digest: str, shown: str, remove: bool = True
                     ) -> list[tuple[str, str]]:
        return []

    def store_file(self, src: Path, digest: str, link: bool = False,
                   existing: list[str] | None = None, shown: str | None = None) -> None:
        rel = str(src)[len(ROOT) + 1:]
        if rel in self.fail_store:
            raise OSError(28, "No space left on device", str(src))
        content = self.workspace.read(rel)
        assert digest_of(content) == digest, f"{rel} changed after it was hashed"
        with self.lock:
            self[digest] = content


class FakeRuns(dict[str, dict[str, Any]]):
    """store.runcache.RunCache as the committer uses it: input hash → entry, built as the real
    one builds it (runcache.new_entry: runs with different discovered deps kept side by side);
    ``get`` is dict.get."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def put(self, input_hash: str, outs: Iterable[Mapping[str, Any]],
            discovered: Iterable[Mapping[str, Any]] | None = None) -> bool:
        from pivotbuild.store.runcache import new_entry

        with self.lock:
            before = self.get(input_hash)
            entry = new_entry(input_hash, outs, discovered,
                              None if discovered is None else before)
            self[input_hash] = entry
        return entry != before


class FakeProjects:
    """store.registry.Registry: nothing to record in memory."""

    def register(self, root: Path) -> None:
        pass


class FakePlacer:
    """store.place.Placer as the committer uses it: linking files back to objects the cache
    had already, which FakeObjects never reports."""

    def link_file(self, hash: str, dest: Path, methods: Sequence[str],
                  executable: bool | None = None, shown: str | None = None) -> str:
        raise AssertionError(f"{dest}: nothing is linked back in memory")


class FakeCache:
    """store.Cache in memory: ``objects`` (hash → content) and ``runs`` (the run cache,
    input hash → entry)."""

    def __init__(self, workspace: Workspace) -> None:
        self.objects = FakeObjects(workspace)
        self.runs = FakeRuns()
        self.projects = FakeProjects()
        self.fail_store = self.objects.fail_store

    def lookup(self, input_hash: str, stage_name: str) -> dict[str, Any] | None:
        """plan.RunCacheLookup over this run cache."""
        return self.runs.get(input_hash)


class FakeOutputs:
    """execute.Outputs over a Workspace and a FakeCache."""

    def __init__(self, workspace: Workspace, cache: FakeCache) -> None:
        self.workspace = workspace
        self.cache = cache
        self.broken: set[str] = set()  # object hashes that turn out corrupt when placed
        self.placed: list[str] = []  # out paths brought back from the cache

    def prepare(self, decision: Decision) -> None:
        for out in decision.stage.outs:
            if not out.persist:
                self.workspace.remove(out.path)

    def _place(self, digest: str, path: str) -> bool:
        if digest in self.broken or digest not in self.cache.objects:
            return False
        self.workspace.write(path, self.cache.objects[digest])
        self.placed.append(path)
        return True

    def restore(self, decision: Decision) -> bool:
        assert decision.lock is not None
        changed = {r.path for r in decision.reasons}
        return all(self._place(o.hash, o.path) for o in decision.lock.outs if o.path in changed)

    def restore_run(self, decision: Decision) -> bool:
        assert decision.run_entry is not None
        return all(self._place(o["hash"], o["path"]) for o in decision.run_entry["outs"]
                   if o.get("cache", True))


#: A stage's "commands": called with the workspace and a function that prints a line;
#: returns the exit status.
Script = Callable[[Workspace, Callable[[str], None]], int]


class FakeRunner:
    """runners.StageRunner whose stages are Python functions over the workspace."""

    def __init__(self, workspace: Workspace, scripts: Mapping[str, Script]) -> None:
        self.workspace = workspace
        self.scripts = dict(scripts)
        self.ran: list[str] = []
        self.specs: dict[str, StageSpec] = {}
        self.opened = self.closed = 0
        self.lock = threading.Lock()
        self.cancelled = threading.Event()
        self.events: list[tuple[str, str]] = []  # ("start" | "end", stage), in order
        self.consoles: list[str] = []  # stages whose spec asked for the terminal

    def open(self, cancel: Cancel) -> None:
        self.opened += 1
        cancel.on_cancel(self.cancelled.set)

    def run(self, spec: StageSpec, output: OutputSink, cancel: Cancel) -> int:
        if cancel.is_set():
            return INTERRUPTED
        with self.lock:
            self.ran.append(spec.name)
            self.specs[spec.name] = spec
            self.events.append(("start", spec.name))
            if spec.console:
                self.consoles.append(spec.name)
        try:
            code = self.scripts[spec.name](self.workspace, output)
        finally:
            with self.lock:
                self.events.append(("end", spec.name))
        return INTERRUPTED if cancel.is_set() else code

    def most_at_once(self, names: Iterable[str]) -> int:
        """The most of these stages that were ever running at the same time."""
        chosen, now, most = set(names), 0, 0
        for event, name in self.events:
            if name in chosen:
                now += 1 if event == "start" else -1
                most = max(most, now)
        return most

    def close(self) -> None:
        self.closed += 1


class FakeHistory:
    """execute.History: the runs recorded, as (stage, status, input hash, committed)."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str, str | None, bool]] = []
        self.lock = threading.Lock()

    def add_run(self, stage: str, started_at: float, duration_s: float, status: str,
                input_hash: str | None, committed: bool) -> int:
        with self.lock:
            self.runs.append((stage, status, input_hash, committed))
            return len(self.runs)


class FakeListener:
    """execute.Listener that keeps what it was told."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.started: list[tuple[str, str]] = []
        self.finished: list[StageResult] = []
        self.was_interrupted = False
        self.on_finished: Callable[[StageResult], None] | None = None
        self.lock = threading.Lock()
        self.console_held: list[str] = []  # stages that held the terminal, in order
        self.holding: str | None = None  # the one holding it now

    def start(self, total: int) -> None:
        pass

    def decided(self, decision: Decision) -> None:
        pass

    def stage_started(self, name: str, action: str) -> None:
        with self.lock:
            self.started.append((name, action))

    def stage_finished(self, result: StageResult) -> None:
        self.finished.append(result)
        if self.on_finished is not None:
            self.on_finished(result)

    def interrupted(self) -> None:
        self.was_interrupted = True

    def stage_lines(self, stage: str, prefix: bool, stream: Any) -> OutputSink:
        def sink(text: str) -> None:
            with self.lock:
                self.lines.append(f"[{stage}] {text}" if prefix else text)
        return sink

    @contextlib.contextmanager
    def console(self, stage: str) -> Iterator[None]:
        with self.lock:
            self.console_held.append(stage)
            self.holding = stage
        try:
            yield
        finally:
            with self.lock:
                self.holding = None


class World:
    """A project and everything around it, in memory."""

    def __init__(self, *stages: Stage, files: Mapping[str, str] | None = None,
                 checkout: list[str] | None = None,
                 pools: Mapping[str, int] | None = None) -> None:
        self.project = project(*stages, checkout=checkout, pools=pools)
        self.graph = dag.build_graph(self.project)
        self.workspace = Workspace(files)
        self.hasher = FakeHasher(self.workspace)
        self.locks = FakeLocks()
        self.cache = FakeCache(self.workspace)
        self.committer = Committer(self.project, self.hasher, self.cache, self.locks,
                                   FakePlacer())
        self.history = FakeHistory()
        self.listener = FakeListener()
        self.outputs = FakeOutputs(self.workspace, self.cache)
        self.runner: FakeRunner | None = None  # the last repro's

    def restage(self, *stages: Stage) -> None:
        """Replace these stages (as an edited pivot.toml would) and build the graph again."""
        for new in stages:
            self.project.stages[new.name] = new
        self.graph = dag.build_graph(self.project)

    def planner(self, run_cache: bool = True) -> Planner:
        return Planner(self.project, self.graph, self.hasher, self.locks, self.cache.objects,
                       self.cache.lookup if run_cache else None)

    def plan(self, names: Sequence[str] | None = None, force: Iterable[str] = (),
             run_cache: bool = True) -> dict[str, Decision]:
        names = list(names) if names is not None else dag.topological(self.graph)
        return {d.name: d for d in self.planner(run_cache).plan(names, force=force)}

    def commit(self, *names: str) -> None:
        """Record the stages as they are in the workspace (as `pivotbuild commit` does)."""
        for name in names:
            self.committer.commit(self.project.stages[name])

    def repro(self, scripts: Mapping[str, Script], *, jobs: int = 1, keep_going: bool = False,
              no_commit: bool = False, force: Iterable[str] = (), run_cache: bool = True,
              names: Sequence[str] | None = None) -> tuple[dict[str, StageResult], FakeRunner]:
        """Plan, then execute with a FakeRunner (kept as ``self.runner``); the results by
        stage name."""
        runner = self.runner = FakeRunner(self.workspace, scripts)
        planner = self.planner(run_cache)
        names = list(names) if names is not None else dag.topological(self.graph)
        forced = frozenset(force)
        decisions = planner.plan(names, force=forced)
        options = RunOptions(jobs=jobs, keep_going=keep_going, no_commit=no_commit,
                             forced=forced)
        executor = Executor(self.project, self.graph, planner, self.committer, self.outputs,
                            runner, self.history, self.listener, options)
        return {r.name: r for r in executor.execute(decisions)}, runner
