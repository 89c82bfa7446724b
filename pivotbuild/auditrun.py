"""`repro --audit` over one repro: each stage run traced (audit.py), then the project files it
read but neither declared, discovered nor wrote itself, named per stage.

``TracingRunner`` wraps the runner of commands on this machine (runners/local.py): it asks
``Audit.tracer()`` how to run a stage's commands (an environment and a command prefix, so the
runner itself is unchanged) and hands the trace to ``Audit.traced()`` once they have ended;
after a successful run the executor asks ``Audit.undeclared()`` for the stage's list (the
``undeclared_reads`` of its result). What is left out of that list,
besides the stage's declared deps (and everything below a declared directory), its discovered
deps, its outs (and everything below a directory out) and its params files:

- directories (a ``cd``, a listing, a ``stat`` of a directory is not a read of a file);
- anything in ``.git/`` or ``.pivotbuild/``, and ``__pycache__`` files (Python's caches of
  module sources, whose source files the audit does see);
- files of a Python installation kept inside the project: below a directory holding a
  ``pyvenv.cfg`` (a virtual environment), or below a ``site-packages`` / ``dist-packages``
  directory;
- files the stage's own commands wrote during this run before reading them (an intermediate
  file passed from one command to the next).

Notices about the tracing itself (strace used, a program that could not be traced) are said
once per repro, through ``notice``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pivotbuild import audit
from pivotbuild.paths import GIT_DIR, covered
from pivotbuild.runners import Cancel, OutputSink, StageRunner, StageSpec

if TYPE_CHECKING:
    from pivotbuild.config import Stage

TRACE_DIR = Path("tmp", "audit")  # below the state directory
DEFAULT_PARAMS_FILE = "params.toml"
_CACHE_PARTS = frozenset({"__pycache__"})
_INSTALL_PARTS = frozenset({"site-packages", "dist-packages"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_.@+-]")


class Audit:
    """The audit of one repro (thread-safe: stages run at the same time)."""

    def __init__(self, root: str | os.PathLike[str], state_dir: str | os.PathLike[str],
                 notice: Callable[[str], None], params_file: str = DEFAULT_PARAMS_FILE) -> None:
        self.root = os.path.abspath(root)
        self.trace_dir = Path(state_dir) / TRACE_DIR
        self.params_file = params_file
        self._notice = notice
        self._notices = audit.Notices()
        self._lock = threading.Lock()
        self._reads: dict[str, audit.Trace] = {}

    def tracer(self, name: str, wdir: str) -> audit.Tracer:
        """How to run the commands of stage ``name`` (in ``wdir``, project-relative) traced;
        an OperationError if its trace file cannot be prepared."""
        tracer = audit.tracer(self.root, self.trace_dir / trace_name(name),
                              cwd=os.path.join(self.root, wdir))
        self._say(tracer.notices)
        return tracer

    def traced(self, name: str, tracer: audit.Tracer) -> None:
        """The commands of stage ``name`` have ended (however they ended): keep what they
        read, remove the trace. An unreadable trace is an OperationError naming it."""
        try:
            found = audit.read_trace(tracer.trace_file, self.root)
        finally:
            audit.remove_trace(tracer.trace_file)
        self._say(found.notices())
        with self._lock:
            self._reads[name] = found

    def undeclared(self, stage: Stage, discovered: Iterable[str] = ()) -> list[str]:
        """The project files stage's last traced run read that it neither declared nor
        discovered nor wrote (see the module docstring), sorted; [] if it was not traced."""
        with self._lock:
            found = self._reads.pop(stage.name, None)
        if found is None:
            return []
        known = {*stage.deps, *(out.path for out in stage.outs), *discovered,
                 *self._params_files(stage)}
        known = {os.path.normpath(path) for path in known}
        written = set(found.written)
        venvs: dict[str, bool] = {}
        return [path for path in found.paths
                if not covered(path, known) and path not in written
                and not self._ignored(path, venvs)
                and os.path.isfile(os.path.join(self.root, path))]

    def _params_files(self, stage: Stage) -> set[str]:
        """The params files the stage's ``params`` read (``FILE:key`` entries name theirs)."""
        return {entry.partition(":")[0] if ":" in entry else self.params_file
                for entry in stage.params}

    def _ignored(self, path: str, venvs: dict[str, bool]) -> bool:
        """Version control, Python caches and installations (see the module docstring)."""
        parts = path.split("/")
        if parts[0] == GIT_DIR or _CACHE_PARTS.intersection(parts[:-1]):
            return True
        if _INSTALL_PARTS.intersection(parts[:-1]):
            return True
        for i in range(1, len(parts)):
            directory = "/".join(parts[:i])
            if directory not in venvs:
                venvs[directory] = os.path.isfile(os.path.join(self.root, directory,
                                                               "pyvenv.cfg"))
            if venvs[directory]:
                return True
        return False

    def _say(self, lines: Iterable[str]) -> None:
        for line in self._notices.new(lines):
            self._notice(line)


def trace_name(stage: str) -> str:
    """A file name for the trace of stage ``stage``: readable, and one per stage name."""
    digest = hashlib.sha256(stage.encode()).hexdigest()[:12]
    return f"{_UNSAFE.sub('_', stage)[:80]}.{digest}.trace"


class TracingRunner:
    """A StageRunner that runs each stage through ``inner`` (a runner of ``/bin/sh -c``
    commands on this machine) with its commands traced for ``audit``."""

    def __init__(self, inner: StageRunner, audit_run: Audit) -> None:
        self.inner = inner
        self.audit = audit_run

    def open(self, cancel: Cancel) -> None:
        self.inner.open(cancel)

    def run(self, spec: StageSpec, output: OutputSink, cancel: Cancel) -> int:
        tracer = self.audit.tracer(spec.name, spec.wdir)
        given = {**os.environ, **spec.env}
        env = {k: v for k, v in tracer.environ(given).items() if given.get(k) != v}
        traced = dataclasses.replace(spec, cmd=tuple(tracer.command(c) for c in spec.cmd),
                                     env={**spec.env, **env})
        try:
            return self.inner.run(traced, output, cancel)
        finally:
            self.audit.traced(spec.name, tracer)

    def close(self) -> None:
        self.inner.close()
