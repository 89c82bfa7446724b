"""The command line: parse arguments, call one function, render the result.

Heavy modules (pydantic, networkx) are imported inside the commands that need
them, so that quick commands such as ``hash`` start fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from pivotbuild import __version__
from pivotbuild.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, PivotError, UsageError


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
    from pivotbuild.state import StateDB
    from pivotbuild.workspace import STATE_DIR, Hasher, find_project_root

    root = find_project_root(Path.cwd())
    state = None if no_state or root is None else StateDB(root / STATE_DIR / "state.db")
    try:
        results = Hasher(root, state, jobs or 0).hash_paths(list(paths))
    finally:
        if state is not None:
            state.close()
    failed = False
    if as_json:
        doc = {"paths": [], "errors": []}
        for r in results:
            if r.hash is not None:
                item = {"path": r.path, "hash": r.hash, "size": r.size}
                if r.is_dir:
                    item["nfiles"] = r.nfiles
                doc["paths"].append(item)
            doc["errors"].extend({"path": p, "error": e} for p, e in r.errors)
        click.echo(json.dumps(doc, indent=2))
        failed = bool(doc["errors"])
    else:
        out = sys.stdout
        for r in results:
            if r.hash is not None:
                out.write(f"{r.hash}  {r.path}\n")
            for shown, problem in r.errors:
                failed = True
                _error(f"{shown}: {problem}")
        out.flush()
    if failed:
        raise SystemExit(EXIT_FAILED)


def _error(message: str) -> None:
    click.echo(f"pivotbuild: error: {message}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning every known error into one line and an exit code."""
    try:
        code = cli.main(args=argv, prog_name="pivotbuild", standalone_mode=False)
    except PivotError as exc:
        _error(str(exc))
        code = exc.exit_code
    except click.exceptions.Abort:
        code = EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # Output piped into head or similar: not an error worth a traceback.
        sys.stderr.close()
        code = EXIT_OK
    if code is None:
        code = EXIT_OK
    sys.exit(code)
