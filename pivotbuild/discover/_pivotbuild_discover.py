"""The import recorder of `discover = ["python"]`: at exit, appends to the stage's record file
the project files that this Python process imported, and the script it ran.

Loaded by ``sitecustomize.py`` beside it, in whatever interpreter (3.8 or newer) a stage's
commands start; it therefore uses nothing but the standard library's ``os`` and ``sys`` (and
``atexit``), and 3.8 syntax. Nothing it does may change the program: every error is swallowed,
and the record is written once the program is done with everything else.

What is recorded, at interpreter exit (``atexit``, so after the program's own exit handlers),
before ``os._exit`` (a ``fork`` child, and multiprocessing's fork and forkserver workers end
that way) and before ``os.exec*`` replaces the process:

- the ``__file__`` of every module in ``sys.modules`` (packages' ``__init__.py`` included,
  ``__main__`` and multiprocessing's ``__mp_main__`` too), and ``sys.argv[0]`` as it was at
  start-up and at exit, when it names a file (``python main.py``; ``python -m mod`` gives the
  module's path);
- only when it lies inside the project root, given in ``PIVOTBUILD_DISCOVER_ROOT`` (compared
  both as given and with its symlinks resolved); the file is recorded with its symlinks
  resolved, and dropped if that lands outside the root;
- never a file of this interpreter's installation: its ``site-packages`` / ``dist-packages``
  directories and its prefixes (a venv kept inside the project) are skipped.

Record format (the one pivotbuild/discovered.py reads): one line per file, ``m PATH`` for a
module, ``x PATH`` for a script, PATH absolute, with ``\\`` written as ``\\\\`` and a newline
as ``\\n``. The lines of one process are appended with O_APPEND writes of whole lines (at most
64 KiB each), so processes running at the same time never mix their lines.
"""

from __future__ import annotations

import os
import sys

FILE_VAR = "PIVOTBUILD_DISCOVER_FILE"
ROOT_VAR = "PIVOTBUILD_DISCOVER_ROOT"

_NOT_FILES = ("", "-", "-c", "-m")
_CHUNK = 64 * 1024
_INSTALL_DIRS = ("/site-packages/", "/dist-packages/")


class _Recorder:
    """The state the recorder keeps from start-up to exit."""

    def __init__(self, record_file: str, root: str, hook_dir: str) -> None:
        self.record_file = record_file
        try:
            self.cwd: str | None = os.getcwd()
        except OSError:
            self.cwd = None
        self.root = os.path.normpath(os.path.join(self.cwd or "/", root))
        self.hook_dir = hook_dir
        self.argv0 = _argv0()

    def record(self) -> None:
        """Append this process's lines to the record file; never raises."""
        try:
            lines = self._lines()
            if lines:
                _append(self.record_file, lines)
        except BaseException:  # noqa: BLE001 - the program's exit must not change
            pass

    def _candidates(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for module in list(sys.modules.values()):
            try:  # no module __getattr__ or lazy-loader attribute hook may run from here
                name = object.__getattribute__(module, "__dict__").get("__file__")
            except Exception:  # noqa: BLE001
                continue
            if isinstance(name, str) and name:
                found.append(("m", name))
        for argv0 in (self.argv0, _argv0()):
            if argv0 not in _NOT_FILES:
                found.append(("x", argv0))
        return found

    def _lines(self) -> list[bytes]:
        root = self.root
        real_root = os.path.realpath(root)
        given = _as_dir(root)
        real = _as_dir(real_root)
        skipped = self._installation_dirs(real)
        lines: set[bytes] = set()
        for kind, name in self._candidates():
            if not name.startswith("/"):
                if self.cwd is None:
                    continue
                name = os.path.join(self.cwd, name)
            if "/." in name:  # "..", "." or a hidden directory: normalise before comparing
                name = os.path.normpath(name)
            if not (name.startswith(given) or name.startswith(real)):
                continue
            resolved = os.path.realpath(name)
            if not resolved.startswith(real):
                continue
            below = resolved[len(real) - 1:]  # from the "/" after the root
            if any(part in below for part in _INSTALL_DIRS):
                continue
            if any(resolved.startswith(d) for d in skipped):
                continue
            lines.add(kind.encode() + b" " + _escape(os.fsencode(resolved)) + b"\n")
        return sorted(lines)

    def _installation_dirs(self, real_root_dir: str) -> list[str]:
        """This interpreter's own directories that lie inside the project (a venv kept there),
        and this hook's directory, each ending in "/"."""
        places = {sys.prefix, sys.exec_prefix, self.hook_dir,
                  getattr(sys, "base_prefix", sys.prefix),
                  getattr(sys, "base_exec_prefix", sys.exec_prefix)}
        stdlib = getattr(os, "__file__", None)
        if stdlib:
            places.add(os.path.dirname(stdlib))
        dirs = []
        for place in places:
            if place:
                real = _as_dir(os.path.realpath(place))
                if real.startswith(real_root_dir) and real != real_root_dir:
                    dirs.append(real)
        return dirs


def _argv0() -> str:
    argv = getattr(sys, "argv", None)
    try:
        first = argv[0] if argv else ""
    except Exception:  # noqa: BLE001 - sys.argv replaced by something odd
        return ""
    return first if isinstance(first, str) else ""


def _as_dir(path: str) -> str:
    return path if path.endswith("/") else path + "/"


def _escape(raw: bytes) -> bytes:
    if b"\\" in raw:
        raw = raw.replace(b"\\", b"\\\\")
    if b"\n" in raw:
        raw = raw.replace(b"\n", b"\\n")
    return raw


def _append(record_file: str, lines: list[bytes]) -> None:
    """O_APPEND writes of whole lines, each write at most _CHUNK bytes (one longer line alone)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(record_file, flags, 0o644)
    try:
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            if chunk and size + len(line) > _CHUNK:
                _write_all(fd, b"".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            _write_all(fd, b"".join(chunk))
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def install(hook_dir: str) -> None:
    """Turn the recorder on for this process (and its forks), if the environment asks for it."""
    record_file = os.environ.get(FILE_VAR)
    root = os.environ.get(ROOT_VAR)
    if not record_file or not root:
        return
    recorder = _Recorder(record_file, root, hook_dir)

    import atexit

    atexit.register(recorder.record)
    for name in ("_exit", "execv", "execve"):
        real = getattr(os, name, None)
        if real is not None:
            setattr(os, name, _recording_first(real, recorder))


def _recording_first(real, recorder: _Recorder):  # type: ignore[no-untyped-def]
    """``real`` (os._exit, os.execv, os.execve), writing the record before it runs."""

    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        recorder.record()
        return real(*args, **kwargs)

    wrapper.__name__ = real.__name__
    wrapper.__qualname__ = real.__name__
    wrapper.__doc__ = real.__doc__
    wrapper.__module__ = "os"
    wrapper.__wrapped__ = real  # type: ignore[attr-defined]
    return wrapper
