"""The Makefile-style commands: clean (a stage's outputs out of the workspace) and compdb.

Both read only pivot.toml (with ``--set`` overrides) and the stage graph: no lock, no cache,
no run cache. ``clean`` deletes what the selected stages write, the way ``make clean`` would,
but each path only after checking that its directory resolves inside the project (SPEC §8,
paths.remove). ``compdb`` prints a JSON compilation database for editors and clang tools.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pivotbuild.cli.common import Context, error, project_root, say, set_option, wait_option
from pivotbuild.errors import EXIT_FAILED, OperationError, UsageError

if TYPE_CHECKING:
    from pivotbuild.config import Project, Stage


def _load(overrides: Mapping[str, str]) -> tuple[Project, Any]:
    """The project (``--set`` applied) and its stage graph."""
    from pivotbuild import dag
    from pivotbuild.config import load_project

    project = load_project(project_root(), overrides)
    return project, dag.build_graph(project)


# ---- clean ----------------------------------------------------------------------------------


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
    from pivotbuild import paths

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
    from pivotbuild import paths

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


@click.command("clean")
@click.argument("targets", nargs=-1)
@click.option("-n", "--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@set_option
@wait_option
@click.pass_obj
def clean_command(obj: Context, targets: tuple[str, ...], dry_run: bool,
                  overrides: dict[str, str], wait: float | None) -> None:
    """Delete the workspace outputs of the TARGETS (default: every stage's).

    TARGETS are stage names, matrix base names or output paths; only those stages are
    cleaned, not their upstream. The cache, the locks and the run cache are never touched,
    so a following repro restores the outputs from the cache ('repro -f' rebuilds). A
    frozen stage's outputs are kept unless it is named."""
    from pivotbuild import dag

    project, graph = _load(overrides)
    root = str(project.root)
    names = dag.select(graph, [dag.target_from_cwd(graph, root, t) for t in targets],
                       single_item=True)
    stages = [project.stages[n] for n in names]
    named = frozenset(names) if targets else frozenset()  # each one a target, or its instance
    if dry_run:
        report = clean(project, stages, dry_run=True, named=named)
    else:
        from pivotbuild.paths import ensure_state_dir
        from pivotbuild.projectlock import project_lock

        with project_lock(ensure_state_dir(project.root), wait):
            report = clean(project, stages, dry_run=False, named=named)
    verb = "Would remove" if dry_run else "Removed"
    if not obj.quiet:
        for rel in report.removed:
            say(f"{verb} {rel}")
        for rel in report.directories:
            say(f"Removed {rel}/ (left empty)")
        for name in report.kept_frozen:
            say(f"clean: kept the outputs of frozen stage '{name}' (name it to clean it)",
                err=True)
        what = "path" if len(report.removed) == 1 else "paths"
        done = "would remove" if dry_run else "removed"
        say(f"clean: {done} {len(report.removed)} {what}", err=True)
    for problem in report.problems:
        error(problem)
    if report.problems:
        raise SystemExit(EXIT_FAILED)


# ---- compdb ---------------------------------------------------------------------------------


def compdb_entries(project: Project, stages: Iterable[Stage]) -> tuple[list[dict[str, str]],
                                                                       list[str]]:
    """One compilation-database entry per stage with a dep and an out: ``directory`` (the
    absolute wdir), ``command`` (the expanded cmd: of several, the first that names the
    file, else the first), ``file`` (the first declared dep) and ``output`` (the first out),
    both relative to ``directory``. The second list: stages left out, and why."""
    entries: list[dict[str, str]] = []
    skipped: list[str] = []
    for stage in stages:
        if not stage.deps or not stage.outs:
            missing = "deps" if not stage.deps else "outs"
            skipped.append(f"stage '{stage.name}' has no {missing}: left out of compdb")
            continue
        directory = os.path.normpath(os.path.join(project.root, stage.wdir))
        source = os.path.relpath(os.path.join(project.root, stage.deps[0]), directory)
        output = os.path.relpath(os.path.join(project.root, stage.outs[0].path), directory)
        entries.append({"directory": directory, "command": _command(stage.cmd, source),
                        "file": source, "output": output})
    return entries, skipped


def _command(cmds: list[str], source: str) -> str:
    for cmd in cmds:
        try:
            words = shlex.split(cmd)
        except ValueError:
            words = cmd.split()
        if source in words:
            return cmd
    return cmds[0] if cmds else ""


@click.command("compdb")
@click.argument("stages", nargs=-1)
@set_option
def compdb_command(stages: tuple[str, ...], overrides: dict[str, str]) -> None:
    """Print a JSON compilation database (compile_commands.json) for the STAGES.

    Default: every stage with a depfile. STAGES are stage or matrix base names. Each entry
    has directory (the stage's absolute wdir), command (its expanded cmd), file (its first
    dep) and output (its first out):  pivotbuild compdb > compile_commands.json"""
    from pivotbuild import dag

    project, graph = _load(overrides)
    if stages:
        chosen: dict[str, None] = {}
        for name in stages:
            instances = [s.name for s in project.stages.values()
                         if s.name == name or s.base == name]
            if not instances:
                raise UsageError(f"unknown stage: '{name}'")
            chosen.update(dict.fromkeys(instances))
        names = dag.topological(graph, chosen)
    else:
        names = [n for n in dag.topological(graph) if project.stages[n].depfile]
    entries, skipped = compdb_entries(project, [project.stages[n] for n in names])
    for message in skipped:
        say(f"pivotbuild: warning: {message}", err=True)
    say(json.dumps(entries, indent=2))


COMMANDS = (clean_command, compdb_command)

__all__ = ["COMMANDS", "CleanReport", "clean", "compdb_entries"]

