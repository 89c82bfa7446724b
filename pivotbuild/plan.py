"""Staleness decisions and their reasons: per stage skip | restore | run-cache | run.

Reasons are recorded where each decision is made (as Ninja's ``-d explain``),
so ``status``, ``status --json``, ``repro --explain`` and ``repro --dry-run
--json`` all print the same list. The planner never reads an unchanged file:
deps and outs are hashed through the hasher it is given (hasher.Hasher and its
stat memo), all paths of a plan in one batch. Everything it reads is given at
construction (hasher, lock store, object store, run-cache lookup), so it runs in
memory in tests/test_plan.py.

A stage is compared with its lock:
- ``cmd`` and the values of its params;
- its deps: added, removed, missing or changed (by content hash);
- its outs: added or removed (as declared), missing or changed (on disk).
Reordering deps, outs or params, or toggling ``cache``, ``desc`` or
``frozen``, changes nothing, because none of these comparisons sees order or
flags. (What is cached is read from pivot.toml wherever it matters: restoring,
checkout, verify, transfers; see ``cached_outs``.)

Discovered deps (SPEC §9, §13: the lock's ``discovered``, for a stage with a ``depfile`` or
``discover``) are hashed in the same batch as the declared ones and checked beside the input
hash, which cannot include them (they are only known after a run): a changed or missing one is
``dep-changed`` / ``dep-missing`` with its path and the detail ``discovered``. They add no
edges and never block a run (a missing one is simply no longer read, or the run fails as it
would). A stage that discovers whose lock has no list yet is stale (``dep-added``, detail
"discovered deps not recorded"); one that no longer discovers, with a list in its lock, too
(``dep-removed``). A run-cache entry may record several runs with different discovered
contents (store/runcache.py): the first whose discovered deps all still have their recorded
hashes is used; for a stage that discovers, never a run that recorded none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pivotbuild.errors import OperationError

if TYPE_CHECKING:  # lock.py (pydantic) loads on first use: report.py imports this vocabulary
    from pivotbuild.config_models import Project, Stage
    from pivotbuild.dag import StageGraph
    from pivotbuild.hasher import PathDigest
    from pivotbuild.lock import Lock, LockedOut, LockProblem

# Statuses (what `status` shows), actions (what `repro` does) and results (how a stage's
# part in a repro ended: SPEC §4 `repro --json`).
UP_TO_DATE, STALE, FROZEN = "up-to-date", "stale", "frozen"
SKIP, RESTORE, RUN_CACHE, RUN = "skip", "restore", "run-cache", "run"
OK, FAILED, NOT_RUN = "ok", "failed", "not-run"

# Reasons that only concern outputs: the inputs still match the lock.
_OUTPUT_ONLY = {"out-missing", "out-changed"}


# ---- what the planner is given ----------------------------------------------------------------


class PathHasher(Protocol):
    """Hashes paths (absolute) of the workspace: hasher.Hasher, or a fake."""

    def hash_paths(self, paths: Sequence[str]) -> list[PathDigest]: ...


class LockStore(Protocol):
    """The stages' locks, by stage name: read by the planner, written by the commit writer."""

    def read_lock(self, name: str) -> Lock | LockProblem | None: ...

    def write_lock(self, lock: Lock) -> bool:
        """Write ``lock`` (atomically); False if it already held exactly these bytes."""
        ...


class ObjectStore(Protocol):
    """What the planner asks of the cache: is this object there?"""

    def has(self, digest: str) -> bool: ...


#: The run cache as the planner reads it: (input hash, stage name) → the entry recorded for a
#: run with that input hash, or None. `repro --pull` wraps the local lookup with one that asks
#: the remote on a miss (pipeline.py).
RunCacheLookup = Callable[[str, str], "Mapping[str, Any] | None"]


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a stage is stale. ``kind`` is one of SPEC §4's reason kinds (plus
    ``forced`` for ``repro -f``); the other fields say what it concerns."""

    kind: str
    path: str | None = None
    key: str | None = None
    stage: str | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, str]:
        out = {"kind": self.kind}
        for name in ("path", "key", "stage", "detail"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def __str__(self) -> str:
        text = self.kind.replace("-", " ")
        target = self.path or self.key or self.stage
        text = f"{text}: {target}" if target else text
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(slots=True)
class Decision:
    """The planner's verdict on one stage."""

    name: str
    stage: Stage
    status: str
    action: str
    reasons: list[Reason] = field(default_factory=list)
    lock: Lock | None = None
    lock_problem: str | None = None
    input_hash: str | None = None
    deps: dict[str, PathDigest] = field(default_factory=dict)
    outs: dict[str, PathDigest] = field(default_factory=dict)
    discovered: dict[str, PathDigest] = field(default_factory=dict)  # the lock's, now
    run_entry: dict[str, Any] | None = None  # the run-cache entry's chosen run (its outs and
    # discovered deps), for action run-cache

    @property
    def missing_deps(self) -> list[str]:
        return [path for path, digest in self.deps.items() if digest.missing]

    @property
    def unreadable_deps(self) -> list[tuple[str, str]]:
        """(path, problem) of deps that exist but cannot be hashed."""
        return [(path, d.errors[0][1] if d.errors else "cannot be hashed")
                for path, d in self.deps.items() if d.hash is None and not d.missing]

    @property
    def upstream_stale(self) -> bool:
        return any(r.kind == "upstream-stale" for r in self.reasons)


def _same_value(a: Any, b: Any) -> bool:
    # Compare as the lock stores them, so 1 and true (or 1 and 1.0) differ.
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


class Planner:
    """Decides, stage by stage, what ``repro`` must do and why.

    Given at construction, never changed afterwards: the project and its graph, a hasher
    (``PathHasher``), the locks (``LockStore``), the cache's objects (``ObjectStore``) and
    the run cache (``RunCacheLookup``; None: the run cache is not used, as with
    ``--no-run-cache``). The planner keeps one digest per path, hashed at most once unless
    asked again (``hash_paths``, after a stage ran)."""

    def __init__(self, project: Project, graph: StageGraph, hasher: PathHasher,
                 locks: LockStore, objects: ObjectStore, run_cache: RunCacheLookup | None
                 ) -> None:
        self.project = project
        self.graph = graph
        self._hasher = hasher
        self._locks = locks
        self._objects = objects
        self._run_cache = run_cache
        self._root = str(project.root)
        self._digests: dict[str, PathDigest] = {}
        self._read_ahead: dict[str, Lock | LockProblem | None] = {}  # plan(): used once

    # ---- hashing ----------------------------------------------------------------

    def hash_paths(self, paths: Iterable[str]) -> None:
        """Hash (or re-hash) these project-relative paths in one batch."""
        wanted = sorted(set(paths))
        if not wanted:
            return
        digests = self._hasher.hash_paths(
            [f"{self._root}/{p}" if p != "." else self._root for p in wanted])
        for path, digest in zip(wanted, digests, strict=True):
            digest.path = path
            self._digests[path] = digest

    def stage_paths(self, stage: Stage, lock: Lock | LockProblem | None = None) -> list[str]:
        """The paths a decision on ``stage`` hashes: its deps and outs, and the discovered
        deps of ``lock`` (its lock, when known)."""
        found = [*stage.deps, *(out.path for out in stage.outs)]
        discovered = getattr(lock, "discovered", None)
        return found + [d.path for d in discovered] if discovered else found

    def digest(self, path: str, strict: bool = True) -> PathDigest:
        """The digest of a project-relative path (hashed now if it was not yet); a
        missing path has ``missing`` set; any other problem (a symlink out of the
        project, an unreadable file) raises OperationError if ``strict``, else the
        digest is returned without a hash and with its ``errors``."""
        if path not in self._digests:
            self.hash_paths([path])
        digest = self._digests[path]
        if strict and digest.hash is None and not digest.missing:
            raise OperationError(digest.problem(self._root))
        return digest

    # ---- deciding ---------------------------------------------------------------

    def read_lock(self, name: str) -> Lock | LockProblem | None:
        """Stage ``name``'s lock, from the lock store (or as plan() read it just before)."""
        if name in self._read_ahead:
            return self._read_ahead.pop(name)
        return self._locks.read_lock(name)

    def decide(self, name: str, *, stale_upstream: Iterable[str] = (), force: bool = False
               ) -> Decision:
        """Decide one stage from the workspace as it is now."""
        from pivotbuild.lock import LockProblem

        stage: Stage = self.graph.stage(name)
        if stage.frozen:
            return Decision(name, stage, FROZEN, SKIP)
        decision = Decision(name, stage, UP_TO_DATE, SKIP)
        reasons = decision.reasons
        decision.deps = {path: self.digest(path, strict=False) for path in stage.deps}
        # An output that cannot be hashed (say, replaced by a symlink out of the
        # project) is simply not what the lock says: changed, to be replaced.
        decision.outs = {out.path: self.digest(out.path, strict=False) for out in stage.outs}
        found = self.read_lock(name)
        if isinstance(found, LockProblem):
            decision.lock_problem = found.message
            reasons.append(Reason("never-run", detail="the lock is invalid"))
        elif found is None:
            reasons.append(Reason("never-run"))
        else:
            decision.lock = found
            reasons.extend(self._compare(stage, found, decision))
            reasons.extend(self._compare_discovered(stage, found, decision))
        if found is None or isinstance(found, LockProblem):
            reasons.extend(Reason("dep-missing", path=p, detail=glob_hint(p))
                           for p in decision.missing_deps)
        reasons.extend(Reason("upstream-stale", stage=up) for up in stale_upstream)
        if stage.always_changed:
            reasons.append(Reason("always-changed"))
        if reasons:
            decision.status = STALE
            decision.action = self._action(decision)
        if force:
            decision.action = RUN
            if not reasons:
                reasons.append(Reason("forced"))
        if decision.input_hash is None and not decision.upstream_stale and not (
            decision.missing_deps or decision.unreadable_deps
        ):
            decision.input_hash = self.input_hash(decision)
        return decision

    def _compare(self, stage: Stage, lock: Lock, decision: Decision) -> list[Reason]:
        reasons: list[Reason] = []
        if list(lock.cmd) != list(stage.cmd):
            reasons.append(Reason("cmd-changed"))
        for key in sorted(set(lock.params) | set(stage.param_values)):
            if (key not in lock.params or key not in stage.param_values
                    or not _same_value(lock.params[key], stage.param_values[key])):
                reasons.append(Reason("params-changed", key=key))
        reasons += _compare_paths("dep", decision.deps, {d.path: d.hash for d in lock.deps})
        reasons += _compare_paths("out", decision.outs, {o.path: o.hash for o in lock.outs})
        return reasons

    def _compare_discovered(self, stage: Stage, lock: Lock, decision: Decision
                            ) -> list[Reason]:
        from pivotbuild.discovery import discovers
        from pivotbuild.paths import covered

        if not discovers(stage):
            if lock.discovered is None:
                return []
            return [Reason("dep-removed", detail="discovered deps no longer recorded")]
        if lock.discovered is None:
            return [Reason("dep-added", detail="discovered deps not recorded")]
        declared = set(stage.deps)
        entries = [d for d in lock.discovered if not covered(d.path, declared)]
        self.hash_paths(d.path for d in entries if d.path not in self._digests)
        reasons = []
        for entry in entries:
            digest = decision.discovered[entry.path] = self._digests[entry.path]
            if digest.missing:
                reasons.append(Reason("dep-missing", path=entry.path, detail="discovered"))
            elif digest.hash != entry.hash:
                reasons.append(Reason("dep-changed", path=entry.path, detail="discovered"))
        return reasons

    def _action(self, decision: Decision) -> str:
        stage = decision.stage
        if (decision.upstream_stale or decision.missing_deps or decision.unreadable_deps
                or stage.always_changed):
            return RUN
        kinds = {r.kind for r in decision.reasons}
        if decision.lock is not None and kinds <= _OUTPUT_ONLY and self._restorable(decision):
            return RESTORE
        decision.input_hash = self.input_hash(decision)
        if self._run_cache is not None and not any(out.persist for out in stage.outs):
            entry = self._run_cache(decision.input_hash, decision.name)
            chosen = None if entry is None else self._usable_run(decision, entry)
            if chosen is not None:
                decision.run_entry = chosen
                return RUN_CACHE
        return RUN

    def _usable_run(self, decision: Decision, entry: Mapping[str, Any]
                    ) -> dict[str, Any] | None:
        """The newest run of a run-cache entry whose discovered deps all still have their
        recorded hashes and whose outputs can all be had, as ``{"input_hash", "outs",
        "discovered"}``; None if there is none."""
        from pivotbuild.discovery import discovers
        from pivotbuild.store.runcache import variants

        try:
            runs = variants(entry)
        except (KeyError, TypeError):
            return None
        wanted = discovers(decision.stage)
        self.hash_paths(d["path"] for run in runs for d in run["discovered"] or ()
                        if d["path"] not in self._digests)
        for run in runs:
            found = run["discovered"]
            if found is None and wanted:
                continue  # that run recorded no discovered deps: which it read is unknown
            if any(self._digests[d["path"]].hash != d["hash"] for d in found or ()):
                continue
            if self._run_entry_usable(decision, run):
                return {"input_hash": decision.input_hash, "outs": run["outs"],
                        "discovered": found}
        return None

    def _restorable(self, decision: Decision) -> bool:
        """Can every changed or missing out come back from the cache? Only outs that
        pivot.toml caches can (the lock's flag may be stale: SPEC §8)."""
        assert decision.lock is not None
        locked = {o.path: o for o in decision.lock.outs}
        cached = cached_paths(decision.stage)
        for reason in decision.reasons:
            out = locked[reason.path] if reason.path else None
            if out is None or out.path not in cached or not self._objects.has(out.hash):
                return False
        return True

    def cached_outs(self, name: str, lock: Lock) -> list[LockedOut]:
        """The outs of ``lock`` (stage ``name``'s) that pivot.toml says are cached: whether
        an output is cached is decided by the configuration, never by the lock. An out the
        stage no longer declares (or a stage no longer in pivot.toml) is not cached."""
        if name not in self.graph:
            return []
        cached = cached_paths(self.graph.stage(name))
        return [out for out in lock.outs if out.path in cached]

    def _run_entry_usable(self, decision: Decision, entry: Mapping[str, Any]) -> bool:
        """Every output of that run can be had: cached ones from the cache, and
        non-cached ones (never stored) only if the workspace already holds them."""
        outs = {o.get("path"): o for o in entry.get("outs", []) if isinstance(o, dict)}
        for out in decision.stage.outs:
            recorded = outs.get(out.path)
            if recorded is None or not isinstance(recorded.get("hash"), str):
                return False
            if out.cache and recorded.get("cache", True):
                if not self._objects.has(recorded["hash"]):
                    return False
            elif decision.outs[out.path].hash != recorded["hash"]:
                return False
        return len(outs) == len(decision.stage.outs)

    def input_hash(self, decision: Decision) -> str:
        return stage_input_hash(decision.stage,
                                {path: d.hash for path, d in decision.deps.items()})

    def plan(self, names: list[str], *, force: Iterable[str] = ()) -> list[Decision]:
        """Decide every stage of names (in topological order)."""
        forced = set(force)
        selected = set(names)
        stages = {n: self.graph.stage(n) for n in names}
        # Every lock first, so that their discovered deps are hashed in the one batch too.
        self._read_ahead = {n: self._locks.read_lock(n) for n in names if not stages[n].frozen}
        self.hash_paths(p for n in names
                        for p in self.stage_paths(stages[n], self._read_ahead.get(n)))
        decisions: dict[str, Decision] = {}
        for name in names:
            stale_up = [
                up for up in self.graph.predecessors(name)
                if up in selected and decisions[up].action != SKIP
            ]
            decisions[name] = self.decide(name, stale_upstream=stale_up, force=name in forced)
        self._read_ahead = {}  # a later decision (after an upstream ran) reads its lock again
        return [decisions[n] for n in names]


def stage_input_hash(stage: Stage, dep_hashes: Mapping[str, str | None]) -> str:
    """The input hash (SPEC §2) of a run of ``stage`` whose deps have these hashes."""
    from pivotbuild import lock as lockfile

    return lockfile.input_hash(
        stage.cmd, stage.param_values, [(path, h or "") for path, h in dep_hashes.items()],
        [out.path for out in stage.outs], stage.wdir,
    )


def cached_paths(stage: Stage) -> frozenset[str]:
    """The paths of the stage's outs that are stored in the cache (``cache = true``)."""
    return frozenset(out.path for out in stage.outs if out.cache)


GLOB_HINT = "globs are not expanded in deps; use foreach = { glob = ... }"


def glob_hint(path: str) -> str | None:
    """For a dep that is missing: GLOB_HINT when its path holds a glob character (a user who
    wrote ``deps = ["src/*.c"]``), else None."""
    return GLOB_HINT if any(c in path for c in "*?[") else None


def _compare_paths(kind: str, current: Mapping[str, PathDigest], locked: Mapping[str, str]
                   ) -> list[Reason]:
    """<kind>-added, -missing, -changed (by content hash) and -removed, in path order."""
    reasons = []
    for path, digest in sorted(current.items()):
        hint = glob_hint(path) if kind == "dep" and digest.missing else None
        if path not in locked:
            reasons.append(Reason(f"{kind}-added", path=path, detail=hint))
        elif digest.missing:
            reasons.append(Reason(f"{kind}-missing", path=path, detail=hint))
        elif digest.hash != locked[path]:
            problem = digest.errors[0][1] if digest.hash is None and digest.errors else None
            reasons.append(Reason(f"{kind}-changed", path=path, detail=problem))
    reasons.extend(Reason(f"{kind}-removed", path=p) for p in sorted(set(locked) - set(current)))
    return reasons

