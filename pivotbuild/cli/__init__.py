"""The command line: the click group, ``main`` (errors → one line and an exit code), registration.

The commands live beside it: pipeline.py (init, status, repro, commit, checkout, verify, gc,
dag, history), remote.py (push, fetch, pull, status --remote), dvc.py (import-dvc), tools.py
(schema, completion, list); common.py holds what they
share. Each command parses its arguments, calls one function and renders the result. Heavy
modules (pydantic, networkx, rich, fsspec) are imported inside the commands that need them;
``hash`` and the no-op fast path do not come here at all (entry.py).

The group is lazy: COMMAND_TABLE names every command, its module and the short help
``--help`` lists, so that ``pivotbuild --help`` imports none of the command modules and
``pivotbuild status`` only pipeline.py. A test (tests/cli/test_fastpath.py) keeps the table
equal to what the modules' ``COMMANDS`` define.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from pivotbuild import __version__
from pivotbuild.cli.common import Context, error, jobs_option
from pivotbuild.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, PivotError, UsageError

# (command, its module in pivotbuild.cli, its help's first sentence): one line per command.
COMMAND_TABLE: tuple[tuple[str, str, str], ...] = (
    ("checkout", "pipeline", "Put the cached outputs recorded in the locks into the workspace."),
    ("clean", "build", "Delete the workspace outputs of the TARGETS (default: every stage's)."),
    ("commit", "pipeline",
     "Record the workspace as it is for stale stages (or the named ones), without running."),
    ("compdb", "build",
     "Print a JSON compilation database (compile_commands.json) for the STAGES."),
    ("completion", "tools", "Print the completion script for SHELL (bash, zsh or fish)."),
    ("dag", "pipeline", "Print the stage graph."),
    ("diff", "compare",
     "Show the outputs and tracked paths added, deleted or modified since a git revision."),
    ("fetch", "remote",
     "Download the targets' cached outputs into the cache (each one rehashed)."),
    ("gc", "pipeline",
     "Delete cache objects and run-cache entries that no current lock or .pvt references."),
    ("history", "pipeline",
     "List past runs: run id, stage, start, duration, status, input hash, committed."),
    ("import-dvc", "dvc",
     "Convert dvc.yaml (with params, dvc.lock, .dvc/config) into pivot.toml."),
    ("init", "pipeline", "Create pivot.toml (if absent) and .pivotbuild/ with its .gitignore."),
    ("list", "tools",
     "List the stages (matrix and foreach instances expanded) with their desc."),
    ("metrics", "compare",
     "Show the metrics outputs (metric = true), or how they changed since a git revision."),
    ("params", "compare", "Compare the params the stages use with a git revision."),
    ("plots", "compare", "Draw the plot outputs (plot = ...) on one offline HTML page."),
    ("pull", "remote", "fetch, then checkout: put the targets' outputs into the workspace."),
    ("push", "remote",
     "Upload the cached outputs the targets' locks record (default: every stage)."),
    ("repro", "pipeline",
     "Bring the targets (default: every stage) and their upstream up to date."),
    ("schema", "tools", "Print the JSON Schema of pivot.toml, for editors."),
    ("status", "pipeline",
     "Show which stages are stale and why (--remote: what the remote lacks or has)."),
    ("track", "track",
     "Store files or directories no stage produces in the cache and record each in PATH.pvt."),
    ("verify", "pipeline",
     "Exit 0 only if every stage is up to date and its cached outputs are in the cache."),
)
COMMAND_MODULES = tuple(dict.fromkeys(module for _, module, _ in COMMAND_TABLE))
COMPLETE_VAR = "_PIVOTBUILD_COMPLETE"  # as cli/tools.py spells it (the same test checks)


class LazyGroup(click.Group):
    """A group whose commands' modules are imported when a command is looked up, and whose
    ``--help`` lists the commands from COMMAND_TABLE without importing them."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._loaded: set[str] = set()

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *(name for name, _, _ in COMMAND_TABLE)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            modules = [m for name, m, _ in COMMAND_TABLE if name == cmd_name]
            for module in modules or COMMAND_MODULES:  # not in the table: look everywhere
                self.load(module)
        return self.commands.get(cmd_name)

    def load(self, module_name: str) -> None:
        """Register the commands of pivotbuild.cli.<module_name> (once)."""
        if module_name in self._loaded:
            return
        module = importlib.import_module(f"pivotbuild.cli.{module_name}")
        self._loaded.add(module_name)
        for command in module.COMMANDS:
            self.add_command(command)
        if os.environ.get(COMPLETE_VAR):  # only the shell's completion requests need this
            from pivotbuild.cli.tools import add_stage_completion

            add_stage_completion(self)  # the stage arguments of what was just added

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click lists them, the help of commands not yet imported from COMMAND_TABLE."""
        table = {name: click.Command(name, help=text) for name, _, text in COMMAND_TABLE}
        commands = [(name, self.commands.get(name) or table[name])
                    for name in self.list_commands(ctx)]
        commands = [(name, command) for name, command in commands if not command.hidden]
        if not commands:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in commands)
        with formatter.section("Commands"):
            formatter.write_dl([(name, command.get_short_help_str(limit))
                                for name, command in commands])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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




def _invoke(argv: list[str] | None) -> int | None:
    """Parse and run one command line. Not click's main(): an interrupt must reach main()
    below as itself (click would print a blank line and turn it into Abort)."""
    if os.environ.get(COMPLETE_VAR):  # the shell asks for completions (`completion`)
        from pivotbuild.cli import tools

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
