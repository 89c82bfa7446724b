"""File-level operations storing and placing share: clone, copy, modes, and which errors mean
"this way is not possible here" (as opposed to a real failure no other way would fix)."""

from __future__ import annotations

import errno
import fcntl
import os

FICLONE = 0x40049409  # _IOW(0x94, 9, int) from linux/fs.h

# errno values meaning "this way of placing a file is not possible here", as opposed to a
# real failure (ENOSPC, EACCES on the target directory, ...) that no other method would fix.
REFLINK_UNSUPPORTED = frozenset({
    errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS,
    errno.EBADF, errno.EPERM,
})
HARDLINK_UNSUPPORTED = frozenset({
    errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EACCES,
})
_COPY_RANGE_UNSUPPORTED = frozenset({
    errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF,
    errno.EPERM,
})


def why(exc: OSError) -> str:
    """An OSError's reason, for a message that names the path itself."""
    return exc.strerror or str(exc)


def clone(src_fd: int, dst_fd: int) -> str | None:
    """Make dst_fd a reflink of src_fd (no data copied): None once done, or why the file
    systems cannot. Any other failure raises OSError."""
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
        return None
    except OSError as exc:
        if exc.errno not in REFLINK_UNSUPPORTED:
            raise
        return why(exc)


def copy_data(src_fd: int, dst_fd: int) -> None:
    """Copy everything from src_fd's position to dst_fd, in the kernel when it can."""
    if hasattr(os, "copy_file_range"):
        try:
            while os.copy_file_range(src_fd, dst_fd, 1 << 30):
                pass
            return
        except OSError as exc:
            if exc.errno not in _COPY_RANGE_UNSUPPORTED:
                raise
            # Both offsets moved together by whatever was copied: carry on from there.
    while chunk := os.read(src_fd, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst_fd, view):]


def mode_for(executable: bool, writable: bool) -> int:
    """An object's mode (read-only) or a placed file's (writable), with or without exec."""
    if writable:
        return 0o755 if executable else 0o644
    return 0o555 if executable else 0o444


__all__ = ["FICLONE", "HARDLINK_UNSUPPORTED", "REFLINK_UNSUPPORTED", "clone", "copy_data",
           "mode_for", "why"]
