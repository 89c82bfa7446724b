"""The pipeline commands: init, status, repro, commit, checkout, verify, gc, dag, history.

Each parses its arguments, opens the project (common.opened), calls one function of the
pipeline and renders what it returns. Modules that load pydantic or networkx are imported
inside the commands, after ``opened`` has started the prefetch (prefetch.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pivotbuild.cli import remote
from pivotbuild.cli.common import (
    Context,
    count,
    error,
    jobs_option,
    opened,
    project_root,
    render_checkout,
    say,
    set_option,
    wait_option,
    warn,
)
from pivotbuild.errors import EXIT_FAILED, EXIT_OK, UsageError

if TYPE_CHECKING:
    from pivotbuild.auditrun import Audit
    from pivotbuild.pipeline import Pipeline

INIT_TEMPLATE = """\
# pivot.toml: the stages of this project. See pivot.toml.example for every field.
[project]
# jobs = 4

# [stages.prepare]
# cmd = "python prepare.py data/raw.csv data/clean.csv"
# deps = ["prepare.py", "data/raw.csv"]
# outs = ["data/clean.csv"]
"""


@click.command("init")
@click.pass_obj
def init_command(obj: Context) -> None:
    """Create pivot.toml (if absent) and .pivotbuild/ with its .gitignore."""
    from pivotbuild.paths import PROJECT_FILE, ensure_state_dir

    root = Path.cwd()
    created = not (root / PROJECT_FILE).exists()
    if created:
        (root / PROJECT_FILE).write_text(INIT_TEMPLATE)
    ensure_state_dir(root)
    if not obj.quiet:
        what = "Initialised" if created else "Reinitialised"
        say(f"{what} a pivotbuild project in {root}")


@click.command("status")
@click.argument("targets", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
@click.option("-q", "quiet", is_flag=True, help="Print nothing; exit 1 if anything is stale.")
@click.option("--remote", "on_remote", is_flag=True,
              help="Compare the cached outputs with the remote instead.")
@click.option("-r", "remote_name", default=None, metavar="NAME",
              help="The remote for --remote (default: project.default_remote).")
@set_option
@click.pass_obj
def status_command(obj: Context, targets: tuple[str, ...], as_json: bool, quiet: bool,
                   on_remote: bool, remote_name: str | None, overrides: dict[str, str]) -> None:
    """Show which stages are stale and why (--remote: what the remote lacks or has)."""
    if overrides and (on_remote or remote_name is not None):
        raise UsageError("--set cannot be used with status --remote (it compares the locks "
                         "with the remote; pivot.toml's vars play no part)")
    if on_remote or remote_name is not None:
        remote.remote_status_command_impl(obj, targets, remote_name, as_json, quiet)
        return

    with opened(overrides=overrides) as pipeline:
        from pivotbuild import tracked  # after opened(): it starts the prefetch first
        from pivotbuild.plan import STALE

        names, records = tracked.select_targets(pipeline, list(targets))
        decisions = pipeline.status(names)
        states = tracked.statuses(pipeline.root, records, pipeline.hasher)
    changed = [(r, s) for r, s in states if s != tracked.UP_TO_DATE]
    stale = any(d.status == STALE for d in decisions) or bool(changed)
    # Locks of stages pivot.toml no longer has: shown (with every stage only), never stale.
    orphans = pipeline.orphaned_locks() if not targets else []
    for decision in decisions:
        if decision.lock_problem and not (quiet or obj.quiet):
            warn(decision.lock_problem)
    if quiet or obj.quiet:
        raise SystemExit(EXIT_FAILED if stale and quiet else EXIT_OK)
    if as_json:
        doc = {"stages": [
            {"name": d.name, "status": d.status, "reasons": [r.to_dict() for r in d.reasons]}
            for d in decisions
        ], **({"orphaned": orphans} if orphans else {}),
            "tracked": [{"path": r.path, "status": s} for r, s in states]}
        say(json.dumps(doc, indent=2))
        return
    for decision in decisions:
        say(f"{decision.name}: {decision.status}")
        if decision.status == STALE:
            for reason in decision.reasons:
                say(f"    {reason}")
    for name in orphans:
        say(f"{name}: orphaned (no such stage in pivot.toml; delete "
            f".pivotbuild/locks/{name}.json to forget it)")
    for record, state in changed:  # tracked paths: only those that differ from their record
        say(f"{record.path}: {state} (recorded in {record.file})")
    if not stale:
        say("Everything is up to date.")


@click.command("repro")
@click.argument("targets", nargs=-1)
@set_option
@jobs_option
@click.option("-n", "--dry-run", is_flag=True, help="Print the plan; write nothing.")
@click.option("-f", "--force", is_flag=True, help="Run every stage in the plan.")
@click.option("-k", "--keep-going", is_flag=True,
              help="Run every stage not downstream of a failure.")
@click.option("-s", "--single-item", is_flag=True, help="Only the targets, not their upstream.")
@click.option("--downstream", is_flag=True, help="The targets and everything below them.")
@click.option("--no-commit", is_flag=True,
              help="Run, but write no lock, cache object or run-cache entry.")
@click.option("--no-run-cache", is_flag=True, help="Never restore outputs from the run cache.")
@click.option("--explain", is_flag=True, help="Print why each stage runs.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document when done.")
@click.option("--pull", is_flag=True,
              help="First fetch from the remote what can be restored (run cache included).")
@click.option("-r", "--remote", "remote_name", default=None, metavar="NAME",
              help="The remote for --pull (default: project.default_remote).")
@click.option("--audit", is_flag=True,
              help="Trace what each stage that runs reads; warn about undeclared project files "
                   "(stale stages run instead of coming from the run cache).")
@click.option("--executor", type=click.Choice(["local", "dask"]), default=None,
              help="Where stages run (default: [executor] kind in pivot.toml).")
@click.option("--executor-address", default=None, metavar="URL",
              help="The Dask scheduler to run stages on (implies --executor dask).")
@wait_option
@click.pass_obj
def repro_command(obj: Context, targets: tuple[str, ...], overrides: dict[str, str],
                  jobs: int | None, dry_run: bool,
                  force: bool, keep_going: bool, single_item: bool, downstream: bool,
                  no_commit: bool, no_run_cache: bool, explain: bool, as_json: bool,
                  pull: bool, remote_name: str | None, audit: bool, executor: str | None,
                  executor_address: str | None, wait: float | None) -> None:
    """Bring the targets (default: every stage) and their upstream up to date."""
    import time

    started = time.monotonic()
    with opened(write=not dry_run, wait=wait, overrides=overrides) as pipeline:
        # Imported after opened() has started the prefetch (prefetch.py).
        from pivotbuild.execute import RunOptions
        from pivotbuild.pipeline import plan_result
        from pivotbuild.plan import OK
        from pivotbuild.report import Reporter, make_reporter

        names = pipeline.select(list(targets), single_item=single_item, downstream=downstream)
        pulled, miss = None, None
        if pull and not dry_run:
            pulled, miss = remote.prefetch_for_repro_impl(obj, pipeline, names, remote_name,
                                                          run_cache=not no_run_cache)
        runner = None
        if not dry_run and (executor_address or pipeline.project.executor.kind != "local"
                            or executor == "dask"):
            from pivotbuild.runners.daskcheck import dask_runner  # distributed loads only to run

            runner = dask_runner(pipeline, executor or ("dask" if executor_address else None),
                                 executor_address, no_commit=no_commit)
            if audit and runner is not None:
                raise UsageError("--audit traces commands on this machine: it cannot be used "
                                 "with the dask executor (add --executor local)")
        # On a cluster, -j's default is the cluster's thread count (0: the runner's default).
        project_jobs = 0 if runner is not None else pipeline.project.jobs or os.cpu_count() or 1
        options = RunOptions(
            jobs=jobs or project_jobs, keep_going=keep_going, no_commit=no_commit,
            stage_output=sys.stderr if as_json else None,
            audit=_audit(pipeline) if audit and not dry_run else None,
        )
        reporter: Reporter = make_reporter(obj.verbose, obj.quiet or as_json, explain or dry_run)
        decisions, results = pipeline.repro(
            names, options=options, reporter=reporter, force=force, single_item=single_item,
            dry_run=dry_run, use_run_cache=not (no_run_cache or audit), run_cache_miss=miss,
            runner=runner,
        )
    for decision in decisions:
        if decision.lock_problem:
            warn(decision.lock_problem)
    if dry_run:
        if as_json:
            stages = [plan_result(d).to_dict() for d in decisions]
            say(json.dumps({"ok": True, "stages": stages}, indent=2))
        elif not any(d.action != "skip" for d in decisions) and not obj.quiet:
            say("Everything is up to date.", err=True)
        return
    ok = all(r.status == OK for r in results)
    reporter.finish(results, time.monotonic() - started)
    if as_json:
        stages = [r.to_dict() for r in results]
        if audit:  # a list for each traced (successful) run, null for every other stage
            for stage in stages:
                stage.setdefault("undeclared_reads", None)
        say(json.dumps({"ok": ok, "stages": stages}, indent=2))
    if not ok or (pulled is not None and not pulled.ok):
        raise SystemExit(EXIT_FAILED)


def _audit(pipeline: Pipeline) -> Audit:
    """The audit of this repro (repro --audit): its notices are warnings."""
    from pivotbuild.auditrun import Audit

    project = pipeline.project
    return Audit(project.root, project.state_dir, warn, params_file=project.params_file)


@click.command("commit")
@click.argument("stages", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Print what would be committed; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
@set_option
@wait_option
@click.pass_obj
def commit_command(obj: Context, stages: tuple[str, ...], dry_run: bool, as_json: bool,
                   overrides: dict[str, str], wait: float | None) -> None:
    """Record the workspace as it is for stale stages (or the named ones), without running.

    A matrix base name commits every instance. --dry-run hashes what commit would, writes
    nothing (but the stat memo) and exits as commit would: 1 if a stage would fail."""
    with opened(write=not dry_run, wait=wait, overrides=overrides) as pipeline:
        chosen: dict[str, None] = {}
        for name in stages:
            chosen.update(dict.fromkeys(pipeline.stage_names(name)))
        names = pipeline.select(list(chosen), single_item=True) if stages else pipeline.select([])
        outcome = pipeline.commit(names, explicit=bool(stages), dry_run=dry_run)
    if as_json:
        doc = {
            "committed": outcome.committed,
            "failed": [{"stage": s, "error": e} for s, e in outcome.failed],
            "unchanged": outcome.unchanged,
        }
        if dry_run:
            doc["dry_run"] = True
        say(json.dumps(doc, indent=2))
    elif not obj.quiet:
        if dry_run:
            planned = {d.name: d for d in outcome.plan}
            for name in outcome.committed:
                decision = planned[name]
                outs = [o.path for o in decision.stage.outs if o.cache]
                why = "; ".join(str(r) for r in decision.reasons) or "requested"
                say(f"would commit '{decision.name}' ({why}); would store: "
                           f"{', '.join(outs) or 'nothing'}")
        else:
            for name in outcome.committed:
                say(f"Committed '{name}'")
        if not outcome.plan:
            say("Nothing to commit.")
    for failed_stage, problem in outcome.failed:
        error(f"stage '{failed_stage}': {problem}")
    if outcome.failed:
        raise SystemExit(EXIT_FAILED)


@click.command("checkout")
@click.argument("targets", nargs=-1)
@click.option("--force", is_flag=True,
              help="Overwrite modified outputs and delete untracked files in output dirs.")
@click.option("--relink", is_flag=True, help="Re-apply the checkout link preference.")
@wait_option
@click.pass_obj
def checkout_command(obj: Context, targets: tuple[str, ...], force: bool, relink: bool,
                     wait: float | None) -> None:
    """Put the cached outputs recorded in the locks into the workspace."""
    with opened(write=True, wait=wait) as pipeline:
        from pivotbuild.checkout import Checkout
        from pivotbuild.tracked import select_targets

        names, records = select_targets(pipeline, list(targets), single_item=bool(targets))
        report = Checkout(pipeline, force=force, relink=relink).run(names, records)
    if not render_checkout(report, obj.quiet, "run 'pivotbuild pull'"):
        raise SystemExit(EXIT_FAILED)


@click.command("verify")
@click.argument("targets", nargs=-1)
@click.option("--cache", "rehash", is_flag=True, help="Also rehash every referenced object.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
@click.pass_obj
def verify_command(obj: Context, targets: tuple[str, ...], rehash: bool, as_json: bool) -> None:
    """Exit 0 only if every stage is up to date and its cached outputs are in the cache."""
    with opened() as pipeline:
        from pivotbuild.tracked import select_targets
        from pivotbuild.verify import verify

        names, records = select_targets(pipeline, list(targets))
        report = verify(pipeline, names, rehash=rehash, tracked=records)
    if as_json:
        say(json.dumps({"ok": report.ok,
                               "problems": [p.to_dict() for p in report.problems]}, indent=2))
    else:
        for problem in report.problems:
            error(problem.message)
        if report.ok and not obj.quiet:
            extra = f", {report.checked_objects} objects rehashed" if rehash else ""
            say(f"verify: everything is up to date and cached{extra}")
    if not report.ok:
        raise SystemExit(EXIT_FAILED)


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--grace", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Keep unreferenced objects and run-cache entries changed within the last "
                   "SECONDS (default 3600, or $PIVOTBUILD_GC_GRACE_S; 0: delete them now).")
@click.option("--all-commits", is_flag=True,
              help="Also keep what the locks and .pvt files of every git commit reference.")
@click.option("--rev", "revs", multiple=True, metavar="REV",
              help="Also keep what the locks and .pvt files of git revision REV reference "
                   "(repeatable).")
@wait_option
@click.pass_obj
def gc_command(obj: Context, dry_run: bool, grace: float | None, all_commits: bool,
               revs: tuple[str, ...], wait: float | None) -> None:
    """Delete cache objects and run-cache entries that no current lock or .pvt references.

    What changed within the grace period is kept: another project sharing the cache may
    have stored it and not yet written the lock that references it. --rev and --all-commits
    read older locks and .pvt files from git (nothing is checked out)."""
    from pivotbuild.gc import grace_seconds

    grace_s = grace_seconds(grace)  # a bad PIVOTBUILD_GC_GRACE_S fails before anything
    with opened(write=not dry_run, wait=wait) as pipeline:
        from pivotbuild.gc import gc

        report = gc(pipeline, dry_run=dry_run, grace_s=grace_s, revs=revs,
                    all_commits=all_commits)
    verb = "would delete" if dry_run else "deleted"
    if not obj.quiet:
        for name in report.objects:
            say(f"{verb} object {name}")
        for name in report.runs:
            say(f"{verb} run-cache entry {name}")
        say(f"gc: {verb} {count(len(report.objects), 'object', 'objects')} and "
                   f"{count(len(report.runs), 'run-cache entry', 'run-cache entries')}; kept "
                   f"{count(report.kept_objects, 'referenced object', 'referenced objects')}",
                   err=True)
        if revs or all_commits:
            versions = count(report.history_files, "lock or .pvt version",
                             "lock and .pvt versions")
            say(f"gc: also kept what {versions} read from git reference", err=True)
        if report.young_objects or report.young_runs:
            shown = f"{report.grace_s:g}"
            objects = count(report.young_objects, "unreferenced object", "unreferenced objects")
            runs = count(report.young_runs, "run-cache entry", "run-cache entries")
            say(f"gc: kept {objects} and {runs} changed in the last {shown} s "
                       f"(--grace {shown}; '--grace 0' deletes them now)", err=True)


@click.command("dag")
@click.argument("targets", nargs=-1)
@click.option("--dot", "fmt", flag_value="dot", help="Graphviz digraph.")
@click.option("--mermaid", "fmt", flag_value="mermaid", help="Mermaid flowchart.")
@click.option("--json", "fmt", flag_value="json", help="JSON: stages and edges.")
@set_option
def dag_command(targets: tuple[str, ...], fmt: str | None, overrides: dict[str, str]) -> None:
    """Print the stage graph."""
    from pivotbuild import dag

    with opened(overrides=overrides) as pipeline:
        names = pipeline.dag_names(list(targets))
        graph = pipeline.graph
    if fmt == "json":
        say(json.dumps(dag.to_json(graph, names), indent=2))
    elif fmt == "dot":
        say(dag.to_dot(graph, names), end="")
    elif fmt == "mermaid":
        say(dag.to_mermaid(graph, names), end="")
    else:
        say(dag.to_text(graph, names), end="")


@click.command("history")
@click.argument("stage", required=False)
@click.option("-n", "limit", type=click.IntRange(min=1), default=None, help="Only the last N runs.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
def history_command(stage: str | None, limit: int | None, as_json: bool) -> None:
    """List past runs: run id, stage, start, duration, status, input hash, committed.

    STAGE may be a matrix base name (every instance's runs) or a stage no longer in
    pivot.toml that has runs recorded; any other name exits 2."""
    import datetime

    from pivotbuild.paths import STATE_DB_FILE, STATE_DIR
    from pivotbuild.state import StateDB

    root = project_root()
    state = StateDB(root / STATE_DIR / STATE_DB_FILE)
    try:
        runs = state.runs(stage, limit)
        if stage is not None and not runs:
            # Only now is pivot.toml needed: is it a matrix base, a stage never run, or
            # no stage at all?
            from pivotbuild.projectcache import load_project

            stages = load_project(root).stages
            if any(s.base == stage and s.name != stage for s in stages.values()):
                runs = state.runs(stage, limit, instances=True)
            elif stage not in stages:
                raise UsageError(f"unknown stage: '{stage}'")
    finally:
        state.close()
    if as_json:
        say(json.dumps({"runs": [r.to_dict() for r in runs]}, indent=2))
        return
    if not runs:
        say("No runs recorded." if stage is None else f"No runs of '{stage}' recorded.")
        return
    say(f"{'run':>5}  {'stage':<20} {'started':<19} {'duration':>9}  {'status':<11} "
               f"{'input hash':<32}  committed")
    for r in runs:
        when = datetime.datetime.fromtimestamp(r.started_at).strftime("%Y-%m-%d %H:%M:%S")
        say(f"{r.run_id:>5}  {r.stage:<20} {when:<19} {r.duration_s:>8.2f}s  "
                   f"{r.status:<11} {r.input_hash or '-':<32}  {'yes' if r.committed else 'no'}")


COMMANDS = (init_command, status_command, repro_command, commit_command, checkout_command,
            verify_command, gc_command, dag_command, history_command)
