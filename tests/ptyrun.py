"""Running a command on a pseudo-terminal, as a user at a terminal would: for console-pool tests.

The command runs in a session of its own whose controlling terminal is the pty (so it is the
terminal's foreground process group), with stdin, stdout and stderr on it, echo off, 100
columns. What it writes is returned with the terminal's CRLF turned back into LF.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Mapping
from pathlib import Path

# Makes fd 0 (the pty) the controlling terminal, then becomes the command.
_TAKE_TERMINAL = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                  "os.execvp(sys.argv[1], sys.argv[1:])")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r(?!\n)")


def run_in_pty(argv: list[str], cwd: Path, env: Mapping[str, str] | None = None,
               send: bytes = b"", timeout: float = 120.0) -> tuple[int, str]:
    """Run ``argv`` on a new pty, typing ``send`` into it; (exit status, what it printed,
    terminal escapes removed)."""
    master, slave = os.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO  # what is typed is not printed back
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.Popen([sys.executable, "-c", _TAKE_TERMINAL, *argv], cwd=cwd,
                                env={**os.environ, **(env or {})}, stdin=slave, stdout=slave,
                                stderr=slave, start_new_session=True)
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    try:
        if send:
            os.write(master, send)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the slave side has closed it
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return code, _ANSI.sub("", text)
