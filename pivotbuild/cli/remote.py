"""The remote commands: push, fetch, pull, and ``status --remote`` (and ``repro --pull``'s fetch).

Each parses its arguments, calls one function of the remote package and renders its report.
Errors are one line each (``pivotbuild: error: ...``) on stderr; a summary line closes every
transfer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from pivotbuild.cli.common import (
    Context,
    error,
    is_quiet,
    opened,
    render_checkout,
    say,
    wait_option,
    warn,
)
from pivotbuild.errors import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from pivotbuild.pipeline import Pipeline, RunCacheMiss
    from pivotbuild.remote import TransferReport

_SHOW_FAILED = 20  # failures listed one per line; past that, a count


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
        error(f"{what}: {why}")
    if len(report.failed) > _SHOW_FAILED:
        error(f"... and {len(report.failed) - _SHOW_FAILED} more failures")
    if not quiet or not report.ok:
        say(report.summary(), err=True)
    return report.ok


def _transfer(obj: Context | None, verb: str, targets: tuple[str, ...], remote_name: str | None,
              jobs: int | None, run_cache: bool, wait: float | None = None) -> None:
    from pivotbuild import remote as remotes

    quiet = is_quiet(obj)
    # Only pull writes the workspace: it holds the project lock, as checkout does. push reads;
    # fetch only adds cache objects, each atomically, which is safe beside any other command.
    with opened(write=verb == "pull", wait=wait) as pipeline:
        from pivotbuild.tracked import select_targets

        names, tracked = select_targets(pipeline, list(targets), single_item=bool(targets))
        remote = remotes.open_remote(pipeline.project, remote_name)
        progress = None if not quiet else False
        if verb == "push":
            ok = render_transfer(remotes.push(pipeline, names, remote, jobs or 0, run_cache,
                                              progress, tracked), quiet)
        elif verb == "fetch":
            ok = render_transfer(remotes.fetch(pipeline, names, remote, jobs or 0, run_cache,
                                               progress, tracked), quiet)
        else:
            report, checked_out = remotes.pull(pipeline, names, remote, jobs or 0, run_cache,
                                               progress, tracked)
            ok = render_transfer(report, quiet)
            ok = render_checkout(checked_out, quiet, "not fetched") and ok
    if not ok:
        raise SystemExit(EXIT_FAILED)


@click.command("push")
@_transfer_options
@click.pass_obj
def push_command(obj: Context | None, targets: tuple[str, ...], remote_name: str | None,
                 jobs: int | None, run_cache: bool) -> None:
    """Upload the cached outputs the targets' locks record (default: every stage)."""
    _transfer(obj, "push", targets, remote_name, jobs, run_cache)


@click.command("fetch")
@_transfer_options
@click.pass_obj
def fetch_command(obj: Context | None, targets: tuple[str, ...], remote_name: str | None,
                  jobs: int | None, run_cache: bool) -> None:
    """Download the targets' cached outputs into the cache (each one rehashed)."""
    _transfer(obj, "fetch", targets, remote_name, jobs, run_cache)


@click.command("pull")
@_transfer_options
@wait_option
@click.pass_obj
def pull_command(obj: Context | None, targets: tuple[str, ...], remote_name: str | None,
                 jobs: int | None, run_cache: bool, wait: float | None) -> None:
    """fetch, then checkout: put the targets' outputs into the workspace."""
    _transfer(obj, "pull", targets, remote_name, jobs, run_cache, wait)


def prefetch_for_repro_impl(obj: Context | None, pipeline: Pipeline, names: list[str],
                            remote_name: str | None, jobs: int | None = None,
                            run_cache: bool = True
                            ) -> tuple[TransferReport, RunCacheMiss | None]:
    """What `repro --pull` does before planning: fetch what the stages can be restored from,
    print the failures and the summary line. With the run cache, it also returns the remote
    lookup for run-cache misses met later (a stage below one that really ran), for
    ``Pipeline.repro(run_cache_miss=...)``. The report is returned too, and those lookups
    keep filling it: the caller goes on with repro either way and exits 1 at the end unless
    ``report.ok``."""
    from pivotbuild import remote as remotes

    quiet = is_quiet(obj)
    remote = remotes.open_remote(pipeline.project, remote_name)
    report = remotes.prefetch_for_repro(pipeline, names, remote, jobs or 0, run_cache,
                                        None if not quiet else False)
    render_transfer(report, quiet)
    miss = remotes.RemoteRunCache(pipeline, remote, report, jobs or 0,
                                  on_failure=lambda what, why: error(f"{what}: {why}"))
    return report, miss if run_cache else None


def remote_status_command_impl(obj: Context | None, targets: tuple[str, ...],
                               remote_name: str | None, as_json: bool = False,
                               quiet: bool = False) -> None:
    """`status --remote [-r NAME] [--json] [-q]`: which cached outputs are missing on the
    remote, and which are only there. ``quiet``: print nothing, exit 1 if any output is not
    complete on the remote (as ``status -q``)."""
    from pivotbuild import remote as remotes

    with opened() as pipeline:
        from pivotbuild.tracked import select_targets

        names, tracked = select_targets(pipeline, list(targets))
        remote = remotes.open_remote(pipeline.project, remote_name)
        result = remotes.status_remote(pipeline, names, remote, tracked)
    not_pushed = [o for o in result.outputs
                  if o.status in (remotes.MISSING_ON_REMOTE, remotes.MISSING)]
    if quiet or is_quiet(obj):
        raise SystemExit(EXIT_FAILED if quiet and not_pushed else EXIT_OK)
    for problem in result.problems:
        warn(problem)
    if as_json:
        say(json.dumps(result.to_dict(), indent=2))
        return
    labels = {
        remotes.MISSING_ON_REMOTE: "missing on the remote",
        remotes.ONLY_ON_REMOTE: "only on the remote (not in the local cache)",
        remotes.MISSING: "missing on the remote and in the local cache",
    }
    say(f"remote '{remote.name}' ({remote.shown_url}):")
    for out in result.outputs:
        if out.status == remotes.IN_SYNC:
            continue
        detail = ""
        if out.objects > 1:
            count = out.not_on_remote if out.status != remotes.ONLY_ON_REMOTE else out.not_local
            detail = f" ({count} of {out.objects} objects)"
        owner = f"{out.stage}: " if out.stage else ""  # none: a tracked path
        say(f"  {owner}{out.path}: {labels[out.status]}{detail}")
    counts = {s: len(result.with_status(s)) for s in
              (remotes.IN_SYNC, remotes.MISSING_ON_REMOTE, remotes.ONLY_ON_REMOTE,
               remotes.MISSING)}
    say(f"{counts[remotes.IN_SYNC]} in sync, {counts[remotes.MISSING_ON_REMOTE]} missing "
               f"on the remote, {counts[remotes.ONLY_ON_REMOTE]} only on the remote, "
               f"{counts[remotes.MISSING]} in neither")


COMMANDS = (push_command, fetch_command, pull_command)
