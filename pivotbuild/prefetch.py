"""Hash a pipeline's deps and outs in the background while the heavy modules load.

Loading pydantic, networkx and the config models takes a few hundred
milliseconds of Python; stat'ing a 100,000-file dependency takes about as long
in C, with the GIL released. Started first, this thread reads pivot.toml with
tomlread (no validation) and hashes every plain dep and out path it names through
the stat memo; ``take`` hands each result, at most once, to the hasher the
planner hashes through (hasher.Hasher's ``ahead``). Anything it cannot make
sense of (templated paths, a broken file) it simply leaves to the planner: it
only ever saves time.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pivotbuild import tomlread
from pivotbuild.hasher import Hasher, PathDigest
from pivotbuild.paths import PROJECT_FILE, STATE_DB_FILE, STATE_DIR
from pivotbuild.state import StateDB


def _candidate_paths(root: Path) -> list[str]:
    """Absolute paths of the literal deps and outs in pivot.toml (no ${...})."""
    try:
        document = tomlread.loads((root / PROJECT_FILE).read_text())
    except (OSError, ValueError):
        return []
    stages = document.get("stages")
    found: set[str] = set()
    for table in stages.values() if isinstance(stages, dict) else []:
        if not isinstance(table, dict) or "matrix" in table or "foreach" in table:
            continue
        wdir = table.get("wdir", ".")
        if not isinstance(wdir, str) or "${" in wdir:
            continue
        entries = [*table.get("deps", []), *table.get("outs", [])]
        for entry in entries if isinstance(entries, list) else []:
            path = entry.get("path") if isinstance(entry, dict) else entry
            if isinstance(path, str) and path and "${" not in path and "\0" not in path:
                full = os.path.normpath(os.path.join(root, wdir, path))
                if full.startswith(str(root) + os.sep) and os.path.lexists(full):
                    found.add(full)
    return sorted(found)


class Prefetch:
    """The background hashing of one project's literal deps and outs."""

    def __init__(self, root: Path, jobs: int = 0) -> None:
        self.root = Path(os.path.realpath(root))
        self.jobs = jobs
        self._results: dict[str, PathDigest] = {}
        self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            paths = _candidate_paths(self.root)
            if not paths:
                return
            state = StateDB(self.root / STATE_DIR / STATE_DB_FILE)
            try:
                digests = Hasher(self.root, state, self.jobs).hash_paths(paths)
            finally:
                state.close()
            self._results = dict(zip(paths, digests, strict=True))
        except Exception:  # noqa: BLE001 - an optimisation must never be the cause of a failure
            self._results = {}

    def take(self, path: str) -> PathDigest | None:
        """The prefetched digest of this absolute path, once; None if there is none."""
        self._thread.join()
        return self._results.pop(path, None)
