"""clean: the workspace outputs of stages deleted, as `make clean` would, never outside the project.

Each path is deleted only after checking that its directory resolves inside the project
(SPEC §8, paths.remove); the cache and the state directory are never touched, so a
following repro restores the outputs from the cache.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pivotbuild import paths
from pivotbuild.errors import OperationError

if TYPE_CHECKING:
    from pivotbuild.config import Project, Stage


@dataclass(slots=True)
class CleanReport:
    removed: list[str] = field(default_factory=list)  # paths, in stage order
    directories: list[str] = field(default_factory=list)  # left empty, then removed
    kept_frozen: list[str] = field(default_factory=list)  # stages not named, frozen
    problems: list[str] = field(default_factory=list)


def clean(project: Project, stages: Iterable[Stage], *, dry_run: bool,
          named: frozenset[str] = frozenset()) -> CleanReport:
    """Delete the workspace outputs of ``stages`` (and a depfile a failed run left behind),
    then the directories that held them if that left them empty. A frozen stage (which
    never runs to make them again) is kept unless it is in ``named``. Nothing is deleted
    whose directory resolves outside the project, nor the cache or the state directory."""
    root = project.root
    report = CleanReport()
    guarded = [os.path.realpath(project.state_dir), os.path.realpath(project.cache_dir)]
    declared = {p for s in project.stages.values()
                for p in [*s.deps, *(o.path for o in s.outs)]}
    parents: set[str] = set()
    for stage in stages:
        if stage.frozen and stage.name not in named:
            report.kept_frozen.append(stage.name)
            continue
        wanted = [o.path for o in stage.outs]
        if stage.depfile and stage.depfile not in wanted:
            wanted.append(stage.depfile)
        for rel in wanted:
            try:
                where = paths.resolve(root, rel)
            except OperationError as exc:
                report.problems.append(str(exc))
                continue
            if not os.path.lexists(where):
                continue
            real = os.path.realpath(where) if not os.path.islink(where) else str(where)
            if any(paths.is_inside(real, g) or paths.is_inside(g, real) for g in guarded):
                report.problems.append(f"{rel}: holds pivotbuild's cache or state; "
                                       "not deleted")
                continue
            if not dry_run:
                try:
                    paths.remove(root, rel)
                except OperationError as exc:
                    report.problems.append(str(exc))
                    continue
                except OSError as exc:
                    report.problems.append(f"{rel}: cannot delete: {exc.strerror or exc}")
                    continue
            report.removed.append(rel)
            parents.add(os.path.dirname(rel))
    if not dry_run:
        report.directories = _remove_empty_parents(root, parents, declared)
    return report


def _remove_empty_parents(root: Path, parents: set[str], declared: set[str]) -> list[str]:
    """Remove the directories (and their parents, up to the root) that are now empty, unless
    a stage declares one; the removed ones, project-relative."""
    removed: list[str] = []
    todo = sorted(p for p in parents if p)
    seen: set[str] = set()
    while todo:
        rel = todo.pop()
        if rel in seen or not rel or rel in declared:
            continue
        seen.add(rel)
        try:
            where = paths.resolve(root, rel)
            if os.path.islink(where) or not os.path.isdir(where) or os.listdir(where):
                continue
            os.rmdir(where)
        except (OperationError, OSError):
            continue
        removed.append(rel)
        todo.append(os.path.dirname(rel))
        todo.sort()
    return removed  # deepest first, as removed


__all__ = ["CleanReport", "clean"]
