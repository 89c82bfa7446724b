"""The pipeline snapshot: the expanded pipeline and the state it was last found up to date in.

A no-op is the run users feel most (Ninja's is a few stats). Validating and
expanding pivot.toml needs pydantic and networkx, which cost more to import
than everything a no-op has to check. So when the full path has planned every
stage and found nothing stale, it leaves this snapshot behind, and the next
``status``, ``repro``, ``verify`` or ``dag`` (fastpath.py) answers from it
with a stat per path, importing none of them.

File: ``.pivotbuild/snapshot`` (per machine, never committed), written
atomically. Its content is the XXH3-128 (32 hex digits) of what follows, then
``marshal.dumps(doc)`` of one dict (a file damaged on disk fails the hash, and is not read),
SNAPSHOT_VERSION 5:

- ``magic``: ``"pivotbuild-snapshot"``; ``version``: SNAPSHOT_VERSION;
  ``pivotbuild``: the package version; ``python``: the interpreter's cache tag
  (marshal's format belongs to the interpreter);
- ``root``: the project root's real path; ``cache_dir``: the cache directory
  the project resolved to; ``env``: what it was resolved from (cache_env):
  ``PIVOTBUILD_CACHE_DIR`` made absolute (a relative value names a directory of the working
  directory) and ``HOME`` (a ``cache_dir`` of ``~/...``);
- ``configs``: ``[(relpath, hash or None)]``: the XXH3-128 of each file that
  decides the expansion (pivot.toml, params.toml, config.local.toml, and every
  other file it read: Project.sources); None: the file was absent. Checked by
  content, so an edit of the same size in the same second is still seen;
- ``glob_dirs``: ``[(relpath, mtime_ns, ctime_ns, ino)]`` for every directory a
  glob walked (Project.glob_dirs), -1, -1, 0 where it was missing: a match
  that appears or goes changes its directory's stamp; and for every symlink a glob
  met, where it leads (dir_stamps);
- ``locks``: ``[(file name, size, ctime_ns, ino, hash, trusted)]`` for every
  file in ``.pivotbuild/locks``; the directory listing must be the same set (the full path
  reads every lock whole, so the ctime, which touch -d cannot set back, signs them);
- ``stages``: in topological order, ``(name, base, status, input_hash, files,
  dirs, outs)``: ``status`` "up-to-date" or "frozen"; ``files``:
  ``[(relpath, size, mtime_ns, ino, hash, trusted)]`` for every file dep and
  out; ``dirs``: ``[(relpath, hash, tree)]`` for directory deps and outs;
  ``outs``: ``[(relpath, hash, cached)]`` as the lock records them, for ``verify``;
- ``edges``: ``[(upstream index, downstream index)]`` into ``stages``;
- ``tracked`` (tracked.py's records, all found up to date): ``dirs``: ``[(relpath, ctime_ns,
  trusted, listing)]`` for every directory tracked.find_records looked inside, ``listing``
  being listing_key's answer (a directory whose ctime moved is listed again: only a new
  record, subdirectory or venv marker there matters); ``pvts``: the record files, as
  ``locks`` (content hash); ``paths``: the tracked paths in record order; ``files`` and
  ``tree``: the tracked files and directories, as a stage's ``files`` and ``dirs``; ``outs``:
  ``[(relpath, hash, True)]`` for ``verify``.

A directory's ``tree`` is None (the fast path hashes it through the tree memo,
as the full path does) or ``(memo file, memo hash, stamps)``: the memo
snapshot its hashing left (``.pivotbuild/memo/...``, see state.py), which
then listed every one of its files, the XXH3-128 of that memo's bytes, and
``[(relpath below it, mtime_ns, ino, trusted)]`` for every directory the walk
listed. The fast path takes the directory's hash as unchanged when the memo
file still has that hash, every file it lists has its recorded stat, and
every directory either has its stamp (and the stamp was trusted) or, listed
again, holds the same names: what Ninja and git's preloaded index do, without
walking the tree or building its manifest.

``trusted`` follows git's racy rule: a stat signature identifies content only
if the file's mtime lay outside hashing.RACY_WINDOW_NS of the moment its
content was read. An untrusted entry is rehashed by the fast path whenever its
stat matches, and the snapshot is rewritten trusted once it has aged.

It is a cache. Anything unreadable, of another version, or not matching its
key, means the full path runs and writes a new one: never a wrong answer. A
project whose paths go through symlinks gets no snapshot (the stat of a link's
target is not enough to tell that the link still points there).
"""

from __future__ import annotations

import marshal
import os
import sys

from pivotbuild import __version__
from pivotbuild.atomic import unlink_quietly, write_atomic
from pivotbuild.hashtypes import RACY_WINDOW_NS
from pivotbuild.paths import (
    CACHE_DIR_ENV,
    LOCAL_CONFIG_FILE,
    LOCKS_DIR,
    PARAMS_FILE,
    PROJECT_FILE,
    STATE_DIR,
    TRACK_SUFFIX,
    is_inside,
)

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing costs the fast path start-up

if TYPE_CHECKING:
    from typing import Any

    from pivotbuild.config_models import Project
    from pivotbuild.hasher import PathDigest
    from pivotbuild.pipeline import Pipeline
    from pivotbuild.plan import Decision

SNAPSHOT_VERSION = 5  # 2: tracked paths; 3: directories checked by their memo and stamps;
# 4: glob_dirs holds the symlinks a glob met; 5: locks, records and their directories by ctime
MAGIC = "pivotbuild-snapshot"
SNAPSHOT_FILE = "snapshot"
_DIGEST = 32  # a sealed file's hex XXH3-128 of the bytes that follow it
CONFIG_FILES = (PROJECT_FILE, PARAMS_FILE, LOCAL_CONFIG_FILE)


def snapshot_path(root: str) -> str:
    return os.path.join(root, STATE_DIR, SNAPSHOT_FILE)


def cache_dir_env() -> str | None:
    """``PIVOTBUILD_CACHE_DIR`` as the directory it names (as config.py resolves it: a
    relative value is relative to the working directory, ``~`` the home), or as it is when
    unset or empty."""
    value = os.environ.get(CACHE_DIR_ENV)
    return os.path.abspath(os.path.expanduser(value)) if value else value


def cache_env() -> list[str | None]:
    """What the cache directory is resolved from besides the configuration: a cache of it
    is valid only while this is the same."""
    return [cache_dir_env(), os.environ.get("HOME")]


def content_hash(data: bytes) -> str:
    import xxhash

    return xxhash.xxh3_128_hexdigest(data)


def sealed(body: bytes) -> bytes:
    """A cache file's bytes: the hex XXH3-128 of ``body``, then ``body``."""
    return content_hash(body).encode() + body


def unsealed(data: bytes) -> bytes:
    """The body of a ``sealed`` file; ValueError if it was damaged (it fails its hash)."""
    body = data[_DIGEST:]
    if data[:_DIGEST] != content_hash(body).encode():
        raise ValueError("a damaged cache file")
    return body


def read_sealed(path: str) -> Any:
    """What ``write_sealed`` kept at ``path``; None if the file is missing, unreadable,
    damaged (it fails its hash) or not marshal's. The caller checks the value's header."""
    try:
        with open(path, "rb") as handle:
            return marshal.loads(unsealed(handle.read()))
    except (OSError, EOFError, ValueError, TypeError):
        return None


def write_sealed(path: str, doc: Any) -> None:
    """Keep ``doc`` at ``path`` for ``read_sealed``: marshal, sealed, written atomically but
    not durably (the snapshot, the project cache and compare's memos: losing one only costs
    work). A value marshal cannot hold (a TOML date), or a failed write, keeps nothing."""
    try:
        write_atomic(path, sealed(marshal.dumps(doc)), durable=False)
    except (OSError, ValueError):
        pass  # only ever saves time


def _read(path: str) -> bytes | None:
    """The file's bytes; None where there is no file (a directory there is none: loading the
    project reads params.toml and config.local.toml only when they are files)."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def config_key(root: str, files: tuple[str, ...] | list[str] = CONFIG_FILES
               ) -> list[tuple[str, str | None]]:
    """The content hash of every file that decides the expansion (None: absent)."""
    key = []
    for rel in files:
        data = _read(os.path.join(root, rel))
        key.append((rel, None if data is None else content_hash(data)))
    return key


def _stat_entry(path: str, rel: str, known_hash: str, now_ns: int, by_ctime: bool = False
                ) -> tuple[str, int, int, int, str, bool] | None:
    """(rel, size, mtime_ns, ino, hash, trusted) for a regular file, None otherwise.
    ``by_ctime``: the ctime in mtime's place, for a file the full path reads whole (a lock,
    a tracked-path record): an edit in place whose mtime was set back still moves it."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    import stat

    if not stat.S_ISREG(st.st_mode):
        return None
    changed_ns = st.st_ctime_ns if by_ctime else st.st_mtime_ns
    trusted = changed_ns < now_ns - RACY_WINDOW_NS
    return (rel, st.st_size, changed_ns, st.st_ino, known_hash, trusted)


def locks_key(root: str, now_ns: int) -> list[tuple[str, int, int, int, str, bool]] | None:
    """Every lock file's stat signature; None if one is not a regular file. Only a lock
    inside the racy window (untrusted) is read, for its content hash; a trusted one's hash
    is left empty, since the fast path never reads it."""
    directory = os.path.join(root, STATE_DIR, LOCKS_DIR)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    entries = []
    for name in names:
        path = os.path.join(directory, name)
        entry = _stat_entry(path, name, "", now_ns, by_ctime=True)
        if entry is None:
            return None
        if not entry[5]:
            data = _read(path)
            if data is None:
                return None
            entry = (*entry[:4], content_hash(data), False)
        entries.append(entry)
    return entries


def key_before(root: str, with_locks: bool = True) -> dict[str, Any]:
    """What a snapshot is valid for, taken BEFORE the configuration and the locks are read
    for a plan: a file that changes after this point no longer matches what the snapshot
    records, so no snapshot can pair new files with decisions made from old ones. (The
    other files and directories the expansion read are only known once it is done: see
    expansion_key.) ``with_locks`` False: the configuration's part only (projectcache.py)."""
    taken_ns = _now_ns()
    return {"configs": config_key(root),
            "locks": locks_key(root, taken_ns) if with_locks else None, "taken_ns": taken_ns}


def dir_stamps(root: str, rels: list[str] | tuple[str, ...]
               ) -> list[tuple[str, int, int, int]]:
    """(relpath, mtime_ns, ctime_ns, ino) of each directory, (relpath, -1, -1, 0) for one
    that is missing or not a directory: adding, removing or renaming an entry moves its
    mtime, and moving the directory itself (or another one into its place) its ctime.
    A symlink a glob met (globs.walk stamps them: whether it matches is decided by its
    target) gives (relpath, -2, ctime_ns, 0) if it resolves to a regular file inside the
    project (as a glob requires), else (relpath, -3, ctime_ns, 0), ``ctime_ns`` being that
    of the directory its resolved path lies in (-1: missing), where the target comes or goes."""
    import stat

    out = []
    for rel in rels:
        path = os.path.join(root, rel)
        try:
            st = os.lstat(path)
        except OSError:
            out.append((rel, -1, -1, 0))
            continue
        if stat.S_ISDIR(st.st_mode):
            out.append((rel, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        elif stat.S_ISLNK(st.st_mode):
            target = os.path.realpath(path)
            try:
                changed_ns = os.stat(os.path.dirname(target)).st_ctime_ns
            except OSError:
                changed_ns = -1
            is_file = is_inside(target, root) and os.path.isfile(target)
            out.append((rel, -2 if is_file else -3, changed_ns, 0))
        else:
            out.append((rel, -1, -1, 0))
    return out


def expansion_key(root: str, project: Project, key: dict[str, Any]
                  ) -> tuple[list[tuple[str, str | None]], list[tuple[str, int, int, int]]] | None:
    """``configs`` with every other file the expansion read (Project.sources: a params file
    in YAML or JSON, a ``FILE:key`` file), and the stamps of every directory a glob walked
    (Project.glob_dirs); None when one of them changed (its ctime: an mtime can be set
    back) after key_before or so shortly before it that what the expansion read cannot be
    told from what is there now, or when a file key_before hashed was written since (even
    back to the same bytes: the expansion may have read what was there in between)."""
    cutoff = key["taken_ns"] - RACY_WINDOW_NS
    configs = list(key["configs"])
    keyed = {rel for rel, _ in configs}
    for rel, digest in configs:  # as key_before hashed them, and not written since
        path = os.path.join(root, rel)
        data = _read(path)  # read, then stat: a write in between shows in the ctime
        if (None if data is None else content_hash(data)) != digest:
            return None
        try:
            if data is not None and os.stat(path).st_ctime_ns >= key["taken_ns"]:
                return None  # written back to what was hashed, but loaded in between
        except OSError:
            return None
    for rel in getattr(project, "sources", ()):
        if rel in keyed:
            continue
        path = os.path.join(root, rel)
        data = _read(path)  # read, then stat: a write in between shows in the ctime
        try:
            changed_ns = os.stat(path).st_ctime_ns
        except OSError:
            return None
        if data is None or changed_ns >= cutoff:
            return None
        configs.append((rel, content_hash(data)))
        keyed.add(rel)
    stamps = dir_stamps(root, getattr(project, "glob_dirs", ()))
    if any(ctime_ns >= cutoff for _rel, _mtime_ns, ctime_ns, _ino in stamps):
        return None
    return configs, stamps


def load(root: str) -> dict[str, Any] | None:
    """The snapshot of this root if it is one this process can use, else None."""
    doc = read_sealed(snapshot_path(root))
    if not isinstance(doc, dict) or doc.get("magic") != MAGIC:
        return None
    if (doc.get("version"), doc.get("pivotbuild"), doc.get("python")) != (
            SNAPSHOT_VERSION, __version__, sys.implementation.cache_tag):
        return None
    if doc.get("root") != root or doc.get("env") != cache_env():
        return None
    return doc


def save(root: str, doc: dict[str, Any]) -> None:
    write_sealed(snapshot_path(root), doc)


def forget(root: str) -> None:
    """Remove the snapshot (the project changed in a way it cannot describe)."""
    unlink_quietly(snapshot_path(root))


# ---- written by the full path --------------------------------------------------------------


def build(pipeline: Pipeline, decisions: list[Decision], key: dict[str, Any]
          ) -> dict[str, Any] | None:
    """The snapshot of a project whose every stage was just found up to date (or frozen),
    or None where the project cannot be described by one. ``key``: key_before's answer,
    taken before the project was loaded."""
    from pivotbuild.plan import FROZEN, UP_TO_DATE

    root = str(pipeline.root)
    graph = pipeline.graph
    if len(decisions) != len(graph):
        return None
    if any(d.status not in (UP_TO_DATE, FROZEN) for d in decisions):
        return None
    now_ns = _now_ns()
    if key["locks"] is None:
        return None
    expansion = expansion_key(root, pipeline.project, key)
    if expansion is None:
        return None
    configs, glob_dirs = expansion
    memo = pipeline.state.get_files(
        [p for d in decisions for p in (*d.deps, *d.outs, *d.discovered)])
    stages = []
    plain_dirs: set[str] = set()
    position = {d.name: i for i, d in enumerate(decisions)}
    for decision in decisions:
        record = _stage_record(pipeline, decision, memo, now_ns, plain_dirs)
        if record is None:
            return None
        stages.append(record)
    edges = sorted((position[u], position[v]) for u, v in graph.edges())
    tracked = _tracked_part(pipeline, memo, now_ns, plain_dirs)
    if tracked is None:
        return None
    return {
        "magic": MAGIC, "version": SNAPSHOT_VERSION, "pivotbuild": __version__,
        "python": sys.implementation.cache_tag, "root": root,
        "cache_dir": str(pipeline.project.cache_dir),
        "env": cache_env(),
        "configs": configs, "glob_dirs": glob_dirs, "locks": key["locks"], "stages": stages,
        "edges": edges,
        "tracked": tracked,
    }


def _no_symlinks(root: str, path: str, is_dir: bool, plain_dirs: set[str]) -> bool:
    """Whether neither ``path`` (a directory if ``is_dir``; a file is checked by
    _stat_entry's lstat) nor any directory above it inside the root is a symlink.
    ``plain_dirs`` remembers the directories already checked (one lstat each)."""
    import stat

    parts = path.split("/")
    for depth in range(1, len(parts) + (1 if is_dir else 0)):
        prefix = "/".join(parts[:depth])
        if prefix in plain_dirs:
            continue
        try:
            if not stat.S_ISDIR(os.lstat(os.path.join(root, prefix)).st_mode):
                return False
        except OSError:
            return False
        plain_dirs.add(prefix)
    return True


def _tree_check(pipeline: Pipeline, path: str, digest: PathDigest
                ) -> tuple[str, str, list[tuple[str, int, int, bool]]] | None:
    """A directory's ``tree`` (see the module's docstring), or None when its memo does not
    list every one of its files (some were racy) or was not kept."""
    if digest.tree is None:
        return None
    memo, stamps = digest.tree
    if len(memo) < 24 or int.from_bytes(memo[8:16], sys.byteorder) != digest.nfiles:
        return None
    # The memo is keyed by the real path, which is ``path``: no symlinks lead here.
    memo_file = pipeline.state._tree_file(path)
    return (memo_file, content_hash(memo), stamps)


def _stage_record(pipeline: Pipeline, decision: Decision, memo: dict[str, Any], now_ns: int,
                  plain_dirs: set[str]) -> tuple[Any, ...] | None:
    from pivotbuild.plan import FROZEN

    root = str(pipeline.root)
    stage = decision.stage
    if decision.status == FROZEN:
        return (stage.name, stage.base, FROZEN, None, [], [], [])
    lock = decision.lock
    if lock is None:
        return None
    files: list[tuple[str, int, int, int, str, bool]] = []
    dirs: list[tuple[str, str, Any]] = []
    locked = {d.path: d.hash for d in lock.deps} | {o.path: o.hash for o in lock.outs}
    # discovered deps (plan.py) are stat-checked as deps are: in ``files`` (or ``dirs``)
    locked |= {d.path: d.hash for d in lock.discovered or ()}
    for path, digest in (*decision.deps.items(), *decision.outs.items(),
                         *decision.discovered.items()):
        full = os.path.join(root, path)
        if digest.hash is None or digest.hash != locked.get(path):
            return None
        if not _no_symlinks(root, path, digest.is_dir, plain_dirs):
            return None  # through a symlink: see the module's docstring
        if digest.is_dir:
            dirs.append((path, digest.hash, _tree_check(pipeline, path, digest)))
            continue
        entry = _stat_entry(full, path, digest.hash, now_ns)
        if entry is None:
            return None
        row = memo.get(path)
        # Trusted only where the memo vouches for this very stat (it stores no racy row).
        trusted = entry[5] and row is not None and tuple(row[:4]) == (*entry[1:4], digest.hash)
        files.append((*entry[:5], trusted))
    outs = [(o.path, o.hash, bool(o.cache)) for o in lock.outs]
    cached = {o.path: o.cache for o in stage.outs}  # pivot.toml decides, not the lock
    outs = [(p, h, cached.get(p, c)) for p, h, c in outs]
    return (stage.name, stage.base, decision.status, decision.input_hash, files, dirs, outs)


def listing_key(directory: str) -> tuple[str, ...] | None:
    """What of a directory's listing decides where tracked.find_records looks for records: its
    record files, its subdirectories (``name/``) and a venv marker; None if unlistable."""
    names = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(TRACK_SUFFIX) or entry.name == "pyvenv.cfg":
                    names.append(entry.name)
                elif entry.is_dir(follow_symlinks=False):
                    names.append(entry.name + "/")
    except OSError:
        return None
    return tuple(sorted(names))


def _tracked_part(pipeline: Pipeline, memo: dict[str, Any], now_ns: int,
                  plain_dirs: set[str]) -> dict[str, Any] | None:
    """The ``tracked`` entry (see the top), or None unless every tracked path is as its
    record says (and no record is invalid)."""
    from pivotbuild import tracked
    from pivotbuild.errors import PivotError

    root = str(pipeline.root)
    walked: list[str] = []
    listings: dict[str, tuple[str, ...]] = {}  # as listing_key gives them, from the same walk
    try:
        files = tracked.find_records(root, tracked.skipped_dirs(pipeline.project), walked,
                                     listings)
    except PivotError:
        return None
    dirs = []
    for rel in walked:
        full = root if rel == "." else os.path.join(root, rel)
        try:
            mtime_ns = os.lstat(full).st_ctime_ns  # after the listing: a later change moves it
        except OSError:
            return None
        dirs.append((rel, mtime_ns, mtime_ns < now_ns - RACY_WINDOW_NS, listings[rel]))
    pvts, records = [], []
    for file in files:
        entry = _stat_entry(os.path.join(root, file), file, "", now_ns,  # stat, then read
                            by_ctime=True)
        data = _read(os.path.join(root, file))
        if entry is None or data is None:
            return None
        try:
            records.append(tracked.parse_record(data, file))
        except PivotError:
            return None
        pvts.append((*entry[:4], content_hash(data), entry[5]))
    try:
        tracked.check_overlaps(records)
    except PivotError:
        return None
    digests = pipeline.hasher.hash_paths([os.path.join(root, r.path) for r in records])
    memo = {**memo, **pipeline.state.get_files([r.path for r in records])}
    data_files: list[tuple[str, int, int, int, str, bool]] = []
    tree: list[tuple[str, str]] = []
    for record, digest in zip(records, digests, strict=True):
        if digest.hash != record.hash or not _no_symlinks(root, record.path, digest.is_dir,
                                                          plain_dirs):
            return None
        if digest.is_dir:
            tree.append((record.path, record.hash))
            continue
        entry = _stat_entry(os.path.join(root, record.path), record.path, record.hash, now_ns)
        if entry is None:
            return None
        row = memo.get(record.path)
        trusted = entry[5] and row is not None and tuple(row[:4]) == (*entry[1:4], record.hash)
        data_files.append((*entry[:5], trusted))
    return {"dirs": dirs, "pvts": pvts, "paths": [r.path for r in records],
            "files": data_files, "tree": tree, "outs": [(r.path, r.hash, True) for r in records]}


def _now_ns() -> int:
    import time

    return time.time_ns()


def refresh(pipeline: Pipeline, decisions: list[Decision], all_stages: bool,
            key: dict[str, Any]) -> None:
    """After a full-path plan: leave a snapshot if everything is up to date, and remove a
    stale one otherwise (so that no fast path ever answers from it)."""
    root = str(pipeline.root)
    if not all_stages:
        return
    doc = build(pipeline, decisions, key)
    if doc is None:
        forget(root)
    else:
        save(root, doc)
