"""The local runner: a stage's commands as processes here, that never outlive pivotbuild.

Each command runs under ``/bin/sh -c`` in a session (hence a process group) of its own, and is
stopped with its group: no controlling terminal, and Ctrl-C is pivotbuild's to forward. A small
watchdog process guards them. pivotbuild tells it each command's group as it starts and ends,
through a pipe whose write end only pivotbuild holds. When pivotbuild ends in any way (SIGKILL
and crashes included) the kernel closes that end, the watchdog reads end-of-file and kills
every group it was told of, then every process whose environment carries this run's
``PIVOTBUILD_RUN`` token (a command started in the instant before it was reported, or a child
that left its group).

That pipe is the parent-death signal, for the whole process: ``prctl(PR_SET_PDEATHSIG)`` on
each command would fire when the *thread* that forked it ends (commands start from pool
threads), reach only the direct child (never a ``sleep`` that ``sh`` forks), and need a
``preexec_fn``, measured here at 7-14 ms more per command than the ``vfork`` path. The
watchdog sets ``PR_SET_PDEATHSIG`` on itself as a second signal when it is started from the
main thread (which lives as long as the process); started from another thread, it relies on
the pipe alone.

A console-pool stage is the exception: its commands get the terminal and stay in
pivotbuild's process group (``Commands.start``); they are stopped one process at a time.

A normal end of pivotbuild tells the watchdog goodbye: a command's leftover background
processes are then left alone, as make and ninja leave them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from pivotbuild.runners import INTERRUPTED, Cancel, OutputSink, StageSpec

RUN_TOKEN_VAR = "PIVOTBUILD_RUN"
STOP_GRACE_S = 2.0  # after SIGINT, and again after SIGTERM, before the next signal

# ``python -I -S -c WATCHDOG <pipe fd> <parent pid> <token> <pdeathsig 0|1>``; the token
# variable's name is RUN_TOKEN_VAR.
_WATCHDOG = """\
import os, signal, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(s, signal.SIG_IGN)
class ParentGone(Exception):
    pass
def parent_gone(*_):
    raise ParentGone
signal.signal(signal.SIGUSR1, parent_gone)
fd, parent, token = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
groups, pending = set(), b""
try:
    if sys.argv[4] == "1" and sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL(None).prctl(1, signal.SIGUSR1, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (ImportError, OSError, AttributeError):
            pass
    if os.getppid() != parent:
        raise ParentGone
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            raise ParentGone
        *lines, pending = (pending + chunk).split(b"\\n")
        for line in lines:
            if line == b"bye":
                sys.exit(0)
            if line[:1] == b"+":
                groups.add(int(line[1:]))
            else:
                groups.discard(int(line[1:]))
except ParentGone:
    pass
signal.signal(signal.SIGUSR1, signal.SIG_IGN)
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
marker = b"\\0PIVOTBUILD_RUN=" + token + b"\\0"
for _ in range(5):
    found = False
    try:
        names = os.listdir("/proc")
    except OSError:
        break
    for name in names:
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open("/proc/" + name + "/environ", "rb") as f:
                environ = b"\\0" + f.read()
        except OSError:
            continue
        if marker in environ:
            found = True
            try:
                os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass
    if not found:
        break
"""


class Commands:
    """Starts, tracks and stops the stage commands of one run (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._console: set[subprocess.Popen[bytes]] = set()  # in our process group (start)
        self._stopping = False
        self._token = os.urandom(12).hex()  # not secrets: it imports hmac and hashlib
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None

    def prepare(self) -> None:
        """Start the watchdog now, from this thread (the main thread: see the module doc)."""
        with self._lock:
            if self._lifeline is None:
                self._start_watchdog()

    def start(self, command: str, cwd: Path, env: Mapping[str, str],
              console_stdout: int | None = None) -> subprocess.Popen[bytes] | None:
        """Start ``/bin/sh -c command`` with stdout and stderr in one pipe; None once
        stop_all has begun, so that no command starts after the others were stopped.

        ``console_stdout`` (the console pool): the command gets this process's stdin and
        stderr, its stdout goes to that descriptor, and it stays in this process group, as
        Ninja runs a console edge: it is in the terminal's foreground group, so it may read
        the terminal and Ctrl-C reaches it directly. The watchdog is not told of it (it
        leads no group); its run token still lets the watchdog find it."""
        with self._lock:
            if self._stopping:
                return None
            if self._lifeline is None:
                self._start_watchdog()
            env = {**env, RUN_TOKEN_VAR: self._token}
            if console_stdout is not None:
                proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=cwd, env=env,
                                        stdout=console_stdout)
                self._console.add(proc)
                return proc
            proc = subprocess.Popen(
                ["/bin/sh", "-c", command], cwd=cwd, env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: Ctrl-C is ours to forward
            )
            self._running.add(proc)
            self._tell(b"+%d\n" % proc.pid)
            return proc

    def finished(self, proc: subprocess.Popen[bytes]) -> None:
        """``proc`` has been waited for: its group is no longer the watchdog's concern."""
        with self._lock:
            if proc in self._console:
                self._console.discard(proc)
                return
            self._running.discard(proc)
            self._tell(b"-%d\n" % proc.pid)

    def stop_all(self) -> None:
        """Stop every running command with its process group: SIGINT, then SIGTERM, then
        SIGKILL, each after a grace period if something is still alive. No command starts
        afterwards."""
        with self._lock:
            self._stopping = True
            procs = list(self._running)
            console = list(self._console)
        # Console commands share our process group: each process of theirs is signalled,
        # as long as it still carries this run's token (a background one outlives its shell).
        console_pids = [pid for proc in console if proc.poll() is None
                        for pid in (*_descendants(proc.pid), proc.pid)]
        for sig, grace in ((signal.SIGINT, STOP_GRACE_S), (signal.SIGTERM, STOP_GRACE_S),
                           (signal.SIGKILL, 0.0)):
            alive = [p for p in procs if p.poll() is None]
            for proc in alive:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            strays = [pid for pid in console_pids if self._carries_token(pid)]
            for pid in strays:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and (
                    any(p.poll() is None for p in alive)
                    or any(self._carries_token(pid) for pid in strays)):
                time.sleep(0.02)

    def _carries_token(self, pid: int) -> bool:
        """True if process ``pid`` runs (not a zombie) with this run's token."""
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = b"\0" + f.read()
        except OSError:
            return False
        return f"\0{RUN_TOKEN_VAR}={self._token}\0".encode() in environ

    def close(self) -> None:
        """The run is over: the watchdog leaves without killing anything."""
        with self._lock:
            watchdog = self._watchdog
            self._tell(b"bye\n")
            self._close_lifeline()
        if watchdog is not None:
            try:
                watchdog.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass  # it is reaped when pivotbuild exits

    # ---- the watchdog (callers hold the lock) --------------------------------------------

    def _start_watchdog(self) -> None:
        read_end, write_end = os.pipe()  # both close-on-exec; read_end is passed on below
        main = threading.current_thread() is threading.main_thread()
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(read_end), str(os.getpid()),
                 self._token, "1" if main else "0"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(read_end,), start_new_session=True,
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        self._lifeline = write_end

    def _tell(self, message: bytes) -> None:
        if self._lifeline is None:
            return
        try:
            os.write(self._lifeline, message)
        except BrokenPipeError:
            # The watchdog was killed: a new one, told of every running command.
            self._close_lifeline()
            if message == b"bye\n":
                return
            self._start_watchdog()
            for proc in self._running:
                os.write(self._lifeline, b"+%d\n" % proc.pid)

    def _close_lifeline(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children first found first), from /proc; [] where there
    is no /proc."""
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(name))
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


class LocalRunner:
    """Runs each command of a stage under ``/bin/sh -c`` in its wdir, with the environment of
    pivotbuild plus the spec's variables; stdout and stderr reach the sink as whole lines."""

    def __init__(self) -> None:
        self._commands = Commands()

    def open(self, cancel: Cancel) -> None:
        self._commands.prepare()  # the watchdog, from the main thread (see the module doc)
        cancel.on_cancel(self._commands.stop_all)

    def run(self, spec: StageSpec, output: OutputSink, cancel: Cancel) -> int:
        """A console stage's commands (``spec.console``) get the terminal instead of the sink:
        this process's stdin and stderr, and ``spec.console_stdout`` as stdout."""
        env = {**os.environ, **spec.env}
        cwd = Path(spec.root, spec.wdir)
        console = spec.console_stdout if spec.console else None
        for command in spec.cmd:
            proc = None if cancel.is_set() else self._commands.start(command, cwd, env, console)
            if proc is None:  # interrupted: the other commands are being stopped
                return INTERRUPTED
            try:
                if proc.stdout is not None:
                    for raw in proc.stdout:
                        output(raw.decode("utf-8", "replace"))
                code = proc.wait()
            finally:
                self._commands.finished(proc)
            if cancel.is_set():
                return INTERRUPTED
            if code != 0:
                return code if code > 0 else 128 - code
        return 0

    def close(self) -> None:
        self._commands.close()
