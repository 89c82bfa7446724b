"""The console entry point, with fast paths for `hash`, `--version` and the no-op.

`pivotbuild hash` is the command people time against xxhsum: loading click
costs more than hashing a gigabyte. So a command line that is plainly
`[-C DIR] [-q|-v]... hash [-j N] [--json] [--no-state] PATH...` runs without
it. A no-op `status`, `repro`, `verify` or `dag` is answered from the pipeline
snapshot without click, pydantic or networkx (fastpath.py). Anything else
(--help, an unknown option, a mistake, a stale stage) goes to click (cli/),
which stays the one place that defines and documents the commands.

Start-up is the no-op's largest part, so this module imports nothing at load
time but ``sys`` and ``time`` (both built in): ``--version`` is answered before
anything else is imported, and every other module is imported by the path that
needs it.
"""

from __future__ import annotations

import sys
import time

_STARTED = time.monotonic()  # the repro summary's wall time counts from here

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing costs start-up time

if TYPE_CHECKING:
    from types import FrameType


def _parse_hash(argv: list[str]) -> tuple[str | None, list[str], int, bool, bool] | None:
    """(directory, paths, jobs, as_json, no_state), or None to let click handle it."""
    directory = None
    i = 0
    while i < len(argv) and argv[i] != "hash":
        arg = argv[i]
        if arg == "-C" and i + 1 < len(argv):
            directory = argv[i + 1]
            i += 2
        elif arg in ("-q", "--quiet", "-v", "--verbose"):
            i += 1
        else:
            return None
    if i >= len(argv):
        return None
    paths: list[str] = []
    jobs, as_json, no_state, options_done = 0, False, False, False
    rest = argv[i + 1 :]
    j = 0
    while j < len(rest):
        arg = rest[j]
        if options_done or not arg.startswith("-") or arg == "-":
            paths.append(arg)
        elif arg == "--":
            options_done = True
        elif arg == "--json":
            as_json = True
        elif arg == "--no-state":
            no_state = True
        elif arg in ("-j", "--jobs") and j + 1 < len(rest) and rest[j + 1].isdigit():
            jobs = int(rest[j + 1])
            j += 1
        elif arg.startswith("-j") and arg[2:].isdigit():
            jobs = int(arg[2:])
        else:
            return None
        j += 1
    if not paths or jobs < 0 or (jobs == 0 and any(a in ("-j", "--jobs") for a in rest)):
        return None  # click says what is wrong
    return directory, paths, jobs, as_json, no_state


# The commands the no-op fast path may answer (fastpath.COMMANDS), looked for before
# importing it.
_FAST_COMMANDS = frozenset(("status", "repro", "verify", "dag"))


def _fast_path(argv: list[str]) -> None:
    """A no-op status, repro, verify or dag answered from the pipeline snapshot
    (fastpath.py); exits if it answered. PIVOTBUILD_NO_FASTPATH=1 turns it off."""
    import os

    if os.environ.get("PIVOTBUILD_NO_FASTPATH") == "1" or _FAST_COMMANDS.isdisjoint(argv):
        return
    from pivotbuild import fastpath

    request = fastpath.parse(argv)
    if request is None:
        return
    try:
        code = fastpath.run(request, _STARTED)
    except KeyboardInterrupt as exc:
        print("pivotbuild: error: interrupted", file=sys.stderr)
        sys.exit(interrupted_exit_code(exc))
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(0)
    except OSError as exc:  # the full path runs into the same problem and names it
        request.why = f"{exc.filename or ''}: {exc.strerror or exc}"
        code = None
    except Exception as exc:  # noqa: BLE001 - a fault here must not cost the answer
        request.why = f"internal error: {type(exc).__name__}: {exc}"
        code = None
    if os.environ.get("PIVOTBUILD_FASTPATH_TRACE") == "1":
        said = "answered" if code is not None else f"not taken: {request.why}"
        print(f"pivotbuild: fast path {said}", file=sys.stderr)
    if code is not None:
        sys.exit(code)


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where SIGINT raises KeyboardInterrupt, so that every
    cleanup that handles Ctrl-C (stop the commands, write no lock) handles them too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _redeliver_interrupt(unraisable: sys.UnraisableHookArgs) -> None:
    """An interrupt raised where Python cannot let it propagate (a finalizer, a weakref
    callback) would be printed as "Exception ignored" and lost: send the signal again
    instead, so that it arrives at the next point that can raise it."""
    exc = unraisable.exc_value
    if isinstance(exc, KeyboardInterrupt):
        import os
        import signal
        import threading

        # A moment later, from another thread: raised here, in the hook, it would be
        # ignored once more.
        again = threading.Timer(0.05, os.kill,
                                (os.getpid(), getattr(exc, "signum", signal.SIGINT)))
        again.daemon = True
        again.start()
        return
    sys.__unraisablehook__(unraisable)


def interrupted_exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    import signal

    return 128 + getattr(exc, "signum", signal.SIGINT)


def main() -> None:
    """Run one command with SIGTERM and SIGHUP handled as SIGINT (unless they were ignored
    when it started, as under nohup). Once the command is done, they get their default
    action back: one that comes while the interpreter shuts down ends it at once instead of
    raising inside its shutdown."""
    if sys.argv[1:] == ["--version"]:  # as click's version_option says it, importing nothing
        from pivotbuild import __version__

        sys.stdout.write(f"pivotbuild, version {__version__}\n")
        sys.exit(0)
    import signal

    stop_signals = (signal.SIGTERM, signal.SIGHUP)
    caught = [s for s in stop_signals if signal.getsignal(s) == signal.SIG_DFL]
    for signum in caught:
        signal.signal(signum, _raise_interrupted)
    sys.unraisablehook = _redeliver_interrupt
    try:
        _main()
    except KeyboardInterrupt as exc:
        # Raised before a command's own handler is in place (while click and the command's
        # modules are imported): still one line and 128 + the signal, never a traceback.
        print("pivotbuild: error: interrupted", file=sys.stderr)
        sys.exit(interrupted_exit_code(exc))
    finally:
        for signum in caught:
            signal.signal(signum, signal.SIG_DFL)


def _main() -> None:
    import gc

    # A pivotbuild run is short-lived and builds large acyclic structures (a 100,000-line
    # manifest, thousands of plan records); collecting cycles among them after every 700
    # allocations is pure overhead (measured: 4% of a 100,000-file pull), so collect rarely.
    gc.set_threshold(100_000, 50, 50)
    argv = sys.argv[1:]
    parsed = _parse_hash(argv)
    if parsed is None:
        _fast_path(argv)  # returns only if the full command line must answer
        from pivotbuild.cli import main as cli_main

        cli_main()
        return
    import os

    from pivotbuild.errors import EXIT_FAILED

    directory, paths, jobs, as_json, no_state = parsed
    try:
        if directory is not None:
            os.chdir(directory)
        from pivotbuild.hashcmd import run_hash

        code = run_hash(paths, jobs, as_json, no_state)
    except KeyboardInterrupt as exc:
        print("pivotbuild: error: interrupted", file=sys.stderr)
        code = interrupted_exit_code(exc)
    except BrokenPipeError:
        sys.stderr.close()
        code = 0
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"pivotbuild: error: {where}{exc.strerror or exc}", file=sys.stderr)
        code = EXIT_FAILED if directory is None else 2
    sys.exit(code)
