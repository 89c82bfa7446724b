"""Crash-safe file writes: temp file beside the target, fsync, rename, fsync the directory.

Every file pivotbuild owns on disk (locks, cache objects, run-cache entries) is written
through here or through the same steps, so a crash leaves either the old file or the new
one, never a torn one. Temp files are named ``.<name>.<random>.tmp`` in the target's own
directory: a name starting with ``.`` is never a valid hash or stage name, so nothing that
lists a directory mistakes one for real content, and a rename within one directory is
atomic on every POSIX file system.
"""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hash fast path

if TYPE_CHECKING:
    from pathlib import Path

TEMP_SUFFIX = ".tmp"


def temp_name(final_name: str) -> str:
    """A fresh temp name for a file that will be renamed to ``final_name``."""
    # Keep the name short enough for NAME_MAX (255 bytes) even when final_name is long:
    # cut it at 200 bytes, not characters (a character may take four).
    head = final_name.encode("utf-8", "surrogateescape")[:200].decode("utf-8", "ignore")
    return f".{head}.{os.urandom(6).hex()}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def create_temp(directory: str | Path, final_name: str, mode: int = 0o666) -> tuple[int, str]:
    """Create and open a new temp file in ``directory``: (fd, path).

    O_EXCL guarantees the name is ours even with concurrent writers; ``mode`` goes through
    the umask, as any newly created file's would.
    """
    for _ in range(100):
        path = os.path.join(directory, temp_name(final_name))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            continue
        return fd, path
    raise FileExistsError(errno.EEXIST, "could not find a free temp name", str(directory))


def fsync_dir(directory: str | Path) -> None:
    """Make a rename in ``directory`` durable; a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        # Some file systems (network, FUSE) refuse fsync on a directory: nothing better to do.
        pass
    finally:
        os.close(fd)


def unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_atomic(path: str | Path, data: bytes, mode: int | None = None,
                 durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically and durably; raises OSError.

    ``mode`` None leaves the new file with the umask's default permissions. ``durable``
    False skips the fsyncs, for caches whose loss only costs work (never torn, though:
    after a crash the file is the old one, the new one, or at worst empty).
    """
    path = os.fspath(path)
    directory, name = os.path.split(path)
    directory = directory or "."
    fd, tmp = create_temp(directory, name)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if mode is not None:
                os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    if durable:
        fsync_dir(directory)


def write_if_changed(path: str | Path, data: bytes, mode: int | None = None,
                     durable: bool = True) -> bool:
    """Write ``data`` atomically unless ``path`` already holds exactly these bytes.

    Returns True if the file was written. An unchanged file keeps its inode and mtime, so
    tools watching it (git, editors, make) see nothing happen. ``durable`` as for
    write_atomic.
    """
    try:
        with open(path, "rb") as existing:
            if existing.read(len(data) + 1) == data:
                return False
    except OSError:
        pass
    write_atomic(path, data, mode, durable)
    return True


_libc = None  # ctypes.CDLL, loaded on first use (start-up time matters)


def sync_filesystem(path: str | Path) -> None:
    """Flush every dirty page of the file system holding ``path`` (syncfs), or all of them.

    One call instead of one fsync per file: used when many files were just written and
    must all be durable before something that refers to them is.
    """
    global _libc
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None, use_errno=True)
        syncfs = _libc.syncfs
    except (OSError, AttributeError):
        os.sync()
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.sync()
        return
    try:
        if syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
