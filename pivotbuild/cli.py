"""The command line: parse arguments, call one function, render the result.

Heavy modules (pydantic, networkx) are imported inside the commands that need
them, so that quick commands such as ``hash`` start fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import click

from pivotbuild import __version__
from pivotbuild.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, PivotError, UsageError
from pivotbuild.urls import redact_text


class Context:
    """What every command gets: the global options."""

    def __init__(self, verbose: int, quiet: bool) -> None:
        self.verbose = verbose
        self.quiet = quiet


def _jobs_option(function):
    return click.option(
        "-j", "--jobs", type=click.IntRange(min=1), default=None,
        help="Threads or parallel stages (default: all cores).",
    )(function)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-C", "directory", type=click.Path(file_okay=False), default=None,
              help="Change to DIR before doing anything (as make -C).")
@click.option("-v", "--verbose", count=True, help="Say more.")
@click.option("-q", "--quiet", is_flag=True, help="Say less.")
@click.version_option(__version__, prog_name="pivotbuild")
@click.pass_context
def cli(ctx: click.Context, directory: str | None, verbose: int, quiet: bool) -> None:
    """pivotbuild: a declarative, content-hashed build system."""
    if directory is not None:
        try:
            os.chdir(directory)
        except OSError as exc:
            raise UsageError(f"-C {directory}: {exc.strerror}") from None
    ctx.obj = Context(verbose, quiet)


@cli.command("hash")
@click.argument("paths", nargs=-1, required=True)
@_jobs_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
@click.option("--no-state", is_flag=True, help="Neither read nor update the stat memo.")
@click.pass_obj
def hash_command(obj: Context, paths: tuple[str, ...], jobs: int | None, as_json: bool,
                 no_state: bool) -> None:
    """Print '<hash>  <path>' for each PATH (xxhsum -H2 compatible for files).

    Directories print '<hash>.dir'. Inside a project the stat memo
    (.pivotbuild/state.db) spares re-reading unchanged files.
    """
    from pivotbuild.hashcmd import run_hash

    code = run_hash(paths, jobs or 0, as_json, no_state)
    if code:
        raise SystemExit(code)


# ---- the pipeline commands ------------------------------------------------------


def _root() -> Path:
    from pivotbuild.workspace import find_project_root

    root = find_project_root(Path.cwd())
    if root is None:
        raise UsageError(
            f"no pivot.toml found in {Path.cwd()} or any parent directory (run 'pivotbuild init')"
        )
    return root


@contextlib.contextmanager
def _pipeline(hash_jobs: int = 0, *, write: bool = False, wait: float | None = None):
    """The opened project; ``write``: also hold the project lock (projectlock.py)."""
    from pivotbuild.prefetch import Prefetch

    root = _root()
    prefetch = Prefetch(root, hash_jobs)  # hashes in C while the modules below load

    from pivotbuild.pipeline import opened
    from pivotbuild.projectlock import project_lock
    from pivotbuild.workspace import ensure_state_dir

    with opened(root, hash_jobs, prefetch) as pipeline:
        if not write:
            yield pipeline
            return
        command = " ".join(["pivotbuild", *sys.argv[1:]])[:200]
        with project_lock(ensure_state_dir(pipeline.root), command, wait):
            yield pipeline


def _wait_option(function):
    return click.option(
        "--wait", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
        help="If another command is writing this project, wait up to SECONDS for it.",
    )(function)


INIT_TEMPLATE = """\
# pivot.toml: the stages of this project. See pivot.toml.example for every field.
[project]
# jobs = 4

# [stages.prepare]
# cmd = "python prepare.py data/raw.csv data/clean.csv"
# deps = ["prepare.py", "data/raw.csv"]
# outs = ["data/clean.csv"]
"""


@cli.command("init")
@click.pass_obj
def init_command(obj: Context) -> None:
    """Create pivot.toml (if absent) and .pivotbuild/ with its .gitignore."""
    from pivotbuild.workspace import PROJECT_FILE, ensure_state_dir

    root = Path.cwd()
    created = not (root / PROJECT_FILE).exists()
    if created:
        (root / PROJECT_FILE).write_text(INIT_TEMPLATE)
    ensure_state_dir(root)
    if not obj.quiet:
        what = "Initialised" if created else "Reinitialised"
        click.echo(f"{what} a pivotbuild project in {root}")


def _reasons_text(reasons) -> list[str]:
    return [f"    {reason}" for reason in reasons]


@cli.command("status")
@click.argument("targets", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
@click.option("-q", "quiet", is_flag=True, help="Print nothing; exit 1 if anything is stale.")
@click.option("--remote", "on_remote", is_flag=True,
              help="Compare the cached outputs with the remote instead.")
@click.option("-r", "remote_name", default=None, metavar="NAME",
              help="The remote for --remote (default: project.default_remote).")
@click.pass_obj
def status_command(obj: Context, targets: tuple[str, ...], as_json: bool, quiet: bool,
                   on_remote: bool, remote_name: str | None) -> None:
    """Show which stages are stale and why (--remote: what the remote lacks or has)."""
    if on_remote or remote_name is not None:
        from pivotbuild.cli_remote import remote_status_command_impl

        remote_status_command_impl(obj, targets, remote_name, as_json, quiet)
        return

    with _pipeline() as pipeline:
        from pivotbuild.plan import STALE  # after _pipeline: it starts the prefetch first

        decisions = pipeline.status(pipeline.select(list(targets)))
    stale = any(d.status == STALE for d in decisions)
    for decision in decisions:
        if decision.lock_problem and not (quiet or obj.quiet):
            click.echo(f"pivotbuild: warning: {decision.lock_problem}", err=True)
    if quiet or obj.quiet:
        raise SystemExit(EXIT_FAILED if stale and quiet else EXIT_OK)
    if as_json:
        doc = {"stages": [
            {"name": d.name, "status": d.status, "reasons": [r.to_dict() for r in d.reasons]}
            for d in decisions
        ]}
        click.echo(json.dumps(doc, indent=2))
        return
    for decision in decisions:
        click.echo(f"{decision.name}: {decision.status}")
        if decision.status == STALE:
            for line in _reasons_text(decision.reasons):
                click.echo(line)
    if not stale:
        click.echo("Everything is up to date.")


@cli.command("repro")
@click.argument("targets", nargs=-1)
@_jobs_option
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
@_wait_option
@click.pass_obj
def repro_command(obj: Context, targets: tuple[str, ...], jobs: int | None, dry_run: bool,
                  force: bool, keep_going: bool, single_item: bool, downstream: bool,
                  no_commit: bool, no_run_cache: bool, explain: bool, as_json: bool,
                  pull: bool, remote_name: str | None, wait: float | None) -> None:
    """Bring the targets (default: every stage) and their upstream up to date."""
    import time

    started = time.monotonic()
    with _pipeline(write=not dry_run, wait=wait) as pipeline:
        # Imported after _pipeline has started the prefetch (prefetch.py).
        from pivotbuild.execute import OK, Reporter, RunOptions
        from pivotbuild.pipeline import plan_result
        from pivotbuild.progress import make_reporter

        names = pipeline.select(list(targets), single_item=single_item, downstream=downstream)
        pulled = None
        if pull and not dry_run:
            from pivotbuild.cli_remote import prefetch_for_repro_impl

            pulled = prefetch_for_repro_impl(obj, pipeline, names, remote_name,
                                             run_cache=not no_run_cache)
        project_jobs = pipeline.project.jobs or os.cpu_count() or 1
        options = RunOptions(
            jobs=jobs or project_jobs, keep_going=keep_going, no_commit=no_commit,
            stage_output=sys.stderr if as_json else None,
        )
        reporter: Reporter = make_reporter(obj.verbose, obj.quiet or as_json, explain or dry_run)
        decisions, results = pipeline.repro(
            names, options=options, reporter=reporter, force=force, single_item=single_item,
            dry_run=dry_run, use_run_cache=not no_run_cache,
        )
    for decision in decisions:
        if decision.lock_problem:
            _warn(decision.lock_problem)
    if dry_run:
        if as_json:
            stages = [plan_result(d).to_dict() for d in decisions]
            click.echo(json.dumps({"ok": True, "stages": stages}, indent=2))
        elif not any(d.action != "skip" for d in decisions) and not obj.quiet:
            click.echo("Everything is up to date.", err=True)
        return
    ok = all(r.status == OK for r in results)
    reporter.finish(results, time.monotonic() - started)
    if as_json:
        doc = {"ok": ok, "stages": [r.to_dict() for r in results]}
        click.echo(json.dumps(doc, indent=2))
    if not ok or (pulled is not None and not pulled.ok):
        raise SystemExit(EXIT_FAILED)


@cli.command("commit")
@click.argument("stages", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Print what would be committed; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
@_wait_option
@click.pass_obj
def commit_command(obj: Context, stages: tuple[str, ...], dry_run: bool, as_json: bool,
                   wait: float | None) -> None:
    """Record the workspace as it is for stale stages (or the named ones), without running.

    A matrix base name commits every instance. --dry-run hashes what commit would, writes
    nothing (but the stat memo) and exits as commit would: 1 if a stage would fail."""
    with _pipeline(write=not dry_run, wait=wait) as pipeline:
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
        click.echo(json.dumps(doc, indent=2))
    elif not obj.quiet:
        if dry_run:
            planned = {d.name: d for d in outcome.plan}
            for name in outcome.committed:
                decision = planned[name]
                outs = [o.path for o in decision.stage.outs if o.cache]
                why = "; ".join(str(r) for r in decision.reasons) or "requested"
                click.echo(f"would commit '{decision.name}' ({why}); would store: "
                           f"{', '.join(outs) or 'nothing'}")
        else:
            for name in outcome.committed:
                click.echo(f"Committed '{name}'")
        if not outcome.plan:
            click.echo("Nothing to commit.")
    for failed_stage, error in outcome.failed:
        _error(f"stage '{failed_stage}': {error}")
    if outcome.failed:
        raise SystemExit(EXIT_FAILED)


@cli.command("checkout")
@click.argument("targets", nargs=-1)
@click.option("--force", is_flag=True,
              help="Overwrite modified outputs and delete untracked files in output dirs.")
@click.option("--relink", is_flag=True, help="Re-apply the checkout link preference.")
@_wait_option
@click.pass_obj
def checkout_command(obj: Context, targets: tuple[str, ...], force: bool, relink: bool,
                     wait: float | None) -> None:
    """Put the cached outputs recorded in the locks into the workspace."""
    with _pipeline(write=True, wait=wait) as pipeline:
        from pivotbuild.checkout import Checkout

        names = pipeline.select(list(targets), single_item=bool(targets))
        report = Checkout(pipeline, force=force, relink=relink).run(names)
    if not render_checkout(report, obj.quiet, "run 'pivotbuild pull'"):
        raise SystemExit(EXIT_FAILED)


def render_checkout(report, quiet: bool, missing_hint: str) -> bool:
    """Print what a checkout did (also after pull); True if it all went well."""
    if not quiet:
        for path in report.restored:
            click.echo(f"Restored {path}")
    for message in report.problems:
        _error(message)
    if report.conflicts:
        _error("checkout would clobber (use 'pivotbuild checkout --force' to overwrite): "
               + ", ".join(report.conflicts))
    for path, digest in report.missing:
        _error(f"{path}: cache object {digest} is missing ({missing_hint})")
    if not quiet:
        click.echo(f"checkout: {len(report.restored)} restored, {len(report.unchanged)} "
                   f"unchanged, {len(report.conflicts)} conflicts, {len(report.missing)} "
                   "missing", err=True)
    return report.ok


@cli.command("verify")
@click.argument("targets", nargs=-1)
@click.option("--cache", "rehash", is_flag=True, help="Also rehash every referenced object.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
@click.pass_obj
def verify_command(obj: Context, targets: tuple[str, ...], rehash: bool, as_json: bool) -> None:
    """Exit 0 only if every stage is up to date and its cached outputs are in the cache."""
    with _pipeline() as pipeline:
        from pivotbuild.verify import verify

        report = verify(pipeline, pipeline.select(list(targets)), rehash=rehash)
    if as_json:
        click.echo(json.dumps({"ok": report.ok,
                               "problems": [p.to_dict() for p in report.problems]}, indent=2))
    else:
        for problem in report.problems:
            _error(problem.message)
        if report.ok and not obj.quiet:
            extra = f", {report.checked_objects} objects rehashed" if rehash else ""
            click.echo(f"verify: everything is up to date and cached{extra}")
    if not report.ok:
        raise SystemExit(EXIT_FAILED)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


@cli.command("gc")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--grace", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Keep unreferenced objects and run-cache entries changed within the last "
                   "SECONDS (default 3600, or $PIVOTBUILD_GC_GRACE_S; 0: delete them now).")
@_wait_option
@click.pass_obj
def gc_command(obj: Context, dry_run: bool, grace: float | None, wait: float | None) -> None:
    """Delete cache objects and run-cache entries that no current lock references.

    What changed within the grace period is kept: another project sharing the cache may
    have stored it and not yet written the lock that references it."""
    from pivotbuild.gc import grace_seconds

    grace_s = grace_seconds(grace)  # a bad PIVOTBUILD_GC_GRACE_S fails before anything
    with _pipeline(write=not dry_run, wait=wait) as pipeline:
        from pivotbuild.gc import gc

        report = gc(pipeline, dry_run=dry_run, grace_s=grace_s)
    verb = "would delete" if dry_run else "deleted"
    if not obj.quiet:
        for name in report.objects:
            click.echo(f"{verb} object {name}")
        for name in report.runs:
            click.echo(f"{verb} run-cache entry {name}")
        click.echo(f"gc: {verb} {_count(len(report.objects), 'object', 'objects')} and "
                   f"{_count(len(report.runs), 'run-cache entry', 'run-cache entries')}; kept "
                   f"{_count(report.kept_objects, 'referenced object', 'referenced objects')}",
                   err=True)
        if report.young_objects or report.young_runs:
            shown = f"{report.grace_s:g}"
            objects = _count(report.young_objects, "unreferenced object", "unreferenced objects")
            runs = _count(report.young_runs, "run-cache entry", "run-cache entries")
            click.echo(f"gc: kept {objects} and {runs} changed in the last {shown} s "
                       f"(--grace {shown}; '--grace 0' deletes them now)", err=True)


@cli.command("dag")
@click.argument("targets", nargs=-1)
@click.option("--dot", "fmt", flag_value="dot", help="Graphviz digraph.")
@click.option("--mermaid", "fmt", flag_value="mermaid", help="Mermaid flowchart.")
@click.option("--json", "fmt", flag_value="json", help="JSON: stages and edges.")
def dag_command(targets: tuple[str, ...], fmt: str | None) -> None:
    """Print the stage graph."""
    from pivotbuild import dag

    with _pipeline() as pipeline:
        names = pipeline.dag_names(list(targets))
        graph = pipeline.graph
    if fmt == "json":
        click.echo(json.dumps(dag.to_json(graph, names), indent=2))
    elif fmt == "dot":
        click.echo(dag.to_dot(graph, names), nl=False)
    elif fmt == "mermaid":
        click.echo(dag.to_mermaid(graph, names), nl=False)
    else:
        click.echo(dag.to_text(graph, names), nl=False)


@cli.command("history")
@click.argument("stage", required=False)
@click.option("-n", "limit", type=click.IntRange(min=1), default=None, help="Only the last N runs.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
def history_command(stage: str | None, limit: int | None, as_json: bool) -> None:
    """List past runs: run id, stage, start, duration, status, input hash, committed.

    STAGE may be a matrix base name (every instance's runs) or a stage no longer in
    pivot.toml that has runs recorded; any other name exits 2."""
    import datetime

    from pivotbuild.state import StateDB
    from pivotbuild.workspace import STATE_DIR

    root = _root()
    state = StateDB(root / STATE_DIR / "state.db")
    try:
        runs = state.runs(stage, limit)
        if stage is not None and not runs:
            # Only now is pivot.toml needed: is it a matrix base, a stage never run, or
            # no stage at all?
            from pivotbuild.config import load_project

            stages = load_project(root).stages
            if any(s.base == stage and s.name != stage for s in stages.values()):
                runs = state.runs(stage, limit, instances=True)
            elif stage not in stages:
                raise UsageError(f"unknown stage: '{stage}'")
    finally:
        state.close()
    if as_json:
        click.echo(json.dumps({"runs": [r.to_dict() for r in runs]}, indent=2))
        return
    if not runs:
        click.echo("No runs recorded." if stage is None else f"No runs of '{stage}' recorded.")
        return
    click.echo(f"{'run':>5}  {'stage':<20} {'started':<19} {'duration':>9}  {'status':<11} "
               f"{'input hash':<32}  committed")
    for r in runs:
        when = datetime.datetime.fromtimestamp(r.started_at).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{r.run_id:>5}  {r.stage:<20} {when:<19} {r.duration_s:>8.2f}s  "
                   f"{r.status:<11} {r.input_hash or '-':<32}  {'yes' if r.committed else 'no'}")


def _warn(message: str) -> None:
    click.echo(f"pivotbuild: warning: {redact_text(message)}", err=True)


def _error(message: str) -> None:
    # Any message may quote a URL (a remote library's error): never with its userinfo.
    click.echo(f"pivotbuild: error: {redact_text(message)}", err=True)


def _invoke(argv: list[str] | None) -> int | None:
    """Parse and run one command line. Not click's main(): an interrupt must reach main()
    below as itself (click would print a blank line and turn it into Abort)."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        with cli.make_context("pivotbuild", args) as ctx:
            return cli.invoke(ctx)
    except click.exceptions.Exit as exc:  # --help, --version
        return exc.exit_code


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning every known error into one line and an exit code.

    An interrupt (Ctrl-C, or SIGTERM / SIGHUP as entry.py raises them) prints one line
    and exits 128 + the signal, after whatever was running has stopped its commands."""
    from pivotbuild.entry import interrupted_exit_code

    try:
        code = _invoke(argv)
    except PivotError as exc:
        _error(str(exc))
        code = exc.exit_code
    except click.exceptions.Abort:
        code = EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except KeyboardInterrupt as exc:
        _error("interrupted")
        code = interrupted_exit_code(exc)
    except BrokenPipeError:
        # Output piped into head or similar: not an error worth a traceback.
        sys.stderr.close()
        code = EXIT_OK
    except OSError as exc:
        # An operation the system refused (a full disk, a read-only file system, ...).
        where = f"{exc.filename}: " if exc.filename else ""
        _error(f"{where}{exc.strerror or exc}")
        code = EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        _error(f"internal error: {type(exc).__name__}: {exc} (please report this; "
               "run with -v for the traceback)")
        if "-v" in sys.argv or "--verbose" in sys.argv:
            import traceback

            traceback.print_exc()
        code = EXIT_FAILED
    if code is None:
        code = EXIT_OK
    sys.exit(code)


def _register_remote_commands() -> None:
    """push / fetch / pull are defined in cli_remote.py."""
    from pivotbuild.cli_remote import register

    register(cli)


_register_remote_commands()
