"""Remotes: push, fetch and pull cache objects and run-cache entries, through fsspec.

A remote has the local cache's layout (see cache.py), objects stored verbatim::

    <url>/files/ab/cdef…          file objects and .dir manifests, named by their hash
    <url>/runs/ab/cdef….json      run-cache entries, named by the run's input hash

A URL is a local path (relative: to the project root), ``file://…``, ``s3://bucket/prefix``
(needs s3fs, the ``s3`` extra; endpoint_url / region / profile come from the remote's settings,
best kept in ``.pivotbuild/config.local.toml``, or from the usual AWS_* environment), or any
other fsspec URL. Local directories are served by plain system calls (the hot path of a
100,000-file push), everything else by the fsspec file system for the URL's protocol.

What is guaranteed:
- push writes each object atomically: on a local directory, an unnamed file (O_TMPFILE) in
  its shard directory that gets its name only once the file system is flushed (or, where there
  are no unnamed files, a temp name beside it, then a rename); through fsspec, a temp name and
  a rename on file systems, one PUT (atomic by itself) on object stores. A ``.dir`` manifest
  is sent only after every file it lists is on the remote, and a run-cache entry only after
  the objects it names, so their presence on a remote implies their content's. What the
  remote already has is learned by listing (the ``ab/`` shards concerned, or one ``find`` of
  ``files/``), never one request per object, and is not sent again. Nothing false leaves the
  cache: each object is checked against its name before it is sent (on the copy to a
  directory; through the cache's memo before an upload), and a run-cache entry whose objects
  could not be sent is not sent either. Which outputs are cached is read from pivot.toml,
  never from the lock (SPEC §8).
- fetch trusts nothing it downloads: each object is written to a temp beside its place in the
  cache, rehashed, and renamed into place only if its hash equals its name; a ``.dir`` manifest
  is parsed by manifest.parse (absolute paths, ``..`` and empty segments are rejected) before
  any of its entries is used, and stored only after its files; a run-cache entry is validated
  (JSON shape, well-formed hashes, safe paths) before it is stored. A rejected object is named
  in the report and never placed; the rest still transfers.
- an unusable remote (unreachable, bad credentials, missing bucket or directory) is one
  OperationError naming the remote and the cause, raised before anything is written locally.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import sys
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from pivotbuild import lock as lockfile
from pivotbuild import manifest
from pivotbuild.atomic import (
    create_temp,
    sync_filesystem,
    temp_name,
    unlink_quietly,
    write_atomic,
)
from pivotbuild.cache import (
    FILES_DIR,
    RUN_SCHEMA_VERSION,
    RUNS_DIR,
    Cache,
)
from pivotbuild.paths import is_inside
from pivotbuild.errors import OperationError
from pivotbuild.hashing import (
    COPY_CHECK,
    COPY_DIRECT,
    COPY_KEEP_EXEC,
    COPY_MISMATCH,
    COPY_NO_UNNAMED,
    COPY_UNNAMED,
    COPY_WRITEBACK,
    ERR_IO,
    ERR_NOT_REGULAR,
    OK,
    CopyResult,
    get_backend,
)
from pivotbuild.lock import Lock, LockProblem, is_safe_path
from pivotbuild.names import ANY_HASH_RE
from pivotbuild.plan import cached_paths
from pivotbuild.remote_store import (
    FsspecStore,
    LocalStore,
    Remote,
    cause,
    map_jobs,
    object_rel,
    open_remote,
    run_rel,
)

if TYPE_CHECKING:
    from pivotbuild.checkout import CheckoutReport
    from pivotbuild.pipeline import Pipeline

T = TypeVar("T")
R = TypeVar("R")

# Objects downloaded, then rehashed in one hashing call, then renamed, per round.
_BATCH = 1024
# The same for a local-directory remote, whose rounds are calls into the core: large enough
# that the file system flush before the copies are named is paid a few times, not per 1,000;
# copied in slices of _PROGRESS_STEP so that the progress bar moves.
_DIRECTORY_BATCH = 16384
_PROGRESS_STEP = 1024
_FD_MARGIN = 256  # open files kept free for everything but a round's unnamed copies
_RUN_ENTRY_MAX = 1 << 20  # bytes; a run-cache entry is a few hundred
_CORRUPT_LOCAL = ("the cached copy is corrupt (its content does not match its name); "
                  "'pivotbuild verify --cache' lists such objects")


def default_jobs() -> int:
    """Transfers wait on I/O far more than on the CPU: several per core."""
    return min(32, 4 * (os.cpu_count() or 1))


# ---- reports --------------------------------------------------------------------------------


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


@dataclass(slots=True)
class TransferReport:
    """What one push or fetch did."""

    remote: str
    direction: str  # "push" or "fetch"
    objects: int = 0  # objects sent or received
    bytes: int = 0
    runs: int = 0  # run-cache entries sent or received
    skipped: int = 0  # objects and entries already where they were going
    failed: list[tuple[str, str]] = field(default_factory=list)  # (what, why)

    @property
    def ok(self) -> bool:
        return not self.failed

    def fail(self, what: str, why: str) -> None:
        self.failed.append((what, " ".join(why.split())))

    def summary(self) -> str:
        verb, prep = ("sent", "to") if self.direction == "push" else ("received", "from")
        runs = f", {self.runs} run-cache entr{'y' if self.runs == 1 else 'ies'}" if self.runs \
            else ""
        return (f"{self.direction} {prep} '{self.remote}': {self.objects} object(s) "
                f"({_human(self.bytes)}) {verb}{runs}, {self.skipped} already there, "
                f"{len(self.failed)} failed")

    def to_dict(self) -> dict[str, Any]:
        return {"remote": self.remote, "direction": self.direction, "objects": self.objects,
                "bytes": self.bytes, "runs": self.runs, "skipped": self.skipped,
                "failed": [{"object": w, "error": e} for w, e in self.failed]}


class _Progress:
    """A rich progress bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, enabled: bool | None, label: str) -> None:
        if enabled is None:
            enabled = sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                                 console=Console(stderr=True), transient=True)
            self._task = self._bar.add_task(label, total=0)
            self._bar.start()

    def add(self, count: int) -> None:
        if self._bar is not None and count:
            total = self._bar.tasks[0].total or 0
            self._bar.update(self._task, total=total + count)

    def advance(self, count: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


# ---- what the locks reference ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutputRef:
    """A cached output a lock (or a run-cache entry) records."""

    stage: str
    path: str
    hash: str

    @property
    def shown(self) -> str:
        return f"{self.path} ({self.stage})"


def _read_locks(pipeline: Pipeline, names: Iterable[str], problems: list[str] | None
                ) -> dict[str, Lock]:
    locks: dict[str, Lock] = {}
    for name in names:
        found = pipeline.planner.read_lock(name)
        if isinstance(found, LockProblem):
            if problems is not None:
                problems.append(found.message)
        elif found is not None:
            locks[name] = found
    return locks


def _lock_refs(pipeline: Pipeline, locks: Mapping[str, Lock]) -> list[OutputRef]:
    """The outputs of these locks that pivot.toml caches (never the lock's own flag)."""
    planner = pipeline.planner
    return [OutputRef(name, out.path, out.hash)
            for name, lock in locks.items() for out in planner.cached_outs(name, lock)]


def _entry_refs(pipeline: Pipeline, stage: str, entry: Mapping[str, Any]) -> list[OutputRef]:
    """The outputs a run-cache entry has in the cache (its ``cache`` flag: stored by that
    run) that pivot.toml caches too; for a stage pivot.toml does not know, the entry's."""
    refs = [OutputRef(stage, out["path"], out["hash"]) for out in entry["outs"] if out["cache"]]
    if stage not in pipeline.graph:
        return refs
    cached = cached_paths(pipeline.graph.nodes[stage]["stage"])
    return [ref for ref in refs if ref.path in cached]


def run_entry_problem(doc: Any, input_hash: str) -> str | None:
    """Why ``doc`` is not a valid run-cache entry for ``input_hash`` (cache.py), or None."""
    if not isinstance(doc, dict) or set(doc) != {"input_hash", "outs", "schema"}:
        return "not an object with exactly input_hash, outs and schema"
    if type(doc["schema"]) is not int or doc["schema"] != RUN_SCHEMA_VERSION:
        return f"unsupported schema {doc['schema']!r}"
    if doc["input_hash"] != input_hash:
        return "its input_hash is not its name"
    if not isinstance(doc["outs"], list):
        return "outs is not a list"
    paths: set[str] = set()
    for i, out in enumerate(doc["outs"]):
        where = f"outs[{i}]"
        if not isinstance(out, dict) or not {"path", "hash", "size", "cache"} <= out.keys() \
                or not out.keys() <= {"path", "hash", "size", "cache", "nfiles"}:
            return f"{where}: keys must be path, hash, size, cache and (a directory) nfiles"
        if not is_safe_path(out["path"]) or out["path"] == ".":
            return f"{where}: unsafe path {out['path']!r}"
        if out["path"] in paths:
            return f"{where}: path {out['path']!r} repeated"
        paths.add(out["path"])
        digest = out["hash"]
        if not isinstance(digest, str) or ANY_HASH_RE.fullmatch(digest) is None:
            return f"{where}: hash is not a hash: {digest!r}"
        if type(out["size"]) is not int or out["size"] < 0:
            return f"{where}: size is not a size"
        if not isinstance(out["cache"], bool):
            return f"{where}: cache is not true or false"
        is_dir = digest.endswith(manifest.DIR_SUFFIX)
        if is_dir != ("nfiles" in out) or (
                is_dir and (type(out["nfiles"]) is not int or out["nfiles"] < 0)):
            return f"{where}: nfiles must be a count, present exactly for a directory hash"
    return None


def _parse_run_entry(data: bytes, input_hash: str) -> dict[str, Any]:
    """A run-cache entry from a remote, validated; OperationError saying why not."""
    if len(data) > _RUN_ENTRY_MAX:
        raise OperationError("too large to be a run-cache entry")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise OperationError("not valid JSON") from None
    problem = run_entry_problem(doc, input_hash)
    if problem:
        raise OperationError(problem)
    return doc




def _capture(fn: Callable[[T], R]) -> Callable[[T], R | Exception]:
    """fn, returning its exception instead of raising it (KeyboardInterrupt still raises)."""
    def wrapper(item: T) -> R | Exception:
        try:
            return fn(item)
        except Exception as exc:  # noqa: BLE001 - reported per object by the caller
            return exc
    return wrapper


def _local_present(cache: Cache, hashes: Collection[str]) -> set[str]:
    if len(hashes) > 4096:  # listing 256 shards beats that many stat calls
        return set(cache.iter_objects()) & set(hashes)
    return {h for h in hashes if cache.has(h)}


# ---- push -----------------------------------------------------------------------------------


def push(pipeline: Pipeline, names: list[str], remote: Remote, jobs: int = 0,
         run_cache: bool = False, progress: bool | None = None) -> TransferReport:
    """Upload the objects the locks of ``names`` reference (and with ``run_cache`` their
    run-cache entries) that the remote lacks. Files go before the ``.dir`` manifests listing
    them, objects before the run-cache entries naming them."""
    jobs = jobs or default_jobs()
    report = TransferReport(remote.name, "push")
    cache = pipeline.cache
    problems: list[str] = []
    locks = _read_locks(pipeline, names, problems)
    for message in problems:
        report.fail("lock", message)
    refs = _lock_refs(pipeline, locks)
    entries: dict[str, tuple[str, dict[str, Any]]] = {}  # input hash -> (stage, entry)
    if run_cache:
        for name, lock in locks.items():
            entry = cache.get_run(lock.input_hash)
            if entry is not None:
                entries[lock.input_hash] = (name, entry)
                refs.extend(_entry_refs(pipeline, name, entry))

    files: dict[str, str] = {}  # hash -> how it is shown
    dirs: dict[str, tuple[str, set[str]]] = {}  # .dir hash -> (shown, its files' hashes)
    unreadable: dict[str, tuple[str, str]] = {}  # .dir hash -> (shown, why it is not local)
    for ref in refs:
        if ref.hash in files or ref.hash in dirs or ref.hash in unreadable:
            continue
        if not ref.hash.endswith(manifest.DIR_SUFFIX):
            files[ref.hash] = ref.shown
            continue
        try:
            in_manifest = cache.read_manifest(ref.hash)
        except OperationError as exc:
            unreadable[ref.hash] = (ref.shown, str(exc))
            continue
        dirs[ref.hash] = (ref.shown, {e.hash for e in in_manifest})
        for e in in_manifest:
            files.setdefault(e.hash, f"{ref.path}/{e.path} ({ref.stage})")

    remote.check()
    on_remote = remote.present(FILES_DIR, [*files, *dirs, *unreadable])
    for digest, (shown, why) in unreadable.items():
        if digest in on_remote:  # not here, but the remote has it already: nothing to do
            report.skipped += 1
        else:
            report.fail(shown, f"manifest {digest} cannot be sent: {why}")
    todo = [h for h in files if h not in on_remote]
    report.skipped += len(files) - len(todo)
    if not isinstance(remote.store, LocalStore):  # (a copy to a directory finds out itself)
        local = _local_present(cache, todo)
        for digest in todo:
            if digest not in local:
                report.fail(files[digest], f"object {digest} is not in the local cache; "
                                           f"nothing sent for it")
        todo = [h for h in todo if h in local]
        # Uploaded as they are, so checked against their names first (through the memo).
        corrupt = {digest for _, digest in cache.checker.check((h, files[h]) for h in todo)}
        for digest in corrupt:
            report.fail(files[digest], f"object {digest} not sent: {_CORRUPT_LOCAL}")
        todo = [h for h in todo if h not in corrupt]
    bar = _Progress(progress, f"push → {remote.name}")
    try:
        bar.add(len(todo) + len(dirs) + len(entries))
        sent = _upload_all(cache, remote, todo, files, jobs, report, bar)
        remote.store.sync()
        have = on_remote | sent
        dir_todo = []
        for digest, (shown, listed) in dirs.items():
            if digest in on_remote:
                report.skipped += 1
                bar.advance()
            elif listed <= have:
                dir_todo.append(digest)
            else:
                report.fail(shown, f"manifest {digest} not sent: {len(listed - have)} of its "
                                   f"files are not on the remote")
                bar.advance()
        have |= _upload_all(cache, remote, dir_todo, {d: dirs[d][0] for d in dir_todo}, jobs,
                            report, bar)
        if entries:
            remote.store.sync()
            runs_there = remote.present(RUNS_DIR, list(entries))
            for input_hash, (stage, entry) in entries.items():
                bar.advance()
                if input_hash in runs_there:
                    report.skipped += 1
                    continue
                lacking = [r for r in _entry_refs(pipeline, stage, entry) if r.hash not in have]
                if lacking:
                    report.fail(f"run-cache entry {input_hash} ({stage})",
                                f"not sent: {lacking[0].shown} is not on the remote")
                    continue
                try:
                    remote.store.write(run_rel(input_hash),
                                       cache.run_path(input_hash).read_bytes())
                    report.runs += 1
                except Exception as exc:  # noqa: BLE001
                    report.fail(f"run-cache entry {input_hash} ({stage})", cause(exc))
            remote.store.sync()
    finally:
        bar.close()
    return report


def _upload_all(cache: Cache, remote: Remote, digests: list[str], shown: Mapping[str, str],
                jobs: int, report: TransferReport, bar: _Progress) -> set[str]:
    """Upload these objects -j wide; the set of those now on the remote."""
    store = remote.store
    if isinstance(store, LocalStore):
        return _copy_to_directory(cache, store, remote, digests, shown, jobs, report, bar)
    assert isinstance(store, FsspecStore)

    def one(digest: str) -> int:
        try:
            src = str(cache.object_path(digest))
            size = os.path.getsize(src)
            store.upload(src, object_rel(digest))
            return size
        finally:
            bar.advance()

    sent: set[str] = set()
    for digest, result in zip(digests, map_jobs(_capture(one), digests, jobs), strict=True):
        if isinstance(result, Exception):
            report.fail(shown[digest], f"object {digest} not sent: {cause(result)}")
        else:
            sent.add(digest)
            report.objects += 1
            report.bytes += result
    return sent


def _copy_to_directory(cache: Cache, store: LocalStore, remote: Remote, digests: list[str],
                       shown: Mapping[str, str], jobs: int, report: TransferReport,
                       bar: _Progress) -> set[str]:
    """Upload to a local-directory remote in rounds through the compiled core. Each object
    is copied with its content checked against its name on the way (a corrupted cache
    object is never sent), written around the page cache where the file system allows
    (this machine does not read it back), into an unnamed file in its shard directory
    (or, where the file system has none, a temp name); the remote's file system is then
    flushed, and only then does each copy get its name. A kill leaves no temp behind.
    A round is flushed and named in the background while the next one is copied."""
    files_dir = str(cache.files_dir)
    sent: set[str] = set()
    round_size = _DIRECTORY_BATCH
    if store.unnamed_files:  # two rounds' copies are open at once
        round_size = _raise_open_files(2 * _DIRECTORY_BATCH) // 2
        if round_size < _PROGRESS_STEP:  # too few descriptors to hold a round open
            store.unnamed_files = False
            round_size = _DIRECTORY_BATCH
    flushing: _Naming | None = None
    try:
        for start in range(0, len(digests), round_size):
            batch = digests[start : start + round_size]
            ready: dict[str, _Copy] = {}
            try:
                for part_start in range(0, len(batch), _PROGRESS_STEP):
                    part = batch[part_start : part_start + _PROGRESS_STEP]
                    _upload_part(files_dir, store, remote, part, shown, jobs, report, ready)
                    bar.advance(len(part))
            except BaseException:
                _drop_uploads(ready.values())
                raise
            if flushing is not None:
                sent |= flushing.finish(report, shown)
            flushing = _Naming(store, ready, jobs)
        if flushing is not None:
            sent |= flushing.finish(report, shown)
    finally:
        if flushing is not None:  # an error: let the round in flight end as it would
            flushing.join()
    return sent


class _Copy(NamedTuple):
    """A copy on its way to a local-directory remote, not named yet."""

    handle: int | str  # the unnamed file's open fd, or the temp's path
    target: str  # the object's path on the remote
    size: int


class _Naming(threading.Thread):
    """Flush the remote's file system, then give one round of copies their names: on a
    thread of its own, so that the next round is copied meanwhile."""

    def __init__(self, store: LocalStore, ready: dict[str, _Copy], jobs: int) -> None:
        super().__init__(daemon=True)
        self.store, self.ready, self.jobs = store, ready, jobs
        self.outcomes: dict[str, tuple[int, int]] = {}
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._name_all()
        except BaseException as exc:  # noqa: BLE001 (raised again by finish)
            self.error = exc

    def _name_all(self) -> None:
        ready = self.ready
        try:
            if ready:
                self.store.sync()  # the content is durable before any name points at it
        except BaseException:
            _drop_uploads(ready.values())
            raise
        backend = get_backend()
        unnamed: list[tuple[str, int, str]] = []  # (digest, fd, target)
        temps: list[tuple[str, str, str]] = []  # (digest, temp, target)
        for digest, (handle, target, _) in ready.items():
            if isinstance(handle, int):
                unnamed.append((digest, handle, target))
            else:
                temps.append((digest, handle, target))
        published = backend.publish_files([(fd, t) for _, fd, t in unnamed], self.jobs)
        moved = backend.move_files([(tmp, t) for _, tmp, t in temps], self.jobs)
        self.outcomes = dict(zip([d for d, _, _ in unnamed] + [d for d, _, _ in temps],
                                 published + moved, strict=True))
        for digest, tmp, _ in temps:
            if self.outcomes[digest][0] == ERR_IO:
                unlink_quietly(tmp)

    def finish(self, report: TransferReport, shown: Mapping[str, str]) -> set[str]:
        """Wait for the round; report it; the objects now on the remote."""
        self.join()
        if self.error is not None:
            raise self.error
        sent = set()
        for digest, (status, err) in self.outcomes.items():
            if status == ERR_IO:
                report.fail(shown[digest], f"object {digest} not sent: {os.strerror(err)}")
                continue
            sent.add(digest)
            report.objects += 1
            report.bytes += self.ready[digest].size
        return sent


def _upload_part(files_dir: str, store: LocalStore, remote: Remote, part: list[str],
                 shown: Mapping[str, str], jobs: int, report: TransferReport,
                 ready: dict[str, _Copy]) -> None:
    """Copy one slice of a round (_copy_to_directory): each good copy goes into ``ready``,
    each failure into the report."""
    unnamed = store.unnamed_files
    flags = COPY_CHECK | COPY_KEEP_EXEC | COPY_DIRECT | (COPY_UNNAMED if unnamed else 0)
    copies = []
    targets = []
    for digest in part:
        target = os.path.join(store.root, object_rel(digest))
        targets.append(target)
        directory, name = os.path.split(target)
        try:
            store.ensure_dir(directory)
        except OSError as exc:
            raise remote.error(exc, "cannot create a directory") from None
        copies.append((os.path.join(files_dir, digest[:2], digest[2:]),
                       target if unnamed else os.path.join(directory, temp_name(name)),
                       0o444, flags, digest[:32]))
    again = []
    results = get_backend().copy_files(copies, jobs)
    for digest, target, (src, dst, *_), result in zip(part, targets, copies, results,
                                                      strict=True):
        if result.status == OK:
            ready[digest] = _Copy(result.fd if unnamed else dst, target, result.size)
        elif result.status == COPY_NO_UNNAMED:
            again.append(digest)
        elif result.status == COPY_MISMATCH:
            report.fail(shown[digest], f"object {digest} not sent: {_CORRUPT_LOCAL}")
        elif result.status == ERR_IO and result.err == errno.ENOENT and not os.path.exists(src):
            report.fail(shown[digest], f"object {digest} not sent: it is not in the "
                                       f"local cache")
        else:
            report.fail(shown[digest], f"object {digest} not sent: {result.error}")
    if again:  # this file system has no unnamed files: temp names from now on
        store.unnamed_files = False
        _upload_part(files_dir, store, remote, again, shown, jobs, report, ready)


def _drop_uploads(copies: Iterable[_Copy]) -> None:
    """Give up copies not yet named: close the unnamed ones (they vanish), remove temps."""
    for handle, _, _ in copies:
        if isinstance(handle, int):
            with contextlib.suppress(OSError):
                os.close(handle)
        else:
            unlink_quietly(handle)


def _raise_open_files(want: int) -> int:
    """How many copies a round may hold open (unnamed files stay open until the flush):
    ``want``, the soft limit on open files raised toward the hard one if it is lower,
    less a margin for everything else the process has open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = want + _FD_MARGIN
    if soft != resource.RLIM_INFINITY and soft < need:
        raised = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY:
        return want
    return max(0, min(want, soft - _FD_MARGIN))


def _copy_files(copies: Sequence[tuple[str, str, int, int, str | None]], jobs: int,
                bar: _Progress) -> list[CopyResult]:
    """backend.copy_files in slices, advancing the progress bar after each."""
    results: list[CopyResult] = []
    for start in range(0, len(copies), _PROGRESS_STEP):
        part = copies[start : start + _PROGRESS_STEP]
        results += get_backend().copy_files(part, jobs)
        bar.advance(len(part))
    return results


# ---- fetch ----------------------------------------------------------------------------------


class _Fetcher:
    """Downloads into the local cache, trusting nothing it receives."""

    def __init__(self, cache: Cache, remote: Remote, jobs: int, report: TransferReport,
                 bar: _Progress) -> None:
        self.cache = cache
        self.remote = remote
        self.jobs = jobs
        self.report = report
        self.bar = bar

    def objects(self, refs: Iterable[OutputRef]) -> set[str]:
        """Fetch what the local cache lacks of these outputs' objects (a directory's files
        first, its manifest last); the hashes of the outputs complete in the cache after."""
        files: dict[str, str] = {}
        dirs: dict[str, str] = {}
        for ref in refs:
            target = dirs if ref.hash.endswith(manifest.DIR_SUFFIX) else files
            target.setdefault(ref.hash, ref.shown)
        executable: set[str] = set()
        listed: dict[str, set[str]] = {}
        pending: dict[str, str] = {}  # .dir hash -> verified temp, placed after its files
        try:
            need_dirs = []
            for digest, shown in dirs.items():
                if self.cache.has(digest):
                    try:
                        entries = self.cache.read_manifest(digest)
                    except OperationError as exc:
                        self.report.fail(shown, str(exc))
                        continue
                    listed[digest] = {e.hash for e in entries}
                    for e in entries:
                        files.setdefault(e.hash, _inner(shown, e.path))
                        if e.executable:
                            executable.add(e.hash)
                else:
                    need_dirs.append(digest)
            self.bar.add(len(need_dirs))
            parsed: dict[str, list[manifest.ManifestEntry]] = {}
            for digest, (tmp, entries) in self._download(need_dirs, dirs, executable).items():
                pending[digest] = tmp
                parsed[digest] = entries
                listed[digest] = {e.hash for e in entries}
                for e in entries:
                    files.setdefault(e.hash, _inner(dirs[digest], e.path))
                    if e.executable:
                        executable.add(e.hash)
            have = _local_present(self.cache, files)
            need = [h for h in files if h not in have]
            self.report.skipped += len(files) - len(need) + len(dirs) - len(need_dirs)
            self.bar.add(len(need))
            step = _DIRECTORY_BATCH if isinstance(self.remote.store, LocalStore) else _BATCH
            for start in range(0, len(need), step):
                batch = need[start : start + step]
                got = self._download(batch, files, executable)
                self._place(got)
                have.update(got)
            complete = {h for h in files if h in have}
            for digest, members in listed.items():
                if digest not in pending:
                    if members <= have:
                        complete.add(digest)
                    continue
                if members <= have:
                    self._place({digest: (pending.pop(digest), [])})
                    self.cache.remember_manifest(digest, parsed[digest])
                    complete.add(digest)
                else:
                    unlink_quietly(pending.pop(digest))
                    lacking = len(members - have)
                    self.report.fail(dirs[digest], f"manifest {digest} not stored: {lacking} of "
                                                   f"its files could not be fetched")
            return complete
        finally:
            for tmp in pending.values():
                unlink_quietly(tmp)

    def _download(self, digests: list[str], shown: Mapping[str, str], executable: set[str]
                  ) -> dict[str, tuple[str, list[manifest.ManifestEntry]]]:
        """Download into temps beside their places and verify them; {hash: (temp, manifest
        entries for a .dir)} for the good ones. Bad ones are reported and deleted."""
        if not digests:
            return {}
        for shard in sorted({d[:2] for d in digests}):
            try:
                os.makedirs(self.cache.files_dir / shard, exist_ok=True)
            except OSError as exc:
                raise OperationError(f"{self.cache.files_dir}: cannot create the cache: "
                                     f"{exc.strerror or exc}") from None

        store = self.remote.store
        if isinstance(store, LocalStore):
            results = self._copy_from_directory(store, digests, executable)
        else:
            assert isinstance(store, FsspecStore)
            results = map_jobs(_capture(self._get_one(store, executable)), digests, self.jobs)
        temps: dict[str, tuple[str, int, str | None]] = {}  # hash -> (temp, size, its hash)
        good: dict[str, tuple[str, list[manifest.ManifestEntry]]] = {}
        try:
            for digest, result in zip(digests, results, strict=True):
                if isinstance(result, Exception):
                    why = cause(result)
                    if isinstance(result, FileNotFoundError):
                        why = f"not on remote '{self.remote.name}'"
                    self.report.fail(shown[digest], f"object {digest}: {why}")
                else:
                    temps[digest] = result
            unhashed = [d for d, (_, _, got) in temps.items()
                        if got is None and not d.endswith(manifest.DIR_SUFFIX)]
            hashed = get_backend().hash_files([temps[d][0] for d in unhashed], self.jobs)
            actual = {d: got for d, (_, _, got) in temps.items() if got is not None}
            actual.update((d, h.hash) for d, h in zip(unhashed, hashed, strict=True))
            for digest, (tmp, size, _) in temps.items():
                problem = None
                entries: list[manifest.ManifestEntry] = []
                if not digest.endswith(manifest.DIR_SUFFIX):
                    if actual[digest] != digest:
                        problem = f"its content hashes to {actual[digest]}"
                else:
                    problem, entries = _check_manifest(tmp, digest)
                if problem:
                    self.report.fail(shown[digest], f"object {digest} from remote "
                                     f"'{self.remote.name}' rejected: {problem}; not placed "
                                     f"in the cache")
                    continue
                good[digest] = (tmp, entries)
                self.report.bytes += size
            return good
        finally:
            for digest, (tmp, *_) in temps.items():
                if digest not in good:
                    unlink_quietly(tmp)

    def _get_one(self, store: FsspecStore, executable: set[str]
                 ) -> Callable[[str], tuple[str, int, None]]:
        """Download one object through the store's API into a temp beside its place."""
        def one(digest: str) -> tuple[str, int, None]:
            try:
                fd, tmp = create_temp(self.cache.files_dir / digest[:2], digest[2:], 0o600)
                os.close(fd)
                try:
                    remote_exec = store.download(object_rel(digest), tmp)
                    os.chmod(tmp, 0o555 if digest in executable or remote_exec else 0o444)
                    return tmp, os.path.getsize(tmp), None
                except BaseException:
                    unlink_quietly(tmp)
                    raise
            finally:
                self.bar.advance()
        return one

    def _copy_from_directory(self, store: LocalStore, digests: list[str], executable: set[str]
                             ) -> list[tuple[str, int, str | None] | Exception]:
        """Copy from a local-directory remote through the compiled core, hashing each object
        on the way: (temp, size, the content's hash) or the error, per digest."""
        source = store.root
        files_dir = str(self.cache.files_dir)
        flags = COPY_KEEP_EXEC | (COPY_WRITEBACK if self.cache.durable else 0)
        copies = [(os.path.join(source, object_rel(d)),
                   os.path.join(files_dir, d[:2], temp_name(d[2:])),
                   0o555 if d in executable else 0o444, flags, None) for d in digests]
        results: list[tuple[str, int, str | None] | Exception] = []
        for (src, tmp, *_), got in zip(copies, _copy_files(copies, self.jobs, self.bar),
                                       strict=True):
            if got.status == OK:
                # a .dir's name is its content's hash with the suffix: compared as a manifest
                results.append((tmp, got.size, got.hash))
            elif got.status == ERR_NOT_REGULAR:
                results.append(OperationError("not a regular file on the remote"))
            elif got.err == errno.ENOENT:
                results.append(FileNotFoundError(got.err, os.strerror(got.err), src))
            else:
                results.append(OSError(got.err, os.strerror(got.err), src))
        return results

    def _place(self, items: Mapping[str, tuple[str, Any]]) -> None:
        """Rename verified temps to their objects' names (an object stored meanwhile is
        kept: same bytes, by its name), after flushing them where the cache is durable."""
        if not items:
            return
        files_dir = str(self.cache.files_dir)
        moves = [(tmp, os.path.join(files_dir, d[:2], d[2:])) for d, (tmp, _) in items.items()]
        try:
            if self.cache.durable:
                sync_filesystem(self.cache.files_dir)
            results = get_backend().move_files(moves, self.jobs)
        except BaseException as exc:
            for tmp, _ in moves:
                unlink_quietly(tmp)
            if isinstance(exc, OSError):
                raise OperationError(f"{self.cache.files_dir}: cannot store in the cache: "
                                     f"{exc.strerror or exc}") from None
            raise
        # Each temp is now its object, or was removed (the object was there), or failed.
        problem = None
        for (tmp, final), (status, err) in zip(moves, results, strict=True):
            if status == ERR_IO:
                unlink_quietly(tmp)
                problem = problem or f"{final}: cannot store in the cache: {os.strerror(err)}"
                continue
            self.report.objects += 1
            if status == OK and not final.endswith(manifest.DIR_SUFFIX):
                # Hashed on its way in by this process: placing it need not read it again.
                with contextlib.suppress(OSError):
                    st = os.stat(final)
                    self.cache.checker.trust(final, st.st_size, st.st_mtime_ns, st.st_ino)
        if problem:
            raise OperationError(problem)

    def run_entry(self, input_hash: str, stage: str) -> dict[str, Any] | None:
        """The remote's run-cache entry for ``input_hash``, validated; None if it has none
        (or a bad one: reported)."""
        try:
            data = self.remote.store.read(run_rel(input_hash))
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            self.report.fail(f"run-cache entry {input_hash} ({stage})", cause(exc))
            return None
        try:
            return _parse_run_entry(data, input_hash)
        except OperationError as exc:
            self.report.fail(f"run-cache entry {input_hash} ({stage})",
                             f"from remote '{self.remote.name}' rejected: {exc}")
            return None

    def store_run(self, input_hash: str, entry: Mapping[str, Any]) -> None:
        data = (json.dumps(entry, indent=2, sort_keys=True) + "\n").encode("ascii")
        path = self.cache.run_path(input_hash)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data, durable=self.cache.durable)
        except OSError as exc:
            raise OperationError(f"{path}: cannot write the run-cache entry: "
                                 f"{exc.strerror or exc}") from None
        self.report.runs += 1


def _inner(shown: str, rel: str) -> str:
    """'model (train)' and 'w' -> 'model/w (train)'."""
    path, sep, stage = shown.partition(" (")
    return f"{path}/{rel}{sep}{stage}"


def _check_manifest(tmp: str, digest: str) -> tuple[str | None, list[manifest.ManifestEntry]]:
    try:
        with open(tmp, "rb") as f:
            data = f.read()
    except OSError as exc:
        return f"cannot read it back: {exc.strerror or exc}", []
    if get_backend().hash_bytes(data) + manifest.DIR_SUFFIX != digest:
        return "its content does not match its name", []
    try:
        return None, manifest.parse(data)
    except manifest.ManifestError as exc:
        return f"invalid directory manifest: {exc}", []


def fetch(pipeline: Pipeline, names: list[str], remote: Remote, jobs: int = 0,
          run_cache: bool = False, progress: bool | None = None) -> TransferReport:
    """Download what the local cache lacks of the objects the locks of ``names`` reference
    (and with ``run_cache`` their run-cache entries); every object rehashed before it is
    placed."""
    from pivotbuild.paths import ensure_state_dir

    jobs = jobs or default_jobs()
    report = TransferReport(remote.name, "fetch")
    problems: list[str] = []
    locks = _read_locks(pipeline, names, problems)
    for message in problems:
        report.fail("lock", message)
    remote.check()
    ensure_state_dir(pipeline.root)
    bar = _Progress(progress, f"fetch ← {remote.name}")
    fetcher = _Fetcher(pipeline.cache, remote, jobs, report, bar)
    try:
        refs = _lock_refs(pipeline, locks)
        entries: dict[str, tuple[str, dict[str, Any]]] = {}
        if run_cache:
            for name, lock in locks.items():
                if pipeline.cache.get_run(lock.input_hash) is not None:
                    report.skipped += 1
                    continue
                entry = fetcher.run_entry(lock.input_hash, name)
                if entry is not None:
                    entries[lock.input_hash] = (name, entry)
                    refs.extend(_entry_refs(pipeline, name, entry))
        complete = fetcher.objects(refs)
        for input_hash, (name, entry) in entries.items():
            if all(r.hash in complete for r in _entry_refs(pipeline, name, entry)):
                fetcher.store_run(input_hash, entry)
    finally:
        bar.close()
    return report


def pull(pipeline: Pipeline, names: list[str], remote: Remote, jobs: int = 0,
         run_cache: bool = False, progress: bool | None = None
         ) -> tuple[TransferReport, CheckoutReport]:
    """fetch, then checkout of the same stages (what could not be fetched is reported by
    both: the checkout names the outputs left missing)."""
    from pivotbuild.checkout import Checkout

    report = fetch(pipeline, names, remote, jobs, run_cache, progress)
    return report, Checkout(pipeline).run(names)


# ---- repro --pull ---------------------------------------------------------------------------


def prefetch_for_repro(pipeline: Pipeline, names: list[str], remote: Remote, jobs: int = 0,
                       run_cache: bool = True, progress: bool | None = None) -> TransferReport:
    """Fetch, before planning, what ``repro`` of ``names`` can restore instead of running.

    First every object the stages' locks reference. Then, in topological order, each stage's
    current input hash and the run-cache entry for it (local or remote) with the objects it
    names. A stage whose deps are outputs of an upstream stage gets its input hash from what
    the upstream will produce: the locked outputs when its lock matches its inputs, else those
    of the run-cache entry found for it. Those are read from the (fetched) cache, the
    workspace is not touched; a dep inside a directory output is hashed from that output's
    manifest. A stage whose inputs cannot be known so (below an upstream that will really
    run) is left to the planner: RemoteRunCache looks it up once its input hash is known.
    """
    from pivotbuild.paths import ensure_state_dir

    jobs = jobs or default_jobs()
    report = TransferReport(remote.name, "fetch")
    locks = _read_locks(pipeline, names, None)
    remote.check()
    ensure_state_dir(pipeline.root)
    bar = _Progress(progress, f"fetch ← {remote.name}")
    fetcher = _Fetcher(pipeline.cache, remote, jobs, report, bar)
    try:
        fetcher.objects(_lock_refs(pipeline, locks))
        if run_cache:
            _Predictor(pipeline, fetcher, locks).walk(names)
    finally:
        bar.close()
    return report


def _bring_run(pipeline: Pipeline, fetcher: _Fetcher, input_hash: str, stage: str
               ) -> dict[str, Any] | None:
    """The run-cache entry for ``input_hash`` (the local one, else the remote's) with every
    object it names in the local cache; stored locally last. None if that cannot be had.

    Nothing is taken on trust: objects fetched are checked as they arrive, and those
    already in the local cache are checked against their names first (through the memo):
    a corrupt one is removed, and so fetched again."""
    cache = pipeline.cache
    entry = cache.get_run(input_hash)
    fetched = entry is None
    if entry is None:
        entry = fetcher.run_entry(input_hash, stage)
        if entry is None:
            return None
    refs = _entry_refs(pipeline, stage, entry)
    for ref in refs:
        cache.check_output(ref.hash, ref.shown)
    complete = fetcher.objects(refs)
    if not all(r.hash in complete for r in refs):
        return None
    if fetched:
        fetcher.store_run(input_hash, entry)
    return entry


class RemoteRunCache:
    """A run-cache miss handler for ``repro --pull``: called by the planner with an input hash
    the local run cache lacks (typically a stage whose upstream just ran), it fetches the
    remote's entry for it and the objects that entry names, so that the planner, looking
    again, finds them locally. Safe to call from the executor's threads (one at a time)."""

    def __init__(self, pipeline: Pipeline, remote: Remote, report: TransferReport,
                 jobs: int = 0,
                 on_failure: Callable[[str, str], None] | None = None) -> None:
        """Failures go into ``report``, and each to ``on_failure`` as it happens."""
        self.pipeline = pipeline
        self.cache = pipeline.cache
        self.remote = remote
        self.report = report
        self.jobs = jobs or default_jobs()
        self.on_failure = on_failure
        self._lock = threading.Lock()

    def __call__(self, input_hash: str, stage: str = "") -> bool:
        """True if an entry for ``input_hash`` and its objects are now in the local cache."""
        with self._lock:
            seen = len(self.report.failed)
            fetcher = _Fetcher(self.cache, self.remote, self.jobs, self.report,
                               _Progress(False, ""))
            try:
                found = _bring_run(self.pipeline, fetcher, input_hash, stage or "?") is not None
            except OperationError as exc:  # e.g. the remote went away: the stage just runs
                self.report.fail(f"run-cache entry {input_hash} ({stage or '?'})", str(exc))
                found = False
            if self.on_failure is not None:
                for what, why in self.report.failed[seen:]:
                    self.on_failure(what, why)
            return found


class _Predictor:
    """Works out stages' input hashes in topological order without running anything."""

    def __init__(self, pipeline: Pipeline, fetcher: _Fetcher, locks: Mapping[str, Lock]) -> None:
        self.p = pipeline
        self.fetcher = fetcher
        self.locks = locks
        self.outs: dict[str, str] = {}  # out path -> the hash it will have after repro
        self.unknown: set[str] = set()  # out paths that only a run can tell

    def walk(self, names: Iterable[str]) -> None:
        for name in names:
            stage = self.p.graph.nodes[name]["stage"]
            outs = self._stage(name, stage)
            for out in stage.outs:
                if outs is not None and out.path in outs:
                    self.outs[out.path] = outs[out.path]
                else:
                    self.unknown.add(out.path)

    def _stage(self, name: str, stage: Any) -> dict[str, str] | None:
        deps: list[tuple[str, str]] = []
        for dep in stage.deps:
            digest = self._dep(dep)
            if digest is None:
                return None
            deps.append((dep, digest))
        input_hash = lockfile.input_hash(stage.cmd, stage.param_values, deps,
                                         [o.path for o in stage.outs], stage.wdir)
        lock = self.locks.get(name)
        if lock is not None and lock.input_hash == input_hash:
            return {o.path: o.hash for o in lock.outs}
        entry = _bring_run(self.p, self.fetcher, input_hash, name)
        return None if entry is None else {o["path"]: o["hash"] for o in entry["outs"]}

    def _workspace(self, path: str) -> str | None:
        try:
            digest = self.p.planner.digest(path)
        except OperationError:
            return None
        return None if digest.missing else digest.hash

    def _dep(self, dep: str) -> str | None:
        """The hash ``dep`` will have when its upstream stages are done; None: unknown."""
        related = [p for p in (*self.outs, *self.unknown) if is_inside(dep, p) or
                   is_inside(p, dep)]
        if any(p in self.unknown for p in related):
            return None
        if all(self._workspace(p) == self.outs[p] for p in related):
            return self._workspace(dep)  # the workspace already is what the upstream makes
        if len(related) != 1 or not is_inside(dep, related[0]):
            return None  # a dep holding an upstream output and other files: left to the run
        out = related[0]
        if dep == out:
            return self.outs[out]
        if not self.outs[out].endswith(manifest.DIR_SUFFIX):
            return None
        try:
            entries = self.p.cache.read_manifest(self.outs[out])
        except OperationError:
            return None
        rel = dep[len(out) + 1:]
        inner = []
        for e in entries:
            if e.path == rel:
                return e.hash
            if e.path.startswith(rel + "/"):
                inner.append(manifest.ManifestEntry(e.path[len(rel) + 1:], e.hash, e.size,
                                                    e.executable))
        if not inner:
            return None
        return get_backend().hash_bytes(manifest.build(inner)) + manifest.DIR_SUFFIX


# ---- status --remote ------------------------------------------------------------------------

IN_SYNC, MISSING_ON_REMOTE, ONLY_ON_REMOTE, MISSING = (
    "in-sync", "missing-on-remote", "only-on-remote", "missing")


@dataclass(slots=True)
class OutputStatus:
    stage: str
    path: str
    hash: str
    status: str  # one of the four above
    objects: int  # how many objects the output is made of (known ones)
    not_on_remote: int
    not_local: int

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "path": self.path, "hash": self.hash,
                "status": self.status, "objects": self.objects,
                "not_on_remote": self.not_on_remote, "not_local": self.not_local}


@dataclass(slots=True)
class RemoteStatus:
    remote: str
    outputs: list[OutputStatus] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def with_status(self, status: str) -> list[OutputStatus]:
        return [o for o in self.outputs if o.status == status]

    def to_dict(self) -> dict[str, Any]:
        return {"remote": self.remote, "outputs": [o.to_dict() for o in self.outputs],
                "problems": list(self.problems)}


def status_remote(pipeline: Pipeline, names: list[str], remote: Remote) -> RemoteStatus:
    """For each cached output the locks of ``names`` record: is it complete on the remote, in
    the local cache, both, or neither. A directory's manifest is read from the local cache, or
    from the remote (validated, not stored) when only the remote has it."""
    result = RemoteStatus(remote.name)
    locks = _read_locks(pipeline, names, result.problems)
    refs = _lock_refs(pipeline, locks)
    remote.check()
    cache = pipeline.cache
    members: dict[str, set[str] | None] = {}  # .dir hash -> its files' hashes (None: unknown)
    for ref in refs:
        if not ref.hash.endswith(manifest.DIR_SUFFIX) or ref.hash in members:
            continue
        members[ref.hash] = None
        data = None
        if cache.has(ref.hash):
            try:
                members[ref.hash] = {e.hash for e in cache.read_manifest(ref.hash)}
                continue
            except OperationError as exc:
                result.problems.append(str(exc))
        try:
            data = remote.store.read(object_rel(ref.hash))
        except FileNotFoundError:
            continue
        except Exception as exc:  # noqa: BLE001
            raise remote.error(exc, "reading a manifest") from None
        if get_backend().hash_bytes(data) + manifest.DIR_SUFFIX != ref.hash:
            result.problems.append(f"{ref.shown}: manifest {ref.hash} on remote "
                                   f"'{remote.name}' does not match its name")
            continue
        try:
            members[ref.hash] = {e.hash for e in manifest.parse(data)}
        except manifest.ManifestError as exc:
            result.problems.append(f"{ref.shown}: manifest {ref.hash} on remote "
                                   f"'{remote.name}' is invalid: {exc}")
    everything = {r.hash for r in refs}
    for listed in members.values():
        everything |= listed or set()
    on_remote = remote.present(FILES_DIR, everything)
    local = _local_present(cache, everything)
    for ref in refs:
        objects = {ref.hash}
        complete = True
        if ref.hash in members:
            listed = members[ref.hash]
            if listed is None:
                complete = False
            else:
                objects |= listed
        not_remote = len(objects - on_remote)
        not_local = len(objects - local)
        remote_ok = complete and not not_remote
        local_ok = complete and not not_local
        status = (IN_SYNC if remote_ok and local_ok else MISSING_ON_REMOTE if local_ok
                  else ONLY_ON_REMOTE if remote_ok else MISSING)
        result.outputs.append(OutputStatus(ref.stage, ref.path, ref.hash, status, len(objects),
                                           not_remote, not_local))
    return result


__all__ = [
    "IN_SYNC", "MISSING", "MISSING_ON_REMOTE", "ONLY_ON_REMOTE", "OutputRef", "OutputStatus",
    "Remote", "RemoteRunCache", "RemoteStatus", "TransferReport", "default_jobs", "fetch",
    "object_rel", "open_remote", "prefetch_for_repro", "pull", "push", "run_entry_problem", "run_rel",
    "status_remote",
]
