"""Running one function over many items on a thread pool: the one helper for it.

The threads help where the work releases the GIL: system calls (copying, linking, stat), the
compiled core, network requests. Results come back in the items' order; an exception raised
for an item is raised here (after every item has been tried): callers that must not stop at
the first failure return their failures as values.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# A few chunks per worker, not one task per item: submitting 100,000 futures costs more than
# the system calls they would wrap, and a few chunks each still balance uneven items.
_CHUNKS_PER_WORKER = 4


def default_workers() -> int:
    """Threads for I/O-bound work when the caller gave no number: Python's own default."""
    return min(32, (os.cpu_count() or 1) + 4)


def map_parallel(fn: Callable[[T], R], items: Sequence[T], jobs: int = 0) -> list[R]:
    """``[fn(item) for item in items]``, on up to ``jobs`` threads (0: default_workers()).

    One item, or one thread, runs in the calling thread: no pool is started.
    """
    workers = min(jobs if jobs > 0 else default_workers(), len(items))
    if workers <= 1:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor  # not on the fast paths' import chain

    size = max(1, -(-len(items) // (workers * _CHUNKS_PER_WORKER)))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = pool.map(lambda chunk: [fn(item) for item in chunk], chunks)
        return [result for chunk in done for result in chunk]


__all__ = ["default_workers", "map_parallel"]
