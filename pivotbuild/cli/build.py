"""The Makefile-style commands: clean (a stage's outputs out of the workspace) and compdb.

Both read only pivot.toml (with ``--set`` overrides) and the stage graph: no lock, no cache,
no run cache. The work is in clean.py (what the selected stages write, deleted the way
``make clean`` would, never outside the project) and compdb.py (a JSON compilation database
for editors and clang tools); here the targets are chosen and the result printed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

import click

from pivotbuild.cli.common import Context, error, project_root, say, set_option, wait_option
from pivotbuild.errors import EXIT_FAILED

if TYPE_CHECKING:
    from pivotbuild.config import Project
    from pivotbuild.dag import StageGraph


def _load(overrides: Mapping[str, str]) -> tuple[Project, StageGraph]:
    """The project (``--set`` applied) and its stage graph."""
    from pivotbuild import dag
    from pivotbuild.projectcache import load_project

    project = load_project(project_root(), overrides)
    return project, dag.build_graph(project)


# ---- clean ----------------------------------------------------------------------------------


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
    from pivotbuild.clean import clean

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


@click.command("compdb")
@click.argument("stages", nargs=-1)
@set_option
def compdb_command(stages: tuple[str, ...], overrides: dict[str, str]) -> None:
    """Print a JSON compilation database (compile_commands.json) for the STAGES.

    Default: every stage with a depfile. STAGES are stage or matrix base names. Each entry
    has directory (the stage's absolute wdir), command (its expanded cmd), file (its first
    dep) and output (its first out):  pivotbuild compdb > compile_commands.json"""
    from pivotbuild import dag
    from pivotbuild.compdb import compdb_entries

    project, graph = _load(overrides)
    if stages:
        chosen: dict[str, None] = {}
        for name in stages:
            chosen.update(dict.fromkeys(dag.stage_names(graph, name)))
        names = dag.topological(graph, chosen)
    else:
        names = [n for n in dag.topological(graph) if project.stages[n].depfile]
    entries, skipped = compdb_entries(project, [project.stages[n] for n in names])
    for message in skipped:
        say(f"pivotbuild: warning: {message}", err=True)
    say(json.dumps(entries, indent=2))


COMMANDS = (clean_command, compdb_command)

__all__ = ["COMMANDS"]

