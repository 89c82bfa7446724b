"""The local cache: one directory, shared by every project that names it, and its parts.

Layout of a cache directory (each part's format is documented at its owner)::

    cache_dir/
      files/      content-addressed objects (objects.py; a remote keeps the same layout)
      runs/       run-cache entries (runcache.py; a remote keeps the same layout)
      projects/   the projects sharing this cache, for gc (registry.py)

``place.py`` puts objects into a project's workspace; ``check.py`` checks objects against
their names before they are used; ``shards.py`` lists and tidies the ``ab/`` shards.
"""

from __future__ import annotations

from pathlib import Path

from pivotbuild.store.check import ObjectMemo
from pivotbuild.store.objects import FILES_DIR, ObjectStore
from pivotbuild.store.registry import PROJECTS_DIR, Registry
from pivotbuild.store.runcache import RUNS_DIR, RunCache


class Cache:
    """One cache directory: ``objects``, ``runs`` (the run cache) and ``projects`` (the
    registry), each the only way to its part of the directory."""

    def __init__(self, cache_dir: Path, jobs: int = 0, durable: bool = True,
                 memo: ObjectMemo | None = None) -> None:
        """``jobs``: threads for bulk work (0: a default); ``durable``: flush what is written
        before it becomes visible (off: tests); ``memo``: where signatures of objects found
        good are kept (check.py)."""
        self.cache_dir = Path(cache_dir)
        self.objects = ObjectStore(self.cache_dir / FILES_DIR, jobs, durable, memo)
        self.runs = RunCache(self.cache_dir / RUNS_DIR, durable)
        self.projects = Registry(self.cache_dir / PROJECTS_DIR)


__all__ = ["Cache"]
