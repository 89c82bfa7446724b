"""What every command shares: the global options, the opened project, and the error lines.

Commands parse arguments, call one function and render its result; the lines they print
about problems go through ``warn`` / ``error`` (``pivotbuild: warning|error: ...`` on stderr,
a URL's userinfo never shown).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pivotbuild.urls import redact_text

if TYPE_CHECKING:
    from pivotbuild.checkout import CheckoutReport
    from pivotbuild.pipeline import Pipeline

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    """What every command gets: the global options."""

    def __init__(self, verbose: int, quiet: bool) -> None:
        self.verbose = verbose
        self.quiet = quiet


def is_quiet(obj: Context | None) -> bool:
    """-q given before the command (False without a Context, as when a test calls a command's
    function directly)."""
    return bool(getattr(obj, "quiet", False))


def jobs_option(function: F) -> F:
    return click.option(
        "-j", "--jobs", type=click.IntRange(min=1), default=None,
        help="Threads or parallel stages (default: all cores).",
    )(function)


def wait_option(function: F) -> F:
    return click.option(
        "--wait", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
        help="If another command is writing this project, wait up to SECONDS for it.",
    )(function)


def _parse_sets(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
                ) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for text in values:
        name, eq, value = text.partition("=")
        if not eq or not name.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got {text!r}", ctx, param)
        overrides[name.strip()] = value  # a later --set of the same name wins, as in make
    return overrides


def set_option(function: F) -> F:
    """``--set NAME=VALUE`` (repeatable) → the command's ``overrides: dict[str, str]``,
    handed to config.load_project (an unknown NAME exits 2 there)."""
    return click.option(
        "--set", "overrides", multiple=True, metavar="NAME=VALUE", callback=_parse_sets,
        help="Replace a [vars] value for this run (dotted for nested tables; repeatable), "
             "like make CC=clang.",
    )(function)


def project_root() -> Path:
    """The project the working directory is in; UsageError (exit 2) if none."""
    from pivotbuild.paths import find_root

    return find_root(Path.cwd())


@contextlib.contextmanager
def opened(hash_jobs: int = 0, *, write: bool = False, wait: float | None = None,
           overrides: Mapping[str, str] | None = None) -> Iterator[Pipeline]:
    """The opened project; ``write``: also hold the project lock (projectlock.py);
    ``overrides``: ``--set`` values for [vars]."""
    from pivotbuild.prefetch import Prefetch

    root = project_root()
    prefetch = Prefetch(root, hash_jobs)  # hashes in C while the modules below load

    from pivotbuild.paths import ensure_state_dir
    from pivotbuild.pipeline import opened as open_pipeline
    from pivotbuild.projectlock import project_lock

    with open_pipeline(root, hash_jobs, prefetch.take, overrides=overrides) as pipeline:
        if not write:
            yield pipeline
            return
        with project_lock(ensure_state_dir(pipeline.root), wait):
            yield pipeline


def say(text: str, *, err: bool = False, end: str = "\n") -> None:
    """Print ``text`` + ``end`` on stdout (``err``: stderr). Through report.py's one writer once
    that is loaded (a run's or a transfer's bar may be on the terminal, and lines from other
    threads may come); before that nothing else writes, and loading it (it loads the planner)
    would double the time an early error such as 'no pivot.toml found' takes."""
    stream = sys.stderr if err else sys.stdout
    report = sys.modules.get("pivotbuild.report")
    if report is not None:
        if text or end:
            report.LINES.line(text + end, stream)
        return
    stream.write(text + end)
    stream.flush()


def warn(message: str) -> None:
    say(f"pivotbuild: warning: {redact_text(message)}", err=True)


def error(message: str) -> None:
    # Any message may quote a URL (a remote library's error): never with its userinfo.
    say(f"pivotbuild: error: {redact_text(message)}", err=True)


def count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def render_checkout(report: CheckoutReport, quiet: bool, missing_hint: str) -> bool:
    """Print what a checkout did (also after pull); True if it all went well."""
    if not quiet:
        for path in report.restored:
            say(f"Restored {path}")
    for message in report.problems:
        error(message)
    if report.conflicts:
        error("checkout would clobber (use 'pivotbuild checkout --force' to overwrite): "
              + ", ".join(report.conflicts))
    for path, digest in report.missing:
        error(f"{path}: cache object {digest} is missing ({missing_hint})")
    if not quiet:
        say(f"checkout: {len(report.restored)} restored, {len(report.unchanged)} "
                   f"unchanged, {len(report.conflicts)} conflicts, {len(report.missing)} "
                   "missing", err=True)
    return report.ok
