"""The import recorder of `discover = ["python"]`: appends to the stage's record file the
project files that this Python process imports, and the script it runs, as soon as it knows
them.

Loaded by ``sitecustomize.py`` beside it, in whatever interpreter (3.8 or newer) a stage's
commands start; it therefore uses nothing but the standard library's ``os``, ``sys`` and
``atexit``, and 3.8 syntax. Nothing it does may change the program: every error is swallowed.

When a file is recorded:

- the script (``sys.argv[0]`` when it names a file: ``python main.py``) at start-up;
- each module file as soon as the import system's path finder finds it (a ``find_spec``
  wrapper on ``PathFinder``, returning the same spec), so that a process killed later (a
  ``multiprocessing.Pool`` worker stopped by ``terminate()``) has recorded its imports;
- at interpreter exit (``atexit``), before ``os._exit`` (``fork`` children, multiprocessing's
  fork and forkserver workers) and before ``os.exec*``: a sweep of ``sys.modules``
  (``__file__`` of each module; packages' ``__init__.py``, ``__mp_main__`` included) for those
  found another way (editable-install finders, ``spec_from_file_location``), and
  ``sys.argv[0]`` again (``python -m mod`` sets it to the module's path).

What is recorded: only files whose absolute path (normalised, not resolved: the reader
resolves symlinks, outside the stage's time) lies inside the project root given in
``PIVOTBUILD_DISCOVER_ROOT``, compared both as given and with its symlinks resolved; never a
file of this interpreter's installation (its ``site-packages`` / ``dist-packages``
directories, its prefixes when they lie inside the project: a venv kept there). Each file once
per process (a forked child skips what its parent recorded before the fork). Recording a
module costs one open, write and close of the record file.

Record format (the one pivotbuild/discovered.py reads): one line per file, ``m PATH`` for a
module, ``x PATH`` for a script, PATH absolute, with ``\\`` written as ``\\\\`` and a newline
as ``\\n``. Lines are appended with O_APPEND writes of whole lines (at most 64 KiB each), so
processes running at the same time never mix their lines.
"""

import os
import sys

FILE_VAR = "PIVOTBUILD_DISCOVER_FILE"
ROOT_VAR = "PIVOTBUILD_DISCOVER_ROOT"

_NOT_FILES = ("", "-", "-c", "-m")
_CHUNK = 64 * 1024
_INSTALL_DIRS = ("/site-packages/", "/dist-packages/")


class _Recorder:
    """What the recorder keeps from start-up to exit."""

    def __init__(self, record_file: str, root: str, hook_dir: str) -> None:
        self.record_file = record_file
        try:
            self.cwd = os.getcwd()  # type: str | None
        except OSError:
            self.cwd = None
        root = os.path.normpath(os.path.join(self.cwd or "/", root))
        self.given = _as_dir(root)
        self.real = _as_dir(os.path.realpath(root))
        self.skipped = _installation_dirs((self.given, self.real), hook_dir)
        self.written = set()  # type: set[str]
        self.argv0 = _argv0()

    def line(self, kind: str, name: str) -> "bytes | None":
        """The record line for file ``name`` if it is a project file not written yet."""
        if not name.startswith("/"):
            if self.cwd is None:
                return None
            name = os.path.join(self.cwd, name)
        if "/." in name:  # "..", "." or a hidden directory: normalise before comparing
            name = os.path.normpath(name)
        if name in self.written:
            return None
        if name.startswith(self.given):
            below = name[len(self.given) - 1:]  # from the "/" after the root
        elif name.startswith(self.real):
            below = name[len(self.real) - 1:]
        else:
            return None
        if any(part in below for part in _INSTALL_DIRS):
            return None
        if name.startswith(self.skipped):
            return None
        self.written.add(name)
        return kind.encode() + b" " + _escape(os.fsencode(name)) + b"\n"

    def now(self, kind: str, name: object) -> None:
        """Record one file at once; never raises."""
        try:
            if isinstance(name, str) and name:
                entry = self.line(kind, name)
                if entry is not None:
                    _append(self.record_file, [entry])
        except BaseException:  # noqa: BLE001, S110 - the program must not notice
            pass

    def sweep(self) -> None:
        """Record what sys.modules and sys.argv name and was not recorded yet; never raises."""
        try:
            entries = []
            for module in list(sys.modules.values()):
                try:  # no module __getattr__ or lazy-loader attribute hook may run from here
                    name = object.__getattribute__(module, "__dict__").get("__file__")
                except Exception:  # noqa: BLE001, S112
                    continue
                if isinstance(name, str) and name:
                    entries.append(self.line("m", name))
            for argv0 in (self.argv0, _argv0()):
                if argv0 not in _NOT_FILES:
                    entries.append(self.line("x", argv0))
            lines = [entry for entry in entries if entry is not None]
            if lines:
                _append(self.record_file, lines)
        except BaseException:  # noqa: BLE001, S110 - the program's exit must not change
            pass


def _installation_dirs(root_dirs: "tuple[str, str]", hook_dir: str) -> "tuple[str, ...]":
    """This interpreter's own directories that lie inside the project (a venv kept there),
    and the recorder's directory, each ending in "/", as given and resolved."""
    places = {sys.prefix, sys.exec_prefix, hook_dir,
              getattr(sys, "base_prefix", sys.prefix),
              getattr(sys, "base_exec_prefix", sys.exec_prefix)}
    stdlib = getattr(os, "__file__", None)
    if stdlib:
        places.add(os.path.dirname(stdlib))
    dirs = set()
    for place in places:
        if place:
            for form in (_as_dir(os.path.normpath(place)), _as_dir(os.path.realpath(place))):
                if form.startswith(root_dirs) and form not in root_dirs:
                    dirs.add(form)
    return tuple(dirs)


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


def _append(record_file: str, lines: "list[bytes]") -> None:
    """O_APPEND writes of whole lines, each write at most _CHUNK bytes (one longer line alone)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(record_file, flags, 0o644)
    try:
        chunk = []  # type: list[bytes]
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
    if recorder.argv0 not in _NOT_FILES:
        recorder.now("x", recorder.argv0)

    import atexit

    atexit.register(recorder.sweep)
    for name in ("_exit", "execv", "execve"):
        real = getattr(os, name, None)
        if real is not None:
            setattr(os, name, _sweeping_first(real, recorder))
    _watch_path_finder(recorder)


def _sweeping_first(real, recorder: _Recorder):  # type: ignore[no-untyped-def]
    """``real`` (os._exit, os.execv, os.execve), sweeping before it runs."""

    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        recorder.sweep()
        return real(*args, **kwargs)

    wrapper.__name__ = real.__name__
    wrapper.__qualname__ = real.__name__
    wrapper.__doc__ = real.__doc__
    wrapper.__module__ = "os"
    wrapper.__wrapped__ = real  # type: ignore[attr-defined]
    return wrapper


def _watch_path_finder(recorder: _Recorder) -> None:
    """Record each module file the path finder finds, as it finds it (the same spec is
    returned: imports behave as before)."""
    finder = next((f for f in sys.meta_path if getattr(f, "__name__", "") == "PathFinder"
                   and isinstance(f.__dict__.get("find_spec"), classmethod)), None)
    if finder is None:
        return
    original = finder.__dict__["find_spec"].__func__

    def find_spec(cls, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        spec = original(cls, fullname, path, target)
        if spec is not None and spec.origin and getattr(spec, "has_location", False):
            recorder.now("m", spec.origin)
        return spec

    find_spec.__doc__ = original.__doc__
    find_spec.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(finder, "find_spec", classmethod(find_spec))  # noqa: B010 - mypy: a method
