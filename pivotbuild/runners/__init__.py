"""How one stage's commands run: the StageRunner interface the executor schedules through.

The executor (execute.py) decides when a stage runs; a runner decides where and how its
commands run. ``local.py`` runs them as subprocesses of this machine; a cluster runner runs
them elsewhere. Nothing here assumes a local process: a runner gets a ``StageSpec`` (what to
run, against which declared paths), an output sink that takes whole lines, and a ``Cancel``
the executor sets on an interrupt; it returns the exit status of the stage's commands.

Everything else a stage needs (deleting and restoring outputs before it runs, hashing and
committing after) stays with the client: a runner only runs commands.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

#: A stage's output, one whole line at a time (with or without its newline).
OutputSink = Callable[[str], None]

#: The exit status of a stage interrupted before or while its commands ran (128 + SIGINT).
INTERRUPTED = 130


@dataclass(frozen=True, slots=True)
class StageSpec:
    """What a runner needs to run one stage: paths are project-relative, ``root`` is the
    project's absolute path on the client."""

    name: str
    cmd: tuple[str, ...]  # run in order under /bin/sh -c; stop at the first failure
    root: str
    wdir: str = "."
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    persist: tuple[str, ...] = ()  # the outs kept from the previous run
    env: Mapping[str, str] = field(default_factory=dict)  # set for the commands, on top of
    # whatever environment the runner gives them
    console: bool = False  # the console pool: the commands get the terminal, not the sink
    console_stdout: int = 1  # a console stage's stdout: this descriptor (2 under --json)


class Cancel:
    """Set once, on an interrupt: runners stop what they run and start nothing more.

    A runner registers with ``on_cancel`` what stops its work; ``set`` calls those
    callbacks (in the caller's thread, in order) and returns when they have returned."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._callbacks: list[Callable[[], None]] = []

    def is_set(self) -> bool:
        return self._set

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when cancelled (at once if that has happened)."""
        with self._lock:
            if not self._set:
                self._callbacks.append(callback)
                return
        callback()

    def set(self) -> None:
        with self._lock:
            self._set = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


class StageRunner(Protocol):
    """Runs stages' commands for one executor run (thread-safe: several stages at once)."""

    def open(self, cancel: Cancel) -> None:
        """Called once, from the main thread, before the first stage runs; ``cancel`` is the
        one every ``run`` of this executor run gets."""

    def run(self, spec: StageSpec, output: OutputSink, cancel: Cancel) -> int:
        """Run the stage's commands in order, stopping at the first failure; send their
        output (stdout and stderr together) to ``output`` a line at a time; return 0, the
        failing command's exit status (128 + N for a signal N), or INTERRUPTED once
        ``cancel`` is set. Whatever the commands wrote to the declared outputs is in the
        client's workspace (under ``spec.root``) when this returns: a runner that runs
        elsewhere brings it back (on failure too, as far as it can), since the client
        hashes and commits it."""
        ...

    def close(self) -> None:
        """The executor run is over (every ``run`` has returned)."""
