"""Which projects share a cache directory, so that gc from any of them keeps the others' work.

Format, version 1 (``projects/`` of a cache directory): one file per project that wrote to the
cache, named by the XXH3-128 of its resolved root path (``<32 hex>.json``), holding
``{"root": "<absolute path>"}`` and a newline. A project whose root no longer holds pivot.toml
is unregistered when the registry is read (gc.py explains the rule the registry serves).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pivotbuild.atomic import unlink_quietly, write_if_changed
from pivotbuild.errors import OperationError
from pivotbuild.hashing import get_backend
from pivotbuild.paths import PROJECT_FILE
from pivotbuild.store.fileio import why

PROJECTS_DIR = "projects"
REGISTRY_VERSION = 1


class Registry:
    """The registered projects of one cache directory (its ``projects/``)."""

    def __init__(self, projects_dir: Path) -> None:
        self.projects_dir = Path(projects_dir)

    def register(self, root: Path) -> None:
        """Record that the project at ``root`` keeps locks referencing this cache, so that
        a gc run from any project sharing the cache honours them. Idempotent and cheap."""
        root = Path(root).resolve()
        entry = self.projects_dir / (get_backend().hash_bytes(os.fsencode(root)) + ".json")
        if entry.exists():
            return
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            write_if_changed(entry, (json.dumps({"root": str(root)}) + "\n").encode())
        except OSError as exc:
            raise OperationError(f"{entry}: cannot register the project: {why(exc)}") from None

    def projects(self) -> list[Path]:
        """Roots of the registered projects that still exist; the others are unregistered."""
        roots = []
        directory = self.projects_dir
        for entry in sorted(directory.glob("*.json")) if directory.is_dir() else []:
            try:
                root = Path(json.loads(entry.read_text())["root"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if (root / PROJECT_FILE).is_file():
                roots.append(root)
            else:
                unlink_quietly(entry)
        return roots


__all__ = ["PROJECTS_DIR", "REGISTRY_VERSION", "Registry"]
