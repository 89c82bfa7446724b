"""A stage run's discovered deps: its depfile read and its Python imports recorded, as the
project-relative paths the commit writer hashes beside the declared deps (SPEC §9, §13).

Per run of a stage that discovers (``discovers(stage)``: a ``depfile``, ``discover =
["python"]``, or both)::

    run = Discovery(stage, root, os.environ)  # creates the import record file, if any
    env.update(run.env)                       # the commands' environment (discovered.environ)
    ... the commands run ...
    paths = run.collect()                     # after a successful run: both sources, united
    run.discard()                             # always: the record file goes

Before the run, a depfile left by an earlier run is deleted and its directory created (a
declared out's preparation does both). ``collect`` reads the depfile the commands wrote
(depfile.read; a depfile that is missing or malformed fails the stage with one line naming it),
turns its prerequisites into discovered paths (depfile.discovered: inside the project, not
declared) and deletes it unless it is a declared out; then it reads the import record
(discovered.read). Paths the stage declares as deps or outs (or that lie below one) are never
discovered.

``recorded`` is what `commit` (the command, which runs nothing) uses instead: the lock's
discovered list, plus the prerequisites of a depfile present on disk, which it leaves there.

Import records live in ``.pivotbuild/tmp/discover/`` (per machine, never committed), one
file per run, removed by ``discard``; one left by a killed pivotbuild holds only paths.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pivotbuild import depfile, discovered, paths
from pivotbuild.errors import OperationError
from pivotbuild.paths import STATE_DIR

if TYPE_CHECKING:
    from pivotbuild.config import Stage
    from pivotbuild.lock import Lock

RECORD_DIR = f"{STATE_DIR}/tmp/discover"  # project-relative: one import record per run
PYTHON = "python"


def discovers(stage: Stage) -> bool:
    """Whether the stage's runs discover deps: its lock then has a ``discovered`` list."""
    return stage.depfile is not None or bool(stage.discover)


def _declared(stage: Stage) -> list[str]:
    """What a discovered dep may not be: the stage's deps and outs, and its depfile."""
    found = [*stage.deps, *(out.path for out in stage.outs)]
    if stage.depfile is not None:
        found.append(stage.depfile)
    return found


def read_depfile(stage: Stage, root: str | os.PathLike[str], *, missing_ok: bool
                 ) -> list[str] | None:
    """The discovered deps a stage's depfile names (sorted project-relative paths), or None
    when it has none (no ``depfile``, or missing and ``missing_ok``). OperationError naming the
    depfile when it is missing (not ``missing_ok``), unreadable or not Make rules."""
    if stage.depfile is None:
        return None
    shown = stage.depfile
    try:
        prereqs = depfile.read(Path(root) / shown)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise OperationError(f"depfile {shown!r} was not written by the stage's commands "
                             "(does the cmd write it, e.g. gcc -MMD -MF?)") from None
    except depfile.DepfileError as exc:
        raise OperationError(f"depfile {shown!r}: line {exc.line}: {exc.problem}") from None
    except OSError as exc:
        raise OperationError(f"depfile {shown!r}: cannot be read: {exc.strerror or exc}") \
            from None
    return depfile.discovered(prereqs, root, stage.wdir, _declared(stage))


class Discovery:
    """The discovery of one run of one stage (see the module's docstring)."""

    def __init__(self, stage: Stage, root: str | os.PathLike[str],
                 environ: Mapping[str, str]) -> None:
        """``environ``: the environment the commands start from (a PYTHONPATH in it is kept,
        after the recorder's directory). OperationError if the record cannot be made."""
        self.stage = stage
        self.root = Path(root)
        self.record: Path | None = None
        self.env: dict[str, str] = {}  # what to set for the commands
        if stage.depfile is not None and not self._depfile_is_out():
            self._remove_depfile()  # one left by an earlier (failed) run must not be read
            paths.make_parent(self.root, stage.depfile)  # as Ninja does: the cmd writes it
        if PYTHON in stage.discover:
            directory = self.root / RECORD_DIR
            try:
                directory.mkdir(parents=True, exist_ok=True)
                import tempfile  # here: only a stage that discovers needs it

                handle, name = tempfile.mkstemp(prefix="run-", suffix=".rec", dir=directory)
            except OSError as exc:
                raise OperationError(f"{RECORD_DIR}: cannot create the import record: "
                                     f"{exc.strerror or exc}") from None
            os.close(handle)
            self.record = Path(name)
            try:
                self.env = discovered.environ(self.record, self.root, environ)
            except OperationError:
                self.discard()
                raise

    def collect(self) -> list[str]:
        """After a successful run: the discovered deps, sorted, each once. Deletes the depfile
        (unless it is a declared out) once it has been read."""
        stage = self.stage
        found: set[str] = set()
        from_depfile = read_depfile(stage, self.root, missing_ok=False)
        if from_depfile is not None:
            found.update(from_depfile)
            if not self._depfile_is_out():
                self._remove_depfile()
        if self.record is not None:
            found.update(discovered.read([self.record], self.root, _declared(stage)))
        return sorted(found)

    def _depfile_is_out(self) -> bool:
        return self.stage.depfile in {out.path for out in self.stage.outs}

    def _remove_depfile(self) -> None:
        """Delete the depfile if it is there (a file or symlink; its directory checked to lie
        inside the project first, as for outputs: paths.resolve)."""
        assert self.stage.depfile is not None
        shown = self.stage.depfile
        full = paths.resolve(self.root, shown)
        try:
            if os.path.islink(full) or os.path.isfile(full):
                os.unlink(full)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise OperationError(f"depfile {shown!r}: cannot be deleted: "
                                 f"{exc.strerror or exc}") from None

    def discard(self) -> None:
        """Remove the import record (after every run, successful or not)."""
        if self.record is not None:
            try:
                os.unlink(self.record)
            except FileNotFoundError:
                pass
            except OSError:
                pass  # only a few paths; a later run uses another file


def recorded(stage: Stage, lock: Lock | None, root: str | os.PathLike[str]) -> list[str]:
    """For `commit`, which runs nothing: the discovered deps ``lock`` (the stage's lock, if
    it has a valid one) records, with those of a depfile present on disk (left there); sorted,
    each once, none that the stage now declares.

    With neither (a Python stage committed before it ever ran under pivotbuild) the list is
    empty: `commit` records what it is told is up to date, and the stage's next run fills it.
    A project built by Make with ``-MMD`` has its depfiles on disk, so `commit` takes them."""
    found: set[str] = set()
    if lock is not None and lock.discovered is not None:
        found.update(d.path for d in lock.discovered)
    found.update(read_depfile(stage, root, missing_ok=True) or ())
    return sorted(undeclared(found, stage))


def undeclared(paths: Iterable[str], stage: Stage) -> list[str]:
    """``paths`` less those the stage declares (or that lie below a declared one), in order."""
    from pivotbuild.paths import covered

    declared = set(_declared(stage))
    return [p for p in paths if not covered(p, declared)]
