"""The project lock: one writing command at a time per project.

Writing commands (repro, commit, checkout, pull, gc) hold an flock on
``.pivotbuild/writer.lock`` for their whole run. The kernel releases it when the
holder exits or dies, so a crash never leaves a stale lock behind. The holder
writes its pid and command into the file, so a second writer can say who is in
the way. Read-only commands (status, dag, history, hash) never take it.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pivotbuild.errors import OperationError

LOCK_FILE = "writer.lock"


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    pid, _, command = text.partition(" ")
    return f"pid {pid}: {command}" if pid.isdigit() else "another process"


@contextmanager
def project_lock(state_dir: Path, wait: float | None = None) -> Iterator[None]:
    """Hold the project's writer lock; fail at once (or after ``wait`` seconds). The lock
    file names this process and its command line, for a second writer's message."""
    command = " ".join(["pivotbuild", *sys.argv[1:]])[:200]
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + (wait or 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    waited = f" after waiting {wait:g}s" if wait else ""
                    raise OperationError(
                        f"another pivotbuild is writing this project ({_holder(fd)}){waited}; "
                        "try again later or pass --wait SECONDS"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
