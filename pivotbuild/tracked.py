"""Tracked paths: data no stage produces, recorded in ``.pvt`` files (`track`, SPEC §10).

Format, version 1 (``PATH.pvt`` beside the data, committed to git)
------------------------------------------------------------------
JSON exactly as ``json.dumps(record, indent=2, sort_keys=True) + "\\n"`` writes it::

    {
      "hash": "<32 hex>.dir",    # the data's hash (SPEC §2): a file's, or a directory's + .dir
      "nfiles": 3,               # present exactly when the hash is a directory hash
      "path": "images",          # the data, relative to the directory holding this .pvt
      "size": 4567               # the file's size, or the sum of the directory's files' sizes
    }

- ``path`` is ``/``-separated and normalised (no empty, ``.`` or ``..`` component) and
  names a path below the record's own directory; ``track`` always writes the data's own name
  (``data/raw.csv`` → ``data/raw.csv.pvt`` holding ``"path": "raw.csv"``).
- No other key; no timestamp, no absolute path: the same data gives byte-identical records
  in any checkout. Records are written as locks are: to a temp file renamed into place, and
  not at all when the bytes are the same (same inode, same mtime).
- A record that does not follow this is a config error (exit 2) naming the file and what is
  wrong: a record is what a user commits, and a wrong one must be fixed, not guessed at.

Where records are looked for
----------------------------
``find_records`` walks the project from its root, never following a symlinked directory,
and does not look inside: ``.git`` and ``.pivotbuild`` (at any depth), the directories it is
told to skip (a pipeline passes its stage outputs and its cache directory: a record can never
lie in an output), a directory a record in its parent tracks (``x.pvt`` beside ``x/``), and a
Python virtual environment (a directory holding ``pyvenv.cfg``). ``track`` refuses a path in
any of these places, so a record it writes is always found again.

``track`` stores the data in the cache through the object store's ``store_file`` /
``store_dir``, as the commit writer stores outputs, but never by hardlink (a copy or a
reflink): tracked data is edited by hand, and an edit in place must not reach the cache. For
the same reason checkout places it without hardlinks (``checkout_methods``) unless the
project allows nothing else. Then the record is written, then ``/NAME`` is added to the
``.gitignore`` of the data's directory (once).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pivotbuild.atomic import write_atomic, write_if_changed
from pivotbuild.errors import ConfigError, OperationError, UsageError
from pivotbuild.names import is_dir_hash, is_hash
from pivotbuild.paths import (
    GIT_DIR,
    PARAMS_FILE,
    STATE_DIR,
    TRACK_SUFFIX,
    PathProblem,
    is_inside,
    normalize_path,
    protected_files,
)

if TYPE_CHECKING:
    from pivotbuild.config import Project
    from pivotbuild.hasher import Hasher, PathDigest
    from pivotbuild.pipeline import Pipeline
    from pivotbuild.store import Cache

RECORD_VERSION = 1
SUFFIX = TRACK_SUFFIX
GITIGNORE = ".gitignore"
VENV_MARKER = "pyvenv.cfg"

# What `status` says of a tracked path (SPEC §10).
UP_TO_DATE = "up-to-date"
TRACKED_CHANGED = "tracked-changed"
MISSING = "missing"

_KEYS = frozenset({"hash", "nfiles", "path", "size"})


@dataclass(frozen=True, slots=True)
class Record:
    """One ``.pvt`` record. ``file`` is the record's project-relative path, ``path`` the
    data's (project-relative: the record's directory joined with what the file says)."""

    file: str
    path: str
    hash: str
    size: int
    nfiles: int | None = None

    @property
    def is_dir(self) -> bool:
        return self.nfiles is not None

    def to_dict(self) -> dict[str, Any]:
        """The document as written: ``path`` relative to the record's directory."""
        directory = _parent(self.file)
        rel = self.path if directory == "." else self.path[len(directory) + 1:]
        doc: dict[str, Any] = {"hash": self.hash, "path": rel, "size": self.size}
        if self.nfiles is not None:
            doc["nfiles"] = self.nfiles
        return doc

    def render(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode()


def _parent(path: str) -> str:
    return path.rpartition("/")[0] or "."


def record_file(path: str) -> str:
    """The record of the project-relative data path ``path``: ``path + ".pvt"``."""
    return path + SUFFIX


# ---- reading ------------------------------------------------------------------------------


def parse_record(data: bytes | str, file: str, where: str | None = None) -> Record:
    """The record in ``data``, read from the project-relative ``file``; ConfigError naming
    ``where`` (default: ``file``) and the key at fault when it does not follow the format."""
    shown = where or file
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise ConfigError(shown, "", "not a valid tracked-path record: not JSON (write it "
                          "again with 'pivotbuild track')") from None
    if not isinstance(doc, dict):
        raise ConfigError(shown, "", "not a valid tracked-path record: expected a JSON object")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise ConfigError(shown, unknown[0], "unknown key in a tracked-path record")
    for key in ("hash", "path", "size"):
        if key not in doc:
            raise ConfigError(shown, key, "missing from the tracked-path record")
    digest, rel, size, nfiles = doc["hash"], doc["path"], doc["size"], doc.get("nfiles")
    if not is_hash(digest):
        raise ConfigError(shown, "hash", f"not a hash: {digest!r}")
    if not isinstance(rel, str) or not _relative(rel):
        raise ConfigError(shown, "path", f"not a normalised relative path below the record's "
                          f"directory: {rel!r}")
    if type(size) is not int or size < 0:
        raise ConfigError(shown, "size", f"not a size in bytes: {size!r}")
    if is_dir_hash(digest):
        if type(nfiles) is not int or nfiles < 0:
            raise ConfigError(shown, "nfiles", "a directory's record needs its file count, "
                              f"got {nfiles!r}")
    elif "nfiles" in doc:
        raise ConfigError(shown, "nfiles", "only a directory (a .dir hash) has a file count")
    directory = _parent(file)
    path = rel if directory == "." else f"{directory}/{rel}"
    return Record(file, path, digest, size, nfiles)


def _relative(rel: str) -> bool:
    return bool(rel) and not rel.startswith("/") and "\0" not in rel and all(
        part not in ("", ".", "..") for part in rel.split("/"))


def read_record(root: str | os.PathLike[str], file: str) -> Record:
    """The record at the project-relative ``file``; ConfigError if it is not valid,
    OperationError if it cannot be read."""
    try:
        data = Path(root, file).read_bytes()
    except FileNotFoundError:
        raise OperationError(f"{file}: no such tracked-path record") from None
    except OSError as exc:
        raise OperationError(f"{file}: cannot read the tracked-path record: "
                             f"{exc.strerror or exc}") from None
    return parse_record(data, file)


def find_records(root: str | os.PathLike[str], skip: Iterable[str] = (),
                 walked: list[str] | None = None,
                 listings: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """Every ``*.pvt`` file of the project, project-relative and sorted, looked for as the
    module says. ``skip``: project-relative directories not to look inside. ``walked``
    receives every directory listed (project-relative, ``.`` for the root; a venv is listed,
    not entered); ``listings`` each one's listing key: its ``.pvt`` names and venv marker,
    and its subdirectories as ``name/``, sorted (snapshot.listing_key computes the same)."""
    top = os.fspath(root)
    pruned = {s for s in skip if s != "."}
    found: list[str] = []
    stack = ["."]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(top if rel == "." else os.path.join(top, rel)) as it:
                marked: list[str] = []  # .pvt names and the venv marker
                records: list[str] = []  # .pvt names of files
                subdirs: list[str] = []
                for entry in it:
                    name = entry.name
                    if name.endswith(SUFFIX) or name == VENV_MARKER:
                        marked.append(name)
                        if name != SUFFIX and name != VENV_MARKER and entry.is_file():
                            records.append(name)
                    elif entry.is_dir(follow_symlinks=False):
                        subdirs.append(name)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        except OSError as exc:
            raise OperationError(f"{rel}: cannot list the directory: "
                                 f"{exc.strerror or exc}") from None
        if walked is not None:
            walked.append(rel)
        if listings is not None:
            listings[rel] = tuple(sorted([*marked, *(d + "/" for d in subdirs)]))
        if rel != "." and VENV_MARKER in marked:
            continue
        base = "" if rel == "." else rel + "/"
        found.extend(base + name for name in records)
        for name in subdirs:
            if (name in (GIT_DIR, STATE_DIR) or base + name in pruned
                    or name + SUFFIX in marked):
                continue
            stack.append(base + name)
    return sorted(found)


def read_records(root: str | os.PathLike[str], skip: Iterable[str] = ()) -> list[Record]:
    """The records ``find_records`` finds, read and checked: two records of one path, or of
    paths one inside the other, are a config error naming both."""
    records = [read_record(root, file) for file in find_records(root, skip)]
    check_overlaps(records)
    return records


def check_overlaps(records: Sequence[Record]) -> None:
    """ConfigError naming both records if two track one path, or one a path inside the
    other's."""
    seen: dict[str, Record] = {}
    for record in sorted(records, key=lambda r: (r.path.count("/"), r.path)):
        parts = record.path.split("/")
        for depth in range(1, len(parts) + 1):
            other = seen.get("/".join(parts[:depth]))
            if other is not None:
                how = "the same path" if other.path == record.path else "a path inside"
                raise ConfigError(record.file, "path", f"tracks {how} {other.path!r}, which "
                                  f"{other.file} tracks; delete one of them")
        seen[record.path] = record


def record_status(record: Record, digest: PathDigest) -> str:
    """``up-to-date``, ``tracked-changed`` or ``missing``: the workspace against the record."""
    if digest.missing:
        return MISSING
    return UP_TO_DATE if digest.hash == record.hash else TRACKED_CHANGED


def statuses(root: str | os.PathLike[str], records: Sequence[Record], hasher: Hasher
             ) -> list[tuple[Record, str]]:
    """Each record with its status, every path hashed in one batch (the stat memo spares the
    unchanged ones)."""
    digests = hasher.hash_paths([os.path.join(os.fspath(root), r.path) for r in records])
    return [(r, record_status(r, d)) for r, d in zip(records, digests, strict=True)]


def select(records: Sequence[Record], targets: Sequence[str]) -> tuple[list[Record], list[str]]:
    """Split project-relative ``targets`` into the records they name (a tracked path, a path
    inside one, a directory holding some other than the root, or a record file) and the
    targets left for the stages."""
    chosen: dict[str, Record] = {}
    rest: list[str] = []
    for target in targets:
        hits = [r for r in records
                if target == r.file or is_inside(target, r.path)
                or (target != "." and is_inside(r.path, target))]
        if not hits:
            rest.append(target)
        chosen.update((r.file, r) for r in hits)
    return list(chosen.values()), rest


# ---- writing ------------------------------------------------------------------------------


def write_record(root: str | os.PathLike[str], data_path: str, digest: PathDigest) -> Record:
    """Write ``data_path + ".pvt"`` for the hashed data (``digest``: hash, size, nfiles);
    unchanged bytes are not rewritten. Returns the record."""
    if digest.hash is None:
        raise OperationError(f"{data_path}: not hashed; no record written")
    record = Record(record_file(data_path), data_path, digest.hash, digest.size, digest.nfiles)
    target = Path(root, record.file)
    try:
        write_if_changed(target, record.render())
    except OSError as exc:
        raise OperationError(f"{record.file}: cannot write the tracked-path record: "
                             f"{exc.strerror or exc}") from None
    return record


def _gitignore_line(name: str) -> str:
    """``/NAME`` as a .gitignore pattern matching exactly that entry of its directory."""
    body = "".join("\\" + c if c in "\\*?[" else c for c in name)
    if body.endswith(" "):
        body = body[:-1] + "\\ "
    return "/" + body


def add_to_gitignore(root: str | os.PathLike[str], path: str) -> bool:
    """Add ``/NAME`` for the project-relative ``path`` to its directory's .gitignore unless a
    line already says it; True if the file was written."""
    directory, _, name = path.rpartition("/")
    target = Path(root, directory, GITIGNORE) if directory else Path(root, GITIGNORE)
    line = _gitignore_line(name)
    try:
        text = target.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise OperationError(f"{_shown(target, root)}: cannot read: {exc.strerror or exc}") \
            from None
    present = {raw.strip() for raw in text.splitlines()}
    if line in present or line + "/" in present:
        return False
    if text and not text.endswith("\n"):
        text += "\n"
    text += line + "\n"
    try:
        write_atomic(target, text.encode("utf-8", "surrogateescape"), mode=0o644)
    except OSError as exc:
        raise OperationError(f"{_shown(target, root)}: cannot write: {exc.strerror or exc}") \
            from None
    return True


def _shown(target: Path, root: str | os.PathLike[str]) -> str:
    return os.path.relpath(target, root)


# ---- track --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tracked:
    """What ``track`` did for one path: its new record, and the one it replaced (None: the
    path was not tracked before)."""

    record: Record
    previous: Record | None

    @property
    def changed(self) -> bool:
        return self.previous is None or self.previous.render() != self.record.render()


def project_path(root: str | os.PathLike[str], given: str, cwd: str | None = None) -> str:
    """``given`` (relative to ``cwd``, default the working directory, or absolute) as a
    normalised project-relative path; UsageError if it lies outside the project. Symlinks in
    its parent directories are resolved first when that stays inside the project (``dl/a``
    with ``dl -> d`` is ``d/a``: its record and .gitignore entry go where git can add them)."""
    base = cwd if cwd is not None else os.getcwd()
    absolute = os.path.normpath(os.path.join(base, given))
    top = os.path.realpath(root)
    resolved = os.path.join(os.path.realpath(os.path.dirname(absolute)),
                            os.path.basename(absolute))
    for candidate in (resolved, absolute):
        if is_inside(candidate, top):
            rel = os.path.relpath(candidate, top)
            return "." if rel == "." else rel.replace(os.sep, "/")
    raise UsageError(f"{given}: outside the project ({top}); only paths inside it can be "
                     "tracked")


def trackable_problem(project: Project, path: str, records: Sequence[Record] = ()
                      ) -> str | None:
    """Why the normalised project-relative ``path`` cannot be tracked, or None."""
    if path == ".":
        return "is the project root itself; track the files or directories inside it"
    parts = path.split("/")
    folded = [p.casefold() for p in parts]
    if STATE_DIR in folded:
        return f"lies in {STATE_DIR}, pivotbuild's own directory"
    if GIT_DIR in folded:
        return f"lies in {GIT_DIR}, git's own directory"
    if parts[-1].endswith(SUFFIX):
        return f"is a tracked-path record (*{SUFFIX}) itself"
    params = [getattr(project, "params_file", PARAMS_FILE)]
    for file, what in protected_files(params).items():
        if is_inside(file, path):
            return f"{'is' if file == path else 'holds'} {what}"
    for source in getattr(project, "sources", ()):
        if is_inside(source, path):
            return f"{'is' if source == path else 'holds'} {source}, which pivotbuild reads " \
                   "to expand the pipeline"
    cache = _inside_root(project.root, project.cache_dir)
    if cache is not None and (is_inside(path, cache) or is_inside(cache, path)):
        return f"{'lies in' if is_inside(path, cache) else 'holds'} the cache directory {cache}"
    for stage in project.stages.values():
        for out in stage.outs:
            if path == out.path:
                return f"is an output of stage '{stage.name}'; stages' outputs are recorded " \
                       "in their locks"
            if is_inside(path, out.path):
                return f"lies inside {out.path}, an output of stage '{stage.name}'"
            if is_inside(out.path, path):
                return f"holds {out.path}, an output of stage '{stage.name}'"
        depfile = getattr(stage, "depfile", None)
        if depfile is not None and (is_inside(path, depfile) or is_inside(depfile, path)):
            return f"{'is' if path == depfile else 'holds'} {depfile}, the depfile of stage " \
                   f"'{stage.name}' (deleted before each of its runs)"
    for record in records:
        if path != record.path and is_inside(path, record.path):
            return f"lies inside {record.path}, which is tracked already ({record.file})"
        if path != record.path and is_inside(record.path, path):
            return f"holds {record.path}, which is tracked already ({record.file}); " \
                   "delete that record first"
    top = os.fspath(project.root)
    for i in range(1, len(parts)):
        above = "/".join(parts[:i])
        if os.path.exists(os.path.join(top, above, VENV_MARKER)):
            return f"lies inside {above}, a Python virtual environment"
    return None


def _inside_root(root: Path, directory: Path) -> str | None:
    """``directory`` as a project-relative path if it lies in the project, else None."""
    try:
        rel = os.path.relpath(os.path.realpath(directory), os.path.realpath(root))
    except ValueError:
        return None
    if rel == "." or rel == ".." or rel.startswith("../"):
        return None if rel != "." else "."
    return rel.replace(os.sep, "/")


def skipped_dirs(project: Project) -> list[str]:
    """What find_records need not look inside for this project: its stage outputs and its
    cache directory when that lies in the project."""
    skip = [out.path for stage in project.stages.values() for out in stage.outs]
    cache = _inside_root(project.root, project.cache_dir)
    if cache is not None:
        skip.append(cache)
    return skip


def checkout_methods(methods: Sequence[str]) -> list[str]:
    """How tracked data is placed in the workspace: the project's checkout methods without
    hardlinks, unless they are all it allows. Tracked data is edited by hand (appended to,
    rewritten in place), and a hardlink would let such an edit reach the cache object."""
    return [m for m in methods if m != "hardlink"] or list(methods)


def track(project: Project, paths: Sequence[str], hasher: Hasher, cache: Cache
          ) -> list[Tracked]:
    """Track the project-relative ``paths``: hash each (one batch, the C core), store its
    content in the cache as an output is stored, write ``PATH.pvt``, add PATH to its
    directory's .gitignore. All paths are checked before anything is written: a path that
    cannot be tracked is a UsageError naming it (exit 2); one that cannot be read, an
    OperationError (exit 1)."""
    root = project.root
    normal: list[str] = []
    for given in paths:
        try:
            path = normalize_path(given)
        except PathProblem as exc:
            raise UsageError(f"{given}: {exc}") from None
        if path not in normal:
            normal.append(path)
    existing = list({r.file: r for path in normal for r in _near(root, path)}.values())
    by_path = {r.path: r for r in existing}
    for path in normal:
        problem = trackable_problem(project, path, existing)
        if problem is None:
            problem = next((f"lies inside {other}, also given" for other in normal
                            if other != path and is_inside(path, other)), None)
        if problem is not None:
            raise UsageError(f"{path}: cannot be tracked: {problem}")
        if not os.path.lexists(root / path):
            raise UsageError(f"{path}: no such file or directory")
        if not is_inside(os.path.realpath(root / path), os.path.realpath(root)):
            raise UsageError(f"{path}: cannot be tracked: it leads outside the project "
                             f"through a symlink")
    digests = hasher.hash_paths([str(root / p) for p in normal])
    for digest in digests:
        if digest.hash is None:
            raise OperationError(f"cannot track {digest.problem(str(root))}")
    cache.projects.register(root)  # so that gc from a project sharing the cache keeps these
    done: list[Tracked] = []
    for path, digest in zip(normal, digests, strict=True):
        digest.path = path
        assert digest.hash is not None
        if digest.is_dir:
            cache.objects.store_dir(root / path, digest, shown=path)
        else:
            cache.objects.store_file(root / path, digest.hash, shown=path)
        record = write_record(root, path, digest)
        add_to_gitignore(root, path)
        done.append(Tracked(record, by_path.get(path)))
    return done


def _near(root: Path, path: str) -> list[Record]:
    """The records that may overlap ``path``: its own, those beside each directory above it,
    and those inside it. (Not the whole project's: importing a thousand ``dvc add`` files
    must not walk the project a thousand times.)"""
    parts = path.split("/")
    near = [read_record(root, file) for file in (
        "/".join(parts[:depth]) + SUFFIX for depth in range(1, len(parts) + 1))
        if os.path.isfile(root / file)]
    if os.path.isdir(root / path):
        near += [read_record(root, f"{path}/{file}") for file in find_records(root / path)]
    return near


def project_records(project: Project) -> list[Record]:
    """Every record of the project (find_records, skipping its outputs and cache); a record
    of a path that is, holds or lies in a stage's output is a config error naming both."""
    records = read_records(project.root, skipped_dirs(project))
    if records:
        outs = {out.path: stage.name for stage in project.stages.values()
                for out in stage.outs}
        for record in records:
            for out, stage in outs.items():
                if is_inside(record.path, out) or is_inside(out, record.path):
                    raise ConfigError(record.file, "path", f"{record.path} is tracked, but "
                                      f"{out} is an output of stage '{stage}': delete the "
                                      "record or the output from pivot.toml")
    return records


def select_targets(pipeline: Pipeline, targets: Sequence[str], *, single_item: bool = False,
                   downstream: bool = False) -> tuple[list[str], list[Record]]:
    """The stages and the records a command's TARGETS name. No targets: every stage (as
    ``pipeline.select``) and every record. A target that is not a stage (or matrix base) name
    and names a tracked path, a path inside one, a directory holding some, or a record file,
    selects those records; the other targets select stages as ``pipeline.select`` does."""
    records = project_records(pipeline.project)
    if not targets:
        return pipeline.select([], single_item=single_item, downstream=downstream), records
    stage_targets: list[str] = []
    chosen: dict[str, Record] = {}
    bases = {s.base for s in pipeline.project.stages.values()}
    for target in targets:
        if target in pipeline.graph or target in bases:
            stage_targets.append(target)
            continue
        hits, _ = select(records, [project_path(pipeline.root, target)])
        if hits:
            chosen.update((r.file, r) for r in hits)
        else:
            stage_targets.append(target)
    names = (pipeline.select(stage_targets, single_item=single_item, downstream=downstream)
             if stage_targets else [])
    return names, sorted(chosen.values(), key=lambda r: r.path)


__all__ = [
    "MISSING", "RECORD_VERSION", "SUFFIX", "TRACKED_CHANGED", "UP_TO_DATE", "Record",
    "Tracked", "add_to_gitignore", "check_overlaps", "checkout_methods", "find_records",
    "parse_record", "project_path", "project_records", "read_record", "read_records",
    "record_file", "record_status", "select", "select_targets", "skipped_dirs", "statuses",
    "track", "trackable_problem", "write_record",
]
