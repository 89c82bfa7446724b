"""``import-dvc`` end to end: convert, write pivot.toml, commit what dvc.lock proves, track.

The steps, in order (SPEC §10):

1. ``convert`` reads the DVC project (a ConfigError, exit 2, writes nothing); an existing
   pivot.toml is a UsageError (exit 2) unless ``force``.
2. Under the project lock (held to the end), pivot.toml is written (atomically), then
   loaded as every command loads it; a pipeline pivotbuild refuses (a ``*.pvt`` output, say)
   puts the previous file back and exits 2.
3. Each stage's workspace deps and outs are checked against the md5s dvc.lock recorded
   (hashes.py: one md5 batch for all single files, one per directory or DVC's cached ``.dir``
   listing); its params and cmd against dvc.lock too (convert.py).
   The stages that match are committed by the one commit writer (``Pipeline.commit``, as
   ``pivotbuild commit STAGE…`` would), in topological order, so their locks, cache objects,
   run-cache entries and history are exactly what pivotbuild itself writes. The others stay
   stale, with the reason the check gave.
4. A ``dvc add`` path whose data matches its ``.dvc`` file is tracked (tracked.track writes
   ``PATH.pvt`` and stores the data); one that does not is listed, not tracked.

DVC's own files (``.dvc/``, dvc.yaml, dvc.lock, ``*.dvc``) are left where they are.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pivotbuild.atomic import write_atomic
from pivotbuild.dvc.convert import DVC_YAML, convert
from pivotbuild.dvc.hashes import Md5Memo
from pivotbuild.dvc.model import Conversion, check_stage, check_tracked
from pivotbuild.errors import ConfigError, PivotError, UsageError
from pivotbuild.paths import PROJECT_FILE


@dataclass
class ImportResult:
    """What ``import_dvc`` did; ``ok`` is False (exit 1) when something was not carried over."""

    conversion: Conversion
    committed: list[str] = field(default_factory=list)
    stale: list[tuple[str, list[str]]] = field(default_factory=list)  # (stage, why)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (stage, commit error)
    tracked: list[str] = field(default_factory=list)
    not_tracked: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    track_failed: list[tuple[str, str]] = field(default_factory=list)  # (path, error)
    renamed: dict[str, str] = field(default_factory=dict)  # DVC name → pivotbuild name

    @property
    def ok(self) -> bool:
        return not (self.conversion.not_converted or self.failed or self.track_failed)

    def to_dict(self) -> dict[str, Any]:
        conv = self.conversion
        return {
            "ok": self.ok,
            "written": PROJECT_FILE,
            "committed": self.committed,
            "stale": [{"stage": s, "reasons": r} for s, r in self.stale],
            "failed": [{"stage": s, "error": e} for s, e in self.failed],
            "tracked": self.tracked,
            "not_tracked": [{"path": p, "reason": r} for p, r in self.not_tracked],
            "track_failed": [{"path": p, "error": e} for p, e in self.track_failed],
            "renamed": self.renamed,
            "not_converted": [{"what": n.what, "reason": n.reason}
                              for n in conv.not_converted],
            "notes": conv.notes,
        }


def find_dvc_root(start: Path) -> Path:
    """The nearest directory from ``start`` upward that holds ``.dvc/`` (DVC's root), else
    ``start`` itself when it holds dvc.yaml; UsageError when neither is found."""
    for directory in (start, *start.parents):
        if (directory / ".dvc").is_dir():
            return directory
    if (start / DVC_YAML).is_file():
        return start
    raise UsageError(f"no DVC project here: neither .dvc/ in {start} or above, nor "
                     f"{DVC_YAML} in {start}")


def import_dvc(root: Path, *, force: bool = False, wait: float | None = None,
               jobs: int = 0) -> ImportResult:
    """Import the DVC project at ``root`` (see the module docstring)."""
    target = root / PROJECT_FILE
    if target.exists() and not force:
        raise UsageError(f"{target}: already exists; import-dvc would overwrite it (use "
                         "--force to replace it)")
    conversion = convert(root)
    result = ImportResult(conversion)
    result.renamed = {c.dvc_stage: c.stage for c in conversion.checks
                      if c.dvc_stage != c.stage}

    from pivotbuild import snapshot
    from pivotbuild.paths import STATE_DIR, ensure_state_dir
    from pivotbuild.pipeline import opened
    from pivotbuild.plan import STALE
    from pivotbuild.projectlock import project_lock

    fresh = not (root / STATE_DIR).exists()
    why: dict[str, list[str]] = {}
    with project_lock(ensure_state_dir(root), wait):  # no other writer while pivot.toml changes
        try:
            _write_checked(root, target, conversion.toml)
        except ConfigError:
            if fresh:  # made only to hold the lock: a refused import leaves nothing behind
                shutil.rmtree(root / STATE_DIR, ignore_errors=True)
            raise
        with opened(root, jobs) as pipeline:
            memo = Md5Memo()
            memo.prefetch(root, [e for c in conversion.checks for e in (*c.deps, *c.outs)]
                          + [t.entry for t in conversion.tracked], jobs)
            proven: list[str] = []
            for check in conversion.checks:
                if check.stage not in pipeline.graph:
                    why[check.stage] = [f"{check.stage}: not in the written {PROJECT_FILE}"]
                    continue
                problems = check_stage(root, check, memo)
                if problems:
                    why[check.stage] = problems
                else:
                    proven.append(check.stage)
            if proven:
                names = pipeline.select(proven, single_item=True)
                outcome = pipeline.commit(names, explicit=True)
                result.committed = outcome.committed
                result.failed = outcome.failed
            _track(pipeline, conversion, memo, result)
    # Planned again from a freshly opened project: its no-op snapshot (refreshed by status)
    # is keyed on the locks as the commits above left them, so the next repro can use it.
    with opened(root, jobs) as pipeline:
        for decision in pipeline.status(pipeline.select([])):
            if decision.status == STALE:
                reasons = why.get(decision.name) or [str(r) for r in decision.reasons]
                result.stale.append((decision.name, reasons))
        if result.tracked:
            snapshot.forget(str(pipeline.root))  # as `track` does: it knows no tracked paths
    return result


def _write_checked(root: Path, target: Path, text: str) -> None:
    """Write pivot.toml, then load it as every command will; if that fails, put back what was
    there before (nothing, or the file --force replaces) and raise a ConfigError (exit 2)
    that says the DVC pipeline is what must change."""
    from pivotbuild.config import load_project

    before = target.read_bytes() if target.exists() else None
    write_atomic(target, text.encode("utf-8"))
    try:
        load_project(root)
    except ConfigError as exc:
        if before is None:
            target.unlink(missing_ok=True)
        else:
            write_atomic(target, before)
        raise ConfigError(DVC_YAML, "", f"converts to a pivot.toml that pivotbuild refuses "
                          f"({exc}); nothing was written") from None


def _track(pipeline: Any, conversion: Conversion, memo: Md5Memo, result: ImportResult) -> None:
    from pivotbuild import tracked

    root = pipeline.root
    for item in conversion.tracked:
        problem = check_tracked(root, item, memo)
        if problem is not None:
            why = (f"{problem} (as {item.dvc_file} records it); 'pivotbuild track' records "
                   "the workspace as it is")
            result.not_tracked.append((item.path, why))
            continue
        try:
            tracked.track(pipeline.project, [item.path], pipeline.hasher, pipeline.cache)
        except PivotError as exc:
            result.track_failed.append((item.path, str(exc)))
            continue
        result.tracked.append(item.path)


__all__ = ["ImportResult", "find_dvc_root", "import_dvc"]
