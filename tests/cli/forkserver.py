"""A fork server for whole-command tests: `python -m pivotbuild ARGS` without paying start-up.

A whole-command test used to start a new interpreter per command, and that start (the
interpreter, click, pydantic and pivotbuild's own modules) cost more CPU than most of the
commands themselves. Here one server process per test process imports those modules once
and waits on a Unix socket; for each command it forks a child that does what a fresh
``python -m pivotbuild ARGS`` does from that point on:

- its stdin, stdout and stderr are the client's (passed over the socket as descriptors;
  stdin is /dev/null), its cwd, environment (``os.environ`` cleared and refilled, so that it
  and the C ``environ`` agree), umask and resource limits are the client's;
- signal dispositions are those the server had when its interpreter started (what a fresh
  interpreter has: the server installs no handler), ``sys.path[0]`` is the cwd and
  ``sys.argv`` is what ``-m`` makes of it, and ``pivotbuild/__main__.py`` runs as
  ``__main__`` through runpy, as ``-m`` runs it;
- it exits as the interpreter would: the exit code of a SystemExit, a traceback and 1 for an
  uncaught exception (death by SIGINT for KeyboardInterrupt), threads joined, atexit handlers
  run, cyclic garbage collected, stdio flushed; then ``os._exit`` (module teardown, tens of
  milliseconds in so large an interpreter, is skipped: nothing of the command is left there).

The server answers with the child's pid, then its wait status. It never starts a thread and
never hashes anything before forking (the C core starts its threads per call).

What a fresh start would take afresh, the server must not take at import: the preloaded
modules were audited for module-level reads of the environment, the cwd, argv, the terminal,
the clock and caches filled at import. ``pivotbuild.entry`` is left out (``_STARTED``, the
wall-time origin of the repro summary, is read at import); it costs nothing to import.
Commands whose environment differs from the server's in a variable the interpreter reads when
it starts (PYTHON*, LC_*, LANG, TZ, HOME, LD_*, ...) run as real processes instead.

Client side: ``ForkServer.run``; ``tests/cli/conftest.py::run`` owns one per test process,
and falls back to a real subprocess when the server cannot start or has died
(``Unavailable``). ``PIVOTBUILD_TEST_SUBPROCESS=1`` turns the server off.
"""

from __future__ import annotations

import ctypes
import json
import os
import selectors
import signal
import socket
import struct
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

# The modules every full-path command loads (and the command modules), imported by the
# server before it serves; a name that does not exist (any more) is skipped.
PRELOAD = (
    "pivotbuild.cli", "pivotbuild.cli.common", "pivotbuild.cli.pipeline",
    "pivotbuild.cli.remote", "pivotbuild.cli.build", "pivotbuild.cli.tools",
    "pivotbuild.cli.track", "pivotbuild.cli.compare", "pivotbuild.cli.dvc",
    "pivotbuild.fastpath", "pivotbuild.snapshot", "pivotbuild.pipeline", "pivotbuild.execute",
    "pivotbuild.config", "pivotbuild.config_models", "pivotbuild.projectcache",
    "pivotbuild.plan", "pivotbuild.commit", "pivotbuild.report", "pivotbuild.state",
    "pivotbuild.hashing", "pivotbuild.core", "pivotbuild._core", "pivotbuild.runners.local",
    "pivotbuild.store.place", "pivotbuild.store.runcache", "pivotbuild.projectlock",
    "pivotbuild.config_schema", "pivotbuild.hashcmd", "pivotbuild.verify", "pivotbuild.gc",
    "pivotbuild.checkout", "pivotbuild.remote.transfer", "pivotbuild.remote.localdir",
)
# Never preloaded: read at import what a fresh start reads afresh (see the module docstring).
NOT_PRELOADED = frozenset(("pivotbuild.entry", "pivotbuild.__main__"))

# Environment variables that the interpreter (or the C library under it) reads as it starts
# or as the server imports: a command whose value differs from the server's runs as a real
# process.
START_VARS = frozenset(("LANG", "LANGUAGE", "TZ", "HOME", "TMPDIR", "TERM", "COLUMNS"))
START_PREFIXES = ("PYTHON", "LC_", "LD_", "MALLOC_", "GLIBC_", "PIVOTBUILD_TEST_")

_HEADER = struct.Struct("!I")
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2
_PR_CAPBSET_DROP = 24
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_RLIMITS = ("RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CORE", "RLIMIT_NPROC", "RLIMIT_AS",
            "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CPU")
READY = b"ready\n"


class Unavailable(Exception):
    """The server cannot run this command (not started, died, refused): run it for real."""


def start_vars_differ(env: Mapping[str, str], server_env: Mapping[str, str]) -> bool:
    """True if ``env`` and the server's environment differ in a start-up variable."""
    for key in set(env) | set(server_env):
        if (key in START_VARS or key.startswith(START_PREFIXES)) \
                and env.get(key) != server_env.get(key):
            return True
    return False


# ---- the server (runs in its own process: ``python forkserver.py SOCKET``) ----------------


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_dac_capabilities() -> None:
    """Make root obey file permissions from now on, in this process (its effective,
    permitted and inheritable sets) and in every program it executes (the bounding set)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    keep = ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH)) & 0xFFFFFFFF
    data[0].effective &= keep
    data[0].permitted &= keep
    data[0].inheritable &= keep
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def _recv_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One request: a length-prefixed JSON document, three descriptors with its header."""
    head, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, 3)
    try:
        while len(head) < _HEADER.size:
            more = conn.recv(_HEADER.size - len(head))
            if not more:
                raise OSError("short request")
            head += more
        (size,) = _HEADER.unpack(head)
        body = bytearray()
        while len(body) < size:
            more = conn.recv(min(size - len(body), 1 << 20))
            if not more:
                raise OSError("short request")
            body += more
        if len(fds) != 3:
            raise OSError("expected stdin, stdout and stderr")
        return json.loads(body), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _become_command(request: dict[str, Any], fds: list[int], dispositions: dict[int, object],
                    server_files: list[socket.socket | selectors.BaseSelector],
                    server_fds: list[int]) -> None:
    """In the forked child: take on the client's process state, run pivotbuild as ``-m``
    runs it and exit as the interpreter would. Never returns."""
    for thing in server_files:
        thing.close()  # through its object: a stale number must not close a file of the command
    for fd in server_fds:
        os.close(fd)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)  # the copy at 0-2 is inheritable, as a fresh process's stdio is
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    import resource

    for name, limits in request["rlimits"].items():
        which = getattr(resource, name)
        if resource.getrlimit(which) != tuple(limits):
            resource.setrlimit(which, tuple(limits))
    if request["obey_permissions"]:
        drop_dac_capabilities()
    os.environ.clear()
    os.environ.update(request["env"])
    for signum, handler in dispositions.items():
        if signal.getsignal(signum) is not handler:
            signal.signal(signum, handler)  # type: ignore[arg-type]
    sys.path[0] = os.getcwd()  # as -m sets it
    sys.argv = ["-m", *request["args"]]  # runpy puts __main__.py's path first, as -m does
    import runpy

    interrupted = False
    try:
        runpy.run_module("pivotbuild", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException as exc:  # noqa: BLE001 - what the interpreter does with it
        sys.excepthook(type(exc), exc, exc.__traceback__)
        interrupted, code = isinstance(exc, KeyboardInterrupt), 1
    _exit(code, interrupted)


def _exit_code(exc: SystemExit) -> int:
    """The status ``python`` exits with for an uncaught SystemExit."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    import contextlib

    with contextlib.suppress(Exception):
        print(exc.code, file=sys.stderr)
    return 1


def _exit(code: int, interrupted: bool) -> None:
    """What the interpreter's exit does that a user could notice: non-daemon threads joined,
    atexit handlers run, cyclic garbage finalized, stdio flushed (120 if stdout cannot be),
    an uncaught KeyboardInterrupt turned into death by SIGINT. Module teardown (tens of ms)
    is skipped: the server's objects are frozen and nothing of the command's remains."""
    import atexit
    import gc

    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()
    atexit._run_exitfuncs()
    gc.collect()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and not stream.closed:
                stream.flush()
        except Exception:  # noqa: BLE001
            if stream is sys.stdout:
                code = 120
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)


def _send(conn: socket.socket, line: str) -> None:
    try:
        conn.sendall(line.encode() + b"\n")
    except OSError:
        pass  # the client went away (it timed out, or died): it has what it needs


def serve(path: str, preload: Sequence[str]) -> None:
    """Import ``preload``, listen on ``path``, fork a command per connection; return when the
    client closes our stdin (its lifeline). In a forked child this raises instead."""
    # What a fresh interpreter has, before anything here could change it.
    dispositions: dict[int, object] = {}
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except (OSError, ValueError):
            continue
        if handler is not None:
            dispositions[signum] = handler
    import importlib

    for name in preload:
        if name in NOT_PRELOADED:
            continue
        try:
            importlib.import_module(name)
        except ImportError:
            continue
    try:  # the server waits for its children through pidfds (Linux 5.3)
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError) as exc:
        raise SystemExit(f"forkserver: no pidfd_open here: {exc}") from None
    leaked = NOT_PRELOADED & set(sys.modules)
    if leaked:
        raise SystemExit(f"forkserver: preloading imported {', '.join(sorted(leaked))}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    selector.register(0, selectors.EVENT_READ, "lifeline")
    children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, connection)
    import gc

    gc.collect()
    gc.freeze()  # a child's collections skip (and do not copy) the server's objects
    os.write(1, READY)
    while True:
        for key, _events in selector.select():
            if key.data == "lifeline":
                if not os.read(0, 4096):
                    return
            elif key.data is None:
                conn, _ = listener.accept()
                conn.settimeout(30)
                try:
                    request, fds = _recv_request(conn)
                except (OSError, ValueError):
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    _become_command(request, fds, dispositions,
                                    [selector, listener, conn, *(c for _, c in children.values())],
                                    list(children))
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                children[pidfd] = (pid, conn)
                selector.register(pidfd, selectors.EVENT_READ, "child")
                _send(conn, f"P {pid}")
            else:
                pidfd = key.fd
                pid, conn = children.pop(pidfd)
                selector.unregister(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                _send(conn, f"S {status}")
                conn.close()


# ---- the client (in the test process) -----------------------------------------------------


class ForkServer:
    """One server process and how to run a command through it. ``start`` or ``run`` raise
    Unavailable when it cannot serve; the caller then runs the command for real."""

    def __init__(self, preload: Sequence[str] = PRELOAD, start_timeout: float = 120.0) -> None:
        import threading

        self.preload = tuple(preload)
        self.start_timeout = start_timeout
        self._lock = threading.Lock()
        self._proc: object | None = None  # subprocess.Popen[bytes]
        self._dir: str | None = None
        self._env: dict[str, str] = {}
        self.dead: str | None = None  # why it cannot serve, once it cannot

    @property
    def path(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir, "sock")

    @property
    def pid(self) -> int | None:
        return getattr(self._proc, "pid", None)

    def start(self) -> None:
        """Start the server if it is not running (thread-safe); Unavailable if it cannot."""
        with self._lock:
            if self.dead is not None:
                raise Unavailable(self.dead)
            if self._proc is not None:
                return
            try:
                self._start()
            except (OSError, Unavailable) as exc:
                self.dead = f"the fork server did not start: {exc}"
                self._stop()
                raise Unavailable(self.dead) from exc

    def _start(self) -> None:
        import atexit
        import selectors
        import subprocess
        import tempfile
        import time

        self._dir = tempfile.mkdtemp(prefix="pivotbuild-forkserver-")
        self._env = dict(os.environ)
        with open(os.path.join(self._dir, "log"), "wb") as log:
            self._proc = proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), self.path, *self.preload],
                cwd=self._dir, env=self._env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log)
        atexit.register(self.close)
        assert proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        got = b""
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while not got.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise Unavailable(f"not ready after {self.start_timeout:.0f} s")
                more = os.read(proc.stdout.fileno(), 64)
                if not more:
                    raise Unavailable(f"it exited: {self._log()}")
                got += more
        if got != READY:
            raise Unavailable(f"it said {got!r}: {self._log()}")

    def _log(self) -> str:
        try:
            with open(os.path.join(self._dir or "", "log"), "rb") as f:
                text = f.read().decode(errors="replace").strip()
        except OSError:
            return "(no log)"
        return text.splitlines()[-1] if text else "(nothing on stderr)"

    def _stop(self) -> None:
        import shutil

        proc, self._proc = self._proc, None
        if proc is not None:
            import subprocess

            assert isinstance(proc, subprocess.Popen)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()  # stdin's end: the lifeline, the server leaves
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def close(self) -> None:
        """Stop the server (children still running are left to finish)."""
        with self._lock:
            self._stop()
            if self.dead is None:
                self.dead = "closed"

    def serves(self, env: Mapping[str, str]) -> bool:
        """False for an environment the server cannot give a command (start-up variables)."""
        return not start_vars_differ(env, self._env or os.environ)

    def run(self, args: Sequence[str], cwd: str | os.PathLike[str], env: Mapping[str, str],
            obey_permissions: bool = False, timeout: float = 300.0) -> tuple[int, bytes, bytes]:
        """(exit code or -signal, stdout, stderr) of ``pivotbuild ARGS``, once it has exited and
        its stdout and stderr are closed (as subprocess.run waits). Unavailable if the command
        could not be started here; subprocess.TimeoutExpired after ``timeout`` (the command is
        killed); RuntimeError if the server died while the command ran."""
        self.start()
        if not self.serves(env):
            raise Unavailable("a start-up variable differs from the server's")
        if not os.path.isdir(cwd):
            raise Unavailable(f"no directory {cwd}")  # let subprocess say what is wrong
        import resource
        import time

        umask = os.umask(0o022)
        os.umask(umask)
        request = {
            "args": list(args), "cwd": os.fspath(cwd), "env": dict(env), "umask": umask,
            "obey_permissions": obey_permissions and os.geteuid() == 0,
            "rlimits": {name: resource.getrlimit(getattr(resource, name))
                        for name in _RLIMITS if hasattr(resource, name)},
        }
        body = json.dumps(request).encode()
        deadline = time.monotonic() + timeout
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                conn.settimeout(30)
                conn.connect(self.path)
                socket.send_fds(conn, [_HEADER.pack(len(body))], [stdin, out_w, err_w])
                conn.sendall(body)
            except OSError as exc:
                self._died(f"the fork server failed: {exc}")
                raise Unavailable(str(exc)) from exc
            finally:
                for fd in (stdin, out_w, err_w):  # in flight, the message holds them
                    os.close(fd)
            return self._collect(conn, out_r, err_r, deadline, args, timeout)
        finally:
            conn.close()
            os.close(out_r)
            os.close(err_r)

    def _collect(self, conn: socket.socket, out_r: int, err_r: int, deadline: float,
                 args: Sequence[str], timeout: float) -> tuple[int, bytes, bytes]:
        """Read the pid, the output until both pipes close, and the wait status."""
        import selectors
        import time

        chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
        line, pid, status = b"", None, None
        conn.setblocking(False)
        with selectors.DefaultSelector() as selector:
            for fd in (out_r, err_r, conn.fileno()):
                selector.register(fd, selectors.EVENT_READ)
            while len(selector.get_map()):
                left = deadline - time.monotonic()
                events = selector.select(left) if left > 0 else []
                if not events:
                    if pid is not None and status is None:
                        self._kill(pid, conn)
                    import subprocess

                    raise subprocess.TimeoutExpired(["pivotbuild", *args], timeout,
                                                    b"".join(chunks[out_r]),
                                                    b"".join(chunks[err_r]))
                for key, _ in events:
                    if key.fd in chunks:
                        data = os.read(key.fd, 1 << 16)
                        if data:
                            chunks[key.fd].append(data)
                        else:
                            selector.unregister(key.fd)
                        continue
                    try:
                        data = conn.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    line += data
                    while b"\n" in line:
                        one, line = line.split(b"\n", 1)
                        kind, _, number = one.decode().partition(" ")
                        if kind == "P":
                            pid = int(number)
                        elif kind == "S":
                            status = int(number)
                    if not data:
                        selector.unregister(conn.fileno())
                        if status is not None:
                            continue
                        if pid is None:  # nothing was started
                            self._died("the fork server closed the connection")
                            raise Unavailable("the fork server closed the connection")
                        self._kill(pid, None)
                        self._died("the fork server died")
                        raise RuntimeError(f"the fork server died while pivotbuild "
                                           f"{' '.join(args)} ran (pid {pid}, killed)")
        assert status is not None
        return (os.waitstatus_to_exitcode(status), b"".join(chunks[out_r]),
                b"".join(chunks[err_r]))

    @staticmethod
    def _kill(pid: int, conn: socket.socket | None) -> None:
        """Kill the command; with the connection, give the server a moment to reap it."""
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if conn is not None:
            conn.setblocking(True)
            conn.settimeout(10)
            try:
                while conn.recv(4096):
                    pass
            except OSError:
                pass

    def _died(self, why: str) -> None:
        with self._lock:
            if self.dead is None:
                self.dead = why
            self._stop()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2:])
