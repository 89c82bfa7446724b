"""Python import discovery for one stage run: the environment that turns the recorder on, and
the reader that turns its record files into project-relative discovered deps.

A stage with ``discover = ["python"]`` runs its commands with ``environ(record_file, root,
env)`` merged into their environment: the recorder's directory (``pivotbuild/discover/``)
first on ``PYTHONPATH``, ``PIVOTBUILD_DISCOVER_FILE`` naming the record file and
``PIVOTBUILD_DISCOVER_ROOT`` the project root. Every Python 3.8+ process those commands start,
at any depth, then appends the project files it imported and the script it ran to the record
file (see ``pivotbuild/discover/_pivotbuild_discover.py``). After the run, ``read()`` gives
the discovered deps.

Limits (what is not recorded): a process started with ``python -S``, ``-I`` or ``-E``, or
with ``PYTHONPATH`` replaced rather than extended (write ``PYTHONPATH=src:$PYTHONPATH``); code
run from source text (``exec(open(f).read())``, ``runpy.run_path``) or loaded without
entering ``sys.modules``; in a process killed by a signal, the modules that a finder other than
the path finder found (an editable install's); a module file outside the project reached
through a symlink into it; Python older than 3.8 (its own ``sitecustomize`` still runs).

Record files, shared with the read tracer (pivotbuild/audit.py): lines ``K PATH``, where K is
one character saying what happened and PATH an absolute path in which ``\\`` is written as
``\\\\`` and a newline as ``\\n``. A last line with no newline (a writer killed mid-line) is
ignored.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from pivotbuild.errors import OperationError
from pivotbuild.paths import STATE_DIR, covered, is_inside

FILE_VAR = "PIVOTBUILD_DISCOVER_FILE"
ROOT_VAR = "PIVOTBUILD_DISCOVER_ROOT"
HOOK_DIR = Path(__file__).resolve().parent / "discover"
MODULE, SCRIPT = "m", "x"


def environ(record_file: str | os.PathLike[str], root: str | os.PathLike[str],
            env: Mapping[str, str]) -> dict[str, str]:
    """The variables to set for a discovering stage run, given its environment ``env``
    (``PYTHONPATH`` keeps what ``env`` had, after the recorder's directory)."""
    if not (HOOK_DIR / "sitecustomize.py").is_file():
        raise OperationError(f"{HOOK_DIR}: pivotbuild's import recorder is missing from the "
                             "installation; reinstall pivotbuild")
    before = env.get("PYTHONPATH", "")
    return {
        "PYTHONPATH": str(HOOK_DIR) + (os.pathsep + before if before else ""),
        FILE_VAR: os.path.abspath(record_file),
        ROOT_VAR: os.path.abspath(root),
    }


def read(record_files: Iterable[str | os.PathLike[str]], root: str | os.PathLike[str],
         declared: Iterable[str] = ()) -> list[str]:
    """The discovered deps in ``record_files``: sorted project-relative paths of existing
    files, each once, less those ``declared`` (project-relative deps) covers: a path equal to
    one, or below one, as for depfiles. A record file that does not exist holds nothing (no
    Python process ran); one that cannot be read is an OperationError naming it."""
    found: list[str] = []
    for record_file in record_files:
        found.extend(path for kind, path in parse(read_bytes(record_file))
                     if kind in (MODULE, SCRIPT))
    cover = {posixpath.normpath(d).rstrip("/") for d in declared}
    return [p for p in project_paths(found, root, files_only=True) if not covered(p, cover)]




def read_bytes(record_file: str | os.PathLike[str]) -> bytes:
    """The contents of one record file; b"" if it does not exist."""
    try:
        return Path(record_file).read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise OperationError(f"{os.fspath(record_file)}: cannot read the record file: "
                             f"{exc.strerror or exc}") from None


def parse(data: bytes) -> Iterator[tuple[str, str]]:
    """(kind, path) for each complete ``K PATH`` line of a record file, paths unescaped."""
    lines = data.split(b"\n")
    for line in lines[:-1]:  # the part after the last newline is empty or incomplete
        if len(line) < 3 or line[1:2] != b" ":
            continue
        yield chr(line[0]), os.fsdecode(unescape(line[2:]))


def unescape(raw: bytes) -> bytes:
    """``\\\\`` → ``\\`` and ``\\n`` → newline; any other backslash stays as it is."""
    if b"\\" not in raw:
        return raw
    out = bytearray()
    i, end = 0, len(raw)
    while i < end:
        cut = raw.find(b"\\", i)
        if cut < 0 or cut + 1 >= end:
            out += raw[i:]
            break
        out += raw[i:cut]
        nxt = raw[cut + 1:cut + 2]
        out += b"\n" if nxt == b"n" else b"\\" if nxt == b"\\" else raw[cut:cut + 2]
        i = cut + 2
    return bytes(out)


def project_paths(paths: Iterable[str], root: str | os.PathLike[str], *,
                  files_only: bool) -> list[str]:
    """Absolute ``paths`` that lie inside the project, as sorted project-relative paths.

    A path counts as inside if it lies below the root as given or below the root with its
    symlinks resolved (both tested lexically, after normalising ``.`` and ``..``). Dropped:
    anything outside, the root itself, anything in ``.pivotbuild/``, and what does not exist
    now. With ``files_only`` (discovered deps), each path is then resolved through its
    symlinks and must still lie inside (a project symlink to a file elsewhere is dropped; one
    to a project file gives that file), and a path that is not a regular file is dropped,
    except that a path inside an archive (``lib.zip/pkg/mod.py``, from zipimport) stands for
    the archive. Without it (the audit), paths stay as named, and directories and every other
    existing entry are kept.
    """
    root_abs = _lexical_abs(os.path.abspath(os.fspath(root)))
    real_root = os.path.realpath(root_abs)
    prefixes = {root_abs.rstrip("/") + "/", real_root.rstrip("/") + "/"}
    found: set[str] = set()
    for path in paths:
        full = _lexical_abs(path)
        rel = next((full[len(p):] for p in prefixes if full.startswith(p)), "")
        if files_only and rel:
            rel = _resolved(real_root, rel)
        if not rel or is_inside(rel, STATE_DIR):
            continue
        kept = _existing(real_root, rel, files_only)
        if kept is not None:
            found.add(kept)
    return sorted(found)


def _resolved(real_root: str, rel: str) -> str:
    """``rel`` with its symlinks resolved, relative to ``real_root``; "" if that leaves it."""
    real = os.path.realpath(posixpath.join(real_root, rel))
    prefix = real_root.rstrip("/") + "/"
    return real[len(prefix):] if real.startswith(prefix) else ""


def _existing(real_root: str, rel: str, files_only: bool) -> str | None:
    """``rel`` if it exists as required, the archive holding it, or None."""
    full = posixpath.join(real_root, rel)
    if not files_only:
        return rel if os.path.lexists(full) else None
    if os.path.isfile(full):
        return rel
    if os.path.lexists(full):
        return None  # a directory or another kind of entry
    cut = rel.rfind("/")
    while cut > 0:
        above = posixpath.join(real_root, rel[:cut])
        if os.path.isfile(above):
            return rel[:cut]
        if os.path.lexists(above):
            return None
        cut = rel.rfind("/", 0, cut)
    return None


def _lexical_abs(path: str) -> str:
    """``posixpath.normpath`` without its special case for a leading ``//``."""
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/") if norm.startswith("//") else norm
