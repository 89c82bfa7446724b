"""The read tracer of `repro --audit` for one stage run: how its commands are traced (the
LD_PRELOAD library pivotbuild/_pbtrace.so, or strace), and the reader that turns the trace
into the project paths they read.

Use, per stage run (the commands run as ``/bin/sh -c COMMAND`` in the stage's wdir)::

    t = tracer(root, trace_file, cwd=wdir)          # also empties an old trace
    for line in notices.new(t.notices): say(line)   # notices: one Notices per repro
    run(t.command(cmd), env=t.environ(env))         # each of the stage's commands
    found = read_trace(trace_file, root)            # after the commands ran
    for line in notices.new(found.notices()): say(line)
    remove_trace(trace_file)

Methods, chosen by ``tracer``: "preload" (the library, built by setup.py; the normal case),
"strace" (``strace -ff`` around the whole command, when the library is missing or /bin/sh is a
static binary), or "none" (neither available: the command runs untraced, and the notice says
the audit is incomplete). Under "preload", a static binary that a command runs is traced with
strace by the library itself, or reported untraced when there is no strace (see
csrc/trace/pb_trace.h). strace must be 5.2 or newer (``-z``).

``read_trace`` returns every existing project path that the commands opened for reading,
stat'ed, checked with access() or executed: regular files, directories, symlinks alike, the
stage's own outs and its declared and discovered deps included; and, as ``written``, those of
them the commands wrote before reading them (opened for writing, and not opened for reading
or executed before that: in the trace's order, which is exact for the preload and known only
within one process under strace). Choosing what to warn about (files only; not declared, not
discovered, not an out: pivotbuild/auditrun.py) is the caller's business. Paths are
normalised lexically, not resolved: a file read through a symlink inside the project is named
as the program named it; a path that leaves the project is never returned, nor anything in
``.pivotbuild/``, nor the trace files themselves.

Limits: reads made with direct system calls (not through libc), inside libc itself
(``opendir``), by a program started with a cleared environment by a static binary, by a
setuid or setgid program (the loader ignores LD_PRELOAD for it), or by a static or 32-bit
binary when strace is missing. fexecve and execveat are not followed.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import struct
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pivotbuild.discovered import parse, project_paths, read_bytes
from pivotbuild.errors import OperationError

LIBRARY = Path(__file__).resolve().parent / "_pbtrace.so"
ROOT_VAR = "PIVOTBUILD_TRACE_ROOT"
FILE_VAR = "PIVOTBUILD_TRACE_FILE"
STRACE_VAR = "PIVOTBUILD_TRACE_STRACE"
UNDER_STRACE_VAR = "PIVOTBUILD_TRACE_UNDER_STRACE"
# The same as PB_TRACE_STRACE_CALLS in csrc/trace/pb_trace.h (a test keeps them equal).
STRACE_CALLS = ("trace=/^(open|openat|openat2|stat|lstat|newfstatat|fstatat64|stat64|lstat64|"
                "statx|access|faccessat|faccessat2|execve|execveat)$")
STRACE_OPTIONS = ("-ff", "-qq", "-z", "-xx", "-y", "-e", STRACE_CALLS)
STRACE_MIN_VERSION = (5, 2)
PRELOAD, STRACE, NONE = "preload", "strace", "none"
READ_KINDS = frozenset("rsx")
WRITE = "w"
TOP = "top"  # the pid field of the S line that tracer() writes for a whole-command strace


@dataclass(frozen=True)
class Tracer:
    """How to run the commands of one stage run so that their reads are traced."""

    trace_file: Path
    method: str
    variables: Mapping[str, str]
    prefix: tuple[str, ...]
    notices: tuple[str, ...]
    shell: str = "/bin/sh"

    def environ(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` with the tracer's variables; LD_PRELOAD keeps what ``env`` had, after the
        library."""
        merged = {**env, **self.variables}
        if "LD_PRELOAD" in self.variables and env.get("LD_PRELOAD"):
            merged["LD_PRELOAD"] = f"{self.variables['LD_PRELOAD']}:{env['LD_PRELOAD']}"
        return merged

    def command(self, command: str) -> str:
        """The shell command to run in place of ``command`` (itself, unless under strace)."""
        if not self.prefix:
            return command
        return "exec " + shlex.join([*self.prefix, self.shell, "-c", command])


@dataclass(frozen=True)
class Trace:
    """What one traced stage run read."""

    paths: list[str]
    via_strace: list[str] = field(default_factory=list)
    untraced: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)  # project paths written before read

    def notices(self) -> list[str]:
        """One line per program the library could not follow: traced with strace, or not
        traced at all."""
        lines = [f"audit: {path} cannot load the read tracer (a static or 32-bit binary); "
                 "traced it with strace" for path in self.via_strace]
        lines += [f"audit: incomplete: {path} cannot load the read tracer (a static or 32-bit "
                  "binary) and strace is not installed; its reads are not known"
                  for path in self.untraced]
        return lines


class Notices:
    """Remembers what was said during one run, so that each notice is given once."""

    def __init__(self) -> None:
        self._said: set[str] = set()

    def new(self, lines: Iterable[str]) -> list[str]:
        """The lines not said before (now remembered as said)."""
        fresh = [line for line in dict.fromkeys(lines) if line not in self._said]
        self._said.update(fresh)
        return fresh


def tracer(root: str | os.PathLike[str], trace_file: str | os.PathLike[str], *,
           cwd: str | os.PathLike[str], shell: str = "/bin/sh",
           strace: str | None | bool = True, library: Path | None | bool = True) -> Tracer:
    """The Tracer for one stage run whose commands run as ``shell -c CMD`` in ``cwd``.

    ``strace`` and ``library`` default to what this machine has (``find_strace()``,
    ``LIBRARY`` if built); pass a path, or None for "not available". An old trace at
    ``trace_file`` is removed first; a trace file that cannot be prepared is an
    OperationError naming it."""
    trace = Path(os.path.abspath(trace_file))
    remove_trace(trace)
    try:
        trace.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OperationError(f"{trace}: cannot prepare the trace file: "
                             f"{exc.strerror or exc}") from None
    strace_path = find_strace() if strace is True else (strace or None)
    lib = (LIBRARY if LIBRARY.is_file() else None) if library is True else (library or None)
    root_abs = os.path.abspath(root)
    static_shell = needs_strace(shell)
    if lib is not None and not static_shell:
        variables = {"LD_PRELOAD": str(lib), ROOT_VAR: root_abs, FILE_VAR: str(trace)}
        if strace_path:
            variables[STRACE_VAR] = strace_path
        return Tracer(trace, PRELOAD, variables, (), (), shell)
    why = (f"{shell} cannot load the read tracer (a static or 32-bit binary)" if static_shell
           else "pivotbuild's read tracer (pivotbuild/_pbtrace.so) is not built")
    if strace_path is None:
        return Tracer(trace, NONE, {}, (), (
            f"audit: incomplete: {why} and strace is not installed; reads are not traced",),
            shell)
    try:
        with open(trace, "ab") as out:  # the cwd the strace of the whole command starts in
            out.write(b"S " + _escape(os.fsencode(f"{TOP}\0{os.path.abspath(cwd)}\0{shell}"))
                      + b"\n")
    except OSError as exc:
        raise OperationError(f"{trace}: cannot prepare the trace file: "
                             f"{exc.strerror or exc}") from None
    prefix = (strace_path, *STRACE_OPTIONS, "-o", f"{trace}.strace.{TOP}", "--")
    return Tracer(trace, STRACE, {}, prefix, (f"audit: {why}; tracing reads with strace",),
                  shell)


def read_trace(trace_file: str | os.PathLike[str], root: str | os.PathLike[str]) -> Trace:
    """The project paths read during a traced run (see the module docstring), and the static
    programs it ran. A missing trace file means nothing was read; an unreadable one is an
    OperationError naming it."""
    trace = os.path.abspath(trace_file)
    found: list[str] = []
    via_strace: list[str] = []
    untraced: list[str] = []
    cwds: dict[str, str] = {}
    read_first: set[str] = set()  # read or executed before any write of it
    written: set[str] = set()
    for kind, payload in parse(read_bytes(trace)):
        if kind in READ_KINDS:
            found.append(payload)
            if kind != "s" and payload not in written:
                read_first.add(payload)
        elif kind == WRITE:
            written.add(payload)
        elif kind == "S":
            pid, _, rest = payload.partition("\0")
            cwd, _, program = rest.partition("\0")
            cwds[pid] = cwd
            if pid != TOP:
                via_strace.append(os.path.join(cwd, program))
        elif kind == "U":
            untraced.append(os.path.normpath(payload))
    for sidecar in _sidecars(trace):
        pid = sidecar.name[len(Path(trace).name) + len(".strace."):].split(".")[0]
        here_read: set[str] = set()  # order is known within one process's file only
        for kind, path in strace_events(read_bytes(sidecar), cwds.get(pid, os.fspath(root))):
            path = os.path.normpath(path)
            if kind == WRITE:
                if path in here_read:
                    read_first.add(path)
                written.add(path)
                continue
            found.append(path)
            if kind != "s":
                here_read.add(path)
    mine = os.path.realpath(trace)
    own = [p for p in map(os.path.normpath, found)
           if not _is_trace_file(p, trace) and not _is_trace_file(p, mine)]
    paths = project_paths(own, root, files_only=False)
    made = set(project_paths(written - read_first, root, files_only=False))
    return Trace(paths, sorted(set(map(os.path.normpath, via_strace))), sorted(set(untraced)),
                 [p for p in paths if p in made])


def remove_trace(trace_file: str | os.PathLike[str]) -> None:
    """Delete a trace file and the strace files beside it (missing ones are fine; one that
    cannot be deleted is an OperationError naming it)."""
    trace = Path(os.path.abspath(trace_file))
    for path in [trace, *_sidecars(trace)]:
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            raise OperationError(f"{path}: cannot remove the trace file: "
                                 f"{exc.strerror or exc}") from None


def _sidecars(trace: str | os.PathLike[str]) -> list[Path]:
    path = Path(trace)
    try:
        return sorted(path.parent.glob(f"{_glob_escape(path.name)}.strace.*"))
    except OSError:
        return []


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _is_trace_file(path: str, trace: str) -> bool:
    return path == trace or path.startswith(trace + ".strace.")


def _escape(raw: bytes) -> bytes:
    return raw.replace(b"\\", b"\\\\").replace(b"\n", b"\\n")


# ---- strace output (-ff -xx -y -z): one file per process, every string in hex ----

_HEX = r"(?:\\x[0-9a-f]{2})*"
_LINE = re.compile(rf"^(?P<call>\w+)\((?P<args>.*)\) = (?P<ret>-?\d+)(?:<(?P<retpath>{_HEX})>)?")
_ARGS = re.compile(rf'^(?:(?P<dirfd>AT_FDCWD|-?\d+)(?:<(?P<dirpath>{_HEX})>)?, )?'
                   rf'"(?P<path>{_HEX})"(?P<rest>.*)$')
_OPENS = frozenset({"open", "openat", "openat2"})
_AT_CALLS = frozenset({"openat", "openat2", "newfstatat", "fstatat64", "statx", "faccessat",
                       "faccessat2", "execveat"})
_WRITES = ("O_WRONLY", "O_TRUNC", "O_TMPFILE")


def strace_paths(data: bytes, cwd: str) -> Iterator[str]:
    """The absolute paths read in one strace output file (``strace_events`` less writes)."""
    return (path for kind, path in strace_events(data, cwd) if kind != WRITE)


def strace_events(data: bytes, cwd: str) -> Iterator[tuple[str, str]]:
    """(kind, absolute path) for each call in one strace output file, in order, kinds as in
    the preload's trace (r, w, s, x); relative paths resolved against the directory strace
    printed (-y) or else ``cwd``, the directory the traced program started in. Writes are
    the O_WRONLY, O_TRUNC and O_TMPFILE opens, as for the preload."""
    for raw in data.decode("ascii", "replace").splitlines():
        line = _LINE.match(raw)
        if line is None:
            continue
        call = line["call"]
        args = _ARGS.match(line["args"])
        if args is None or (call in _AT_CALLS) != (args["dirfd"] is not None):
            continue
        kind = ("w" if any(flag in args["rest"] for flag in _WRITES) else "r"
                ) if call in _OPENS else "x" if call.startswith("exec") else "s"
        if call in _OPENS and line["retpath"]:
            yield kind, _unhex(line["retpath"])
            continue
        path = _unhex(args["path"])
        if not path:
            continue  # fstatat(fd, "", AT_EMPTY_PATH): the descriptor, opened before
        if args["dirfd"] not in (None, "AT_FDCWD") and not args["dirpath"]:
            continue  # relative to a descriptor strace could not name
        base = _unhex(args["dirpath"]) if args["dirpath"] else cwd
        yield kind, os.path.join(base, path)


def _unhex(text: str) -> str:
    return os.fsdecode(bytes.fromhex(text.replace("\\x", "")))


# ---- what can run the tracer ----

@functools.cache
def find_strace() -> str | None:
    """The absolute path of an strace this tracer can use (5.2 or newer), or None."""
    found = shutil.which("strace")
    if found is None:
        return None
    try:
        out = subprocess.run([found, "-V"], capture_output=True, text=True, timeout=30,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"version (\d+)\.(\d+)", out)
    if match is None or (int(match[1]), int(match[2])) < STRACE_MIN_VERSION:
        return None
    return os.path.abspath(found)


def needs_strace(path: str | os.PathLike[str], *, follow_script: bool = True) -> bool:
    """True if the preload library cannot reach the program ``path``: an ELF executable that
    the dynamic loader does not start (no PT_INTERP program header: a static binary), or one
    of the other word size (a 32-bit program: its loader refuses a 64-bit library); for a
    ``#!`` script, the answer for its interpreter. False for anything else, unreadable files
    included. (The library decides the same way for every program a traced one executes.)"""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
            if follow_script and head.startswith(b"#!"):
                line = head[2:].split(b"\n", 1)
                words = line[0].split() if len(line) == 2 else []
                return bool(words) and needs_strace(os.fsdecode(words[0]), follow_script=False)
            return _unreachable_elf(f, head)
    except OSError:
        return False


def _unreachable_elf(f, head: bytes) -> bool:  # type: ignore[no-untyped-def]
    if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return False
    order = "<" if head[5] == 1 else ">"
    if head[4] == 2:  # 64-bit
        if len(head) < 64:
            return False
        e_type, = struct.unpack_from(order + "H", head, 16)
        phoff, = struct.unpack_from(order + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
    else:
        e_type, = struct.unpack_from(order + "H", head, 16)
        phoff, = struct.unpack_from(order + "I", head, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
    if e_type not in (2, 3) or phentsize < 4 or phnum == 0:  # ET_EXEC, ET_DYN
        return False
    if (head[4] == 2) != (struct.calcsize("P") == 8):
        return True  # the other word size
    f.seek(phoff)
    table = f.read(phentsize * phnum)
    if len(table) < phentsize * phnum:
        return False
    pt_interp = 3
    return all(struct.unpack_from(order + "I", table, i * phentsize)[0] != pt_interp
               for i in range(phnum))
