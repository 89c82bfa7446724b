"""The `hash` command's work and output, free of click so that the entry point's
fast path (entry.py) can run it without loading the CLI framework."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from pivotbuild.errors import EXIT_FAILED, EXIT_OK
from pivotbuild.hasher import Hasher
from pivotbuild.paths import STATE_DB_FILE, ensure_state_dir_str, find_project_root_str
from pivotbuild.state import StateDB


def run_hash(paths: Sequence[str], jobs: int = 0, as_json: bool = False,
             no_state: bool = False) -> int:
    """Hash each path, print '<hash>  <path>' (or JSON); the exit code."""
    root = find_project_root_str(os.getcwd())
    state = None
    if not no_state and root is not None:
        state = StateDB(os.path.join(ensure_state_dir_str(root), STATE_DB_FILE))
    try:
        results = Hasher(root, state, jobs).hash_paths(list(paths))
    finally:
        if state is not None:
            state.close()
    failed = any(r.errors for r in results)
    if as_json:
        import json

        doc: dict[str, list[dict[str, object]]] = {"paths": [], "errors": []}
        for r in results:
            if r.hash is not None:
                item: dict[str, object] = {"path": r.path, "hash": r.hash, "size": r.size}
                if r.is_dir:
                    item["nfiles"] = r.nfiles
                doc["paths"].append(item)
            doc["errors"].extend({"path": p, "error": e} for p, e in r.errors)
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        out = sys.stdout
        for r in results:
            if r.hash is not None:
                out.write(f"{r.hash}  {r.path}\n")
            for shown, problem in r.errors:
                out.flush()
                print(f"pivotbuild: error: {shown}: {problem}", file=sys.stderr)
    sys.stdout.flush()
    return EXIT_FAILED if failed else EXIT_OK
