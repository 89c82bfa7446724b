"""The comparing commands (SPEC §11): metrics show|diff, params diff, plots show|diff, diff.

Each parses its options, calls one function of pivotbuild.compare and renders what it
returns (metrics.py and datadiff.py hold the renderers). They only read: no project lock.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pivotbuild.cli.common import Context, is_quiet, project_root, say
from pivotbuild.errors import UsageError

if TYPE_CHECKING:
    from pivotbuild.compare import ObjectReader, Targets


def _project() -> tuple[Path, Targets, Path]:
    """(the project root, its Targets, its cache directory), pivot.toml loaded only if it
    changed since the last time (compare.project_targets)."""
    from pivotbuild.compare import project_targets

    root = project_root()
    found, cache_dir = project_targets(root)
    return root, found, cache_dir


def _objects(root: Path, cache_dir: Path, pull: bool, remote: str | None) -> ObjectReader:
    from pivotbuild.compare import ObjectReader, remote_fetch
    from pivotbuild.names import object_name

    files = os.path.join(cache_dir, "files")
    fetch = None
    if pull:
        from pivotbuild.projectcache import load_project
        from pivotbuild.store import Cache

        project = load_project(root)
        fetch = remote_fetch(project, Cache(project.cache_dir), remote)
    elif remote is not None:
        raise UsageError("-r/--remote is only used with --pull")
    return ObjectReader(lambda digest: os.path.join(files, object_name(digest)), fetch)


def _print_json(doc: Any) -> None:
    say(json.dumps(doc, indent=2, ensure_ascii=False))


def _formats(as_json: bool, md: bool) -> None:
    if as_json and md:
        raise UsageError("--json and --md cannot be given together")


json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
md_option = click.option("--md", is_flag=True, help="Print a Markdown table (for a pull "
                         "request).")
all_option = click.option("-a", "--all", "show_all", is_flag=True,
                          help="List unchanged values too.")
pull_option = click.option("--pull", is_flag=True, help="Fetch cached files the revision "
                           "records that the local cache lacks from the remote.")
remote_option = click.option("-r", "--remote", default=None, metavar="NAME",
                             help="The remote for --pull (default: the default remote).")


# ---- metrics --------------------------------------------------------------------------------


@click.group("metrics")
def metrics_group() -> None:
    """Show the metrics outputs (metric = true), or how they changed since a git revision."""


@metrics_group.command("show")
@json_option
@md_option
def metrics_show_command(as_json: bool, md: bool) -> None:
    """Print each metrics file's flattened 'dotted.key  value'."""
    from pivotbuild import metrics
    from pivotbuild.compare import metrics_show

    _formats(as_json, md)
    root, found, _cache_dir = _project()
    doc = metrics_show(root, found)
    if as_json:
        _print_json(doc)
    else:
        say(metrics.render_show_md(doc) if md else metrics.render_show_text(doc), end="")


@metrics_group.command("diff")
@click.argument("rev", default="HEAD", required=False)
@json_option
@md_option
@all_option
@pull_option
@remote_option
def metrics_diff_command(rev: str, as_json: bool, md: bool, show_all: bool, pull: bool,
                         remote: str | None) -> None:
    """Compare the metrics of git revision REV (default HEAD) with the workspace.

    REV's files are read from git objects (never checked out); a cached metrics file
    through REV's lock and the cache, or the remote with --pull."""
    from pivotbuild import metrics
    from pivotbuild.compare import WORKSPACE, metrics_diff

    _formats(as_json, md)
    root, found, cache_dir = _project()
    revision, doc = metrics_diff(root, found, rev, _objects(root, cache_dir, pull, remote),
                                 all=show_all)
    if as_json:
        _print_json(doc)
        return
    render = metrics.render_diff_md if md else metrics.render_diff_text
    say(render(doc, revision.rev, WORKSPACE), end="")


# ---- params ---------------------------------------------------------------------------------


@click.group("params")
def params_group() -> None:
    """Compare the params the stages use with a git revision."""


@params_group.command("diff")
@click.argument("rev", default="HEAD", required=False)
@json_option
@md_option
@all_option
def params_diff_command(rev: str, as_json: bool, md: bool, show_all: bool) -> None:
    """Compare the params the stages use (pivot.toml and REV's locks) at git revision REV
    (default HEAD) with the workspace, keyed by params file."""
    from pivotbuild import metrics
    from pivotbuild.compare import WORKSPACE, params_diff

    _formats(as_json, md)
    root, found, _cache_dir = _project()
    revision, doc = params_diff(root, found, rev, all=show_all)
    if as_json:
        _print_json(doc)
        return
    render = metrics.render_diff_md if md else metrics.render_diff_text
    say(render(doc, revision.rev, WORKSPACE, kind="Param"), end="")


# ---- plots ----------------------------------------------------------------------------------


@click.group("plots")
def plots_group() -> None:
    """Draw the plot outputs (plot = ...) on one offline HTML page."""


output_option = click.option("-o", "--output", default="plots.html", show_default=True,
                             type=click.Path(dir_okay=False), metavar="FILE",
                             help="Where to write the page.")
open_option = click.option("--open", "open_page", is_flag=True,
                           help="Open the page in a web browser.")


def _write_page(obj: Context | None, page: str, output: str, open_page: bool, charts: int
                ) -> None:
    target = Path(output)
    try:
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        from pivotbuild.errors import OperationError

        raise OperationError(f"{output}: cannot write the page: {exc.strerror or exc}") from None
    if not is_quiet(obj):
        say(f"{output}: {charts} chart{'' if charts == 1 else 's'}")
    if open_page:
        import webbrowser

        webbrowser.open(target.resolve().as_uri())


@plots_group.command("show")
@output_option
@open_option
@click.pass_obj
def plots_show_command(obj: Context | None, output: str, open_page: bool) -> None:
    """Write one self-contained HTML page (it works offline) with a chart per plot output
    of the workspace."""
    from pivotbuild.compare import plots_page

    root, found, cache_dir = _project()
    page, doc = plots_page(root, found, [], _objects(root, cache_dir, False, None),
                           workspace=True, title="pivotbuild plots")
    _write_page(obj, page, output, open_page, len(doc["plots"]))


@plots_group.command("diff")
@click.argument("revs", nargs=-1)
@output_option
@open_option
@pull_option
@remote_option
@click.pass_obj
def plots_diff_command(obj: Context | None, revs: tuple[str, ...], output: str,
                       open_page: bool, pull: bool, remote: str | None) -> None:
    """Overlay the plot outputs of git revisions REVS on one offline HTML page.

    No REV: HEAD and the workspace; one REV: it and the workspace; several: those
    revisions only, in the order given."""
    from pivotbuild.compare import plots_page

    root, found, cache_dir = _project()
    revisions = list(revs) or ["HEAD"]
    workspace = len(revisions) == 1
    shown = [*revisions, "workspace"] if workspace else revisions
    page, doc = plots_page(root, found, revisions, _objects(root, cache_dir, pull, remote),
                           workspace=workspace,
                           title=f"pivotbuild plots diff: {' vs '.join(shown)}")
    _write_page(obj, page, output, open_page, len(doc["plots"]))


# ---- diff -----------------------------------------------------------------------------------


@click.command("diff")
@click.argument("rev", default="HEAD", required=False)
@json_option
@md_option
def diff_command(rev: str, as_json: bool, md: bool) -> None:
    """Show the outputs and tracked paths added, deleted or modified since a git revision.

    REV (default HEAD) is compared with the workspace; inside directories, per file when
    both manifests are in the cache."""
    from pivotbuild import datadiff
    from pivotbuild.cli.common import opened
    from pivotbuild.compare import data_diff

    _formats(as_json, md)
    with opened() as pipeline:
        _revision, doc = data_diff(pipeline, rev)
    if as_json:
        _print_json(doc)
    else:
        say(datadiff.render_md(doc) if md else datadiff.render_text(doc), end="")


COMMANDS = (diff_command, metrics_group, params_group, plots_group)
