"""The remote commands on the command line (push, fetch, pull) and `status --remote`.

Like cli.py: parse arguments, call one function of remote.py, render its report. Errors are
one line each (``pivotbuild: error: ...``) on stderr; a summary line closes every transfer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from pivotbuild.errors import EXIT_FAILED, EXIT_OK
from pivotbuild.urls import redact_text

if TYPE_CHECKING:
    from pivotbuild.checkout import CheckoutReport
    from pivotbuild.remote import TransferReport

_SHOW_FAILED = 20  # failures listed one per line; past that, a count


def _error(message: str) -> None:
    # Messages may quote what a remote library said, URLs included: never their userinfo.
    click.echo(f"pivotbuild: error: {redact_text(message)}", err=True)


def _warn(message: str) -> None:
    click.echo(f"pivotbuild: warning: {redact_text(message)}", err=True)


def _quiet(obj: Any) -> bool:
    return bool(getattr(obj, "quiet", False))


def _opened(write: bool = False, wait: float | None = None) -> Any:
    """The project, opened as cli.py opens it; ``write`` also holds the project lock."""
    from pivotbuild.cli import _pipeline

    return _pipeline(write=write, wait=wait) if write else _pipeline()


def _transfer_options(function: Callable[..., Any]) -> Callable[..., Any]:
    function = click.option("--run-cache", is_flag=True,
                            help="Also sync the run-cache entries of the locks.")(function)
    function = click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
                            help="Parallel transfers (default: 4 per core, at most 32).")(function)
    function = click.option("-r", "--remote", "remote_name", default=None, metavar="NAME",
                            help="The remote to use (default: project.default_remote).")(function)
    return click.argument("targets", nargs=-1)(function)


def render_transfer(report: TransferReport, quiet: bool) -> bool:
    """Print a transfer's failures and its summary line; True if nothing failed."""
    for what, why in report.failed[:_SHOW_FAILED]:
        _error(f"{what}: {why}")
    if len(report.failed) > _SHOW_FAILED:
        _error(f"... and {len(report.failed) - _SHOW_FAILED} more failures")
    if not quiet or not report.ok:
        click.echo(report.summary(), err=True)
    return report.ok


def _render_checkout(report: CheckoutReport, quiet: bool) -> bool:
    from pivotbuild.cli import render_checkout

    return render_checkout(report, quiet, "not fetched")


def _transfer(obj: Any, verb: str, targets: tuple[str, ...], remote_name: str | None,
              jobs: int | None, run_cache: bool, wait: float | None = None) -> None:
    from pivotbuild import remote as remotes

    quiet = _quiet(obj)
    # Only pull writes the workspace: it holds the project lock, as checkout does. push reads;
    # fetch only adds cache objects, each atomically, which is safe beside any other command.
    with _opened(write=verb == "pull", wait=wait) as pipeline:
        names = pipeline.select(list(targets), single_item=bool(targets))
        remote = remotes.open_remote(pipeline.project, remote_name)
        progress = None if not quiet else False
        if verb == "push":
            ok = render_transfer(remotes.push(pipeline, names, remote, jobs or 0, run_cache,
                                              progress), quiet)
        elif verb == "fetch":
            ok = render_transfer(remotes.fetch(pipeline, names, remote, jobs or 0, run_cache,
                                               progress), quiet)
        else:
            report, checked_out = remotes.pull(pipeline, names, remote, jobs or 0, run_cache,
                                               progress)
            ok = render_transfer(report, quiet)
            ok = _render_checkout(checked_out, quiet) and ok
    if not ok:
        raise SystemExit(EXIT_FAILED)


@click.command("push")
@_transfer_options
@click.pass_obj
def push_command(obj: Any, targets: tuple[str, ...], remote_name: str | None, jobs: int | None,
                 run_cache: bool) -> None:
    """Upload the cached outputs the targets' locks record (default: every stage)."""
    _transfer(obj, "push", targets, remote_name, jobs, run_cache)


@click.command("fetch")
@_transfer_options
@click.pass_obj
def fetch_command(obj: Any, targets: tuple[str, ...], remote_name: str | None,
                  jobs: int | None, run_cache: bool) -> None:
    """Download the targets' cached outputs into the cache (each one rehashed)."""
    _transfer(obj, "fetch", targets, remote_name, jobs, run_cache)


@click.command("pull")
@_transfer_options
@click.option("--wait", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="If another command is writing this project, wait up to SECONDS for it.")
@click.pass_obj
def pull_command(obj: Any, targets: tuple[str, ...], remote_name: str | None, jobs: int | None,
                 run_cache: bool, wait: float | None) -> None:
    """fetch, then checkout: put the targets' outputs into the workspace."""
    _transfer(obj, "pull", targets, remote_name, jobs, run_cache, wait)


def register(cli: click.Group) -> None:
    """Add push, fetch and pull to the pivotbuild command group."""
    for command in (push_command, fetch_command, pull_command):
        cli.add_command(command)


def prefetch_for_repro_impl(obj: Any, pipeline: Any, names: list[str],
                            remote_name: str | None, jobs: int | None = None,
                            run_cache: bool = True) -> TransferReport:
    """What `repro --pull` does before planning: fetch what the stages can be restored from,
    print the failures and the summary line. With the run cache, it also gives the planner a
    remote lookup for run-cache misses met later (a stage below one that really ran), if the
    planner has the ``run_cache_miss`` hook. Returns the report, which those lookups keep
    filling: the caller goes on with repro either way and exits 1 at the end unless
    ``report.ok``."""
    from pivotbuild import remote as remotes

    quiet = _quiet(obj)
    remote = remotes.open_remote(pipeline.project, remote_name)
    report = remotes.prefetch_for_repro(pipeline, names, remote, jobs or 0, run_cache,
                                        None if not quiet else False)
    render_transfer(report, quiet)
    if run_cache and hasattr(pipeline.planner, "run_cache_miss"):
        pipeline.planner.run_cache_miss = remotes.RemoteRunCache(
            pipeline, remote, report, jobs or 0,
            on_failure=lambda what, why: _error(f"{what}: {why}"))
    return report


def remote_status_command_impl(obj: Any, targets: tuple[str, ...], remote_name: str | None,
                               as_json: bool = False, quiet: bool = False) -> None:
    """`status --remote [-r NAME] [--json] [-q]`: which cached outputs are missing on the
    remote, and which are only there. ``quiet``: print nothing, exit 1 if any output is not
    complete on the remote (as ``status -q``)."""
    from pivotbuild import remote as remotes

    with _opened() as pipeline:
        names = pipeline.select(list(targets))
        remote = remotes.open_remote(pipeline.project, remote_name)
        result = remotes.status_remote(pipeline, names, remote)
    not_pushed = [o for o in result.outputs
                  if o.status in (remotes.MISSING_ON_REMOTE, remotes.MISSING)]
    if quiet or _quiet(obj):
        raise SystemExit(EXIT_FAILED if quiet and not_pushed else EXIT_OK)
    for problem in result.problems:
        _warn(problem)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    labels = {
        remotes.MISSING_ON_REMOTE: "missing on the remote",
        remotes.ONLY_ON_REMOTE: "only on the remote (not in the local cache)",
        remotes.MISSING: "missing on the remote and in the local cache",
    }
    click.echo(f"remote '{remote.name}' ({remote.shown_url}):")
    for out in result.outputs:
        if out.status == remotes.IN_SYNC:
            continue
        detail = ""
        if out.objects > 1:
            count = out.not_on_remote if out.status != remotes.ONLY_ON_REMOTE else out.not_local
            detail = f" ({count} of {out.objects} objects)"
        click.echo(f"  {out.stage}: {out.path}: {labels[out.status]}{detail}")
    counts = {s: len(result.with_status(s)) for s in
              (remotes.IN_SYNC, remotes.MISSING_ON_REMOTE, remotes.ONLY_ON_REMOTE,
               remotes.MISSING)}
    click.echo(f"{counts[remotes.IN_SYNC]} in sync, {counts[remotes.MISSING_ON_REMOTE]} missing "
               f"on the remote, {counts[remotes.ONLY_ON_REMOTE]} only on the remote, "
               f"{counts[remotes.MISSING]} in neither")
