"""The two-level ``ab/`` shard directories objects and run entries live in: listing their
names, and removing the temps interrupted writes left there."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from pivotbuild.atomic import is_temp_name, unlink_quietly
from pivotbuild.names import hash_from_name


def iter_hashes(top: Path, suffix: str = "") -> Iterator[str]:
    """The hashes named below ``top`` (``top/ab/cdef…<suffix>``), sorted; temps and stray
    names are skipped. ``suffix``: names.RUN_SUFFIX for run entries, "" for objects."""
    try:
        shards = sorted(os.listdir(top))
    except OSError:
        return
    for shard in shards:
        try:
            names = sorted(os.listdir(os.path.join(top, shard)))
        except OSError:
            continue
        for name in names:
            found = hash_from_name(shard, name, suffix)
            if found is not None:
                yield found


def remove_stale_temps(top: Path, older_than_s: float) -> int:
    """Delete the temps below ``top`` not changed for ``older_than_s``; how many."""
    cutoff = time.time() - older_than_s
    count = 0
    try:
        shards = os.listdir(top)
    except OSError:
        return 0
    for shard in shards:
        try:
            with os.scandir(os.path.join(top, shard)) as it:
                for entry in it:
                    if (is_temp_name(entry.name)
                            and entry.stat(follow_symlinks=False).st_mtime < cutoff):
                        unlink_quietly(entry.path)
                        count += 1
        except OSError:
            continue
    return count


__all__ = ["iter_hashes", "remove_stale_temps"]
