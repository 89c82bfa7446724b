"""The command line: the click group, ``main`` (errors → one line and an exit code), registration.

The commands live beside it: pipeline.py (init, status, repro, commit, checkout, verify, gc,
dag, history), remote.py (push, fetch, pull, status --remote), dvc.py (import-dvc), tools.py
(schema, completion, list); common.py holds what they
share. Each command parses its arguments, calls one function and renders the result. Heavy
modules (pydantic, networkx, rich, fsspec) are imported inside the commands that need them;
``hash`` and the no-op fast path do not come here at all (entry.py).
"""

from __future__ import annotations

import os
import sys

import click

from pivotbuild import __version__
from pivotbuild.cli import build, dvc, pipeline, remote, tools, track
from pivotbuild.cli.common import Context, error, jobs_option
from pivotbuild.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, PivotError, UsageError


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
@jobs_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
@click.option("--no-state", is_flag=True, help="Neither read nor update the stat memo.")
def hash_command(paths: tuple[str, ...], jobs: int | None, as_json: bool,
                 no_state: bool) -> None:
    """Print '<hash>  <path>' for each PATH (xxhsum -H2 compatible for files).

    Directories print '<hash>.dir'. Inside a project the stat memo
    (.pivotbuild/state.db) spares re-reading unchanged files.
    """
    from pivotbuild.hashcmd import run_hash

    code = run_hash(paths, jobs or 0, as_json, no_state)
    if code:
        raise SystemExit(code)


for _command in (*pipeline.COMMANDS, *remote.COMMANDS, *track.COMMANDS, *dvc.COMMANDS,
                 *tools.COMMANDS, *build.COMMANDS):
    cli.add_command(_command)
tools.add_stage_completion(cli)  # after every command is registered


def _invoke(argv: list[str] | None) -> int | None:
    """Parse and run one command line. Not click's main(): an interrupt must reach main()
    below as itself (click would print a blank line and turn it into Abort)."""
    if os.environ.get(tools.COMPLETE_VAR):  # the shell asks for completions (`completion`)
        return tools.complete(cli)
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        with cli.make_context("pivotbuild", args) as ctx:
            result: int | None = cli.invoke(ctx)
            return result
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
        error(str(exc))
        code = exc.exit_code
    except click.exceptions.Abort:
        code = EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except KeyboardInterrupt as exc:
        error("interrupted")
        code = interrupted_exit_code(exc)
    except BrokenPipeError:
        # Output piped into head or similar: not an error worth a traceback.
        sys.stderr.close()
        code = EXIT_OK
    except OSError as exc:
        # An operation the system refused (a full disk, a read-only file system, ...).
        where = f"{exc.filename}: " if exc.filename else ""
        error(f"{where}{exc.strerror or exc}")
        code = EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        error(f"internal error: {type(exc).__name__}: {exc} (please report this; "
              "run with -v for the traceback)")
        if "-v" in sys.argv or "--verbose" in sys.argv:
            import traceback

            traceback.print_exc()
        code = EXIT_FAILED
    if code is None:
        code = EXIT_OK
    sys.exit(code)


__all__ = ["cli", "main"]
