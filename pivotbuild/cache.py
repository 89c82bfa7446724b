"""The content-addressed store: objects named by their hash, stored, linked out, verified.

Layout, version 1 (``cache_dir`` may be shared by several projects and machines' remotes use
the same layout)::

    cache_dir/
      files/ab/cdef…            a file object: exactly the file's bytes; named by its hash
                                h[:2]/h[2:]; mode 0444, or 0555 when it was stored from an
                                executable file (so a hardlinked restore keeps its exec bit)
      files/ab/cdef….dir        a directory object: exactly the manifest bytes (manifest.py)
                                whose XXH3-128 + ".dir" is its name; mode 0444
      runs/ab/cdef….json        a run-cache entry, named by a stage run's input hash (below)
      */ab/.<name>.<rand>.tmp   a write in progress (atomic.py); never a valid object name

Objects are immutable and read-only. Each one is written under a temp name in its own
directory, checked (a file's copy is hashed again and must match its name), made read-only
and renamed into place, so an object is never half-visible and two processes storing the same
object at once both succeed (the second rename replaces identical bytes). Objects are regular
files, always: a symlinked output, or one whose inode another name shares, is copied in.
Before an object is placed in the workspace or relied on when storing, it is checked against
its name again (objcheck.py); one that does not match is removed and named. A directory's files
are stored before its ``.dir`` object: the presence of a ``.dir`` object implies the presence
of every file it lists.

Run-cache entry, schema 1 (JSON, ``indent=2, sort_keys=True`` plus a newline)::

    {"input_hash": "<32 hex>", "schema": 1,
     "outs": [{"cache": true, "hash": "<hash>", "path": "model", "size": 10, "nfiles": 2}, …]}

``outs`` are sorted by path; ``nfiles`` appears exactly for directory hashes. An entry that
does not follow this is ignored (treated as absent), never an error.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pivotbuild import hashing, manifest
from pivotbuild.atomic import (
    create_temp,
    fsync_dir,
    is_temp_name,
    sync_filesystem,
    temp_name,
    unlink_quietly,
    write_atomic,
    write_if_changed,
)
from pivotbuild.errors import OperationError, UsageError
from pivotbuild.hashing import get_backend
from pivotbuild.lock import is_safe_path
from pivotbuild.names import ANY_HASH_RE
from pivotbuild.objcheck import ObjectChecker, ObjectMemo, corrupt_text

LAYOUT_VERSION = 1
RUN_SCHEMA_VERSION = 1

CHECKOUT_METHODS = ("reflink", "hardlink", "copy")
FICLONE = 0x40049409  # _IOW(0x94, 9, int) from linux/fs.h

FILES_DIR = "files"
RUNS_DIR = "runs"
PROJECTS_DIR = "projects"  # one file per project using this cache: its root (see gc.py)
RUN_SUFFIX = ".json"
PULL_HINT = "run 'pivotbuild pull'"

# Files stored per round: each round is copied, verified in one hashing call and renamed
# before the next starts, which bounds the temp files left behind by an interruption.
_STORE_BATCH = 2048
# Up to this many new objects are made durable one fdatasync each; above it one syncfs of the
# cache's file system is cheaper.
_FSYNC_EACH_MAX = 32
# Below this many files linking out runs in the calling thread: a pool would cost more.
_PARALLEL_MIN = 64

# errno values meaning "this way of placing a file is not possible here", as opposed to a
# real failure (ENOSPC, EACCES on the target directory, ...) that no other method would fix.
_REFLINK_UNSUPPORTED = {
    errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS,
    errno.EBADF, errno.EPERM,
}
_HARDLINK_UNSUPPORTED = {
    errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EACCES,
}
_COPY_RANGE_UNSUPPORTED = {
    errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF,
    errno.EPERM,
}

T = TypeVar("T")
R = TypeVar("R")


class InvalidHashError(OperationError, ValueError):
    """A string that is not an object name; no path is ever built from one."""


class MissingObjectsError(OperationError):
    """Cache objects that are not there; ``missing`` is [(path shown, hash)]."""

    def __init__(self, message: str, missing: list[tuple[str, str]],
                 restored: list[str] | None = None) -> None:
        super().__init__(message)
        self.missing = missing
        self.restored = restored or []


class CorruptObjectsError(OperationError):
    """Cache objects found not to match their names when about to be used; each one was
    removed from the cache. ``corrupt`` and ``missing`` are [(path shown, hash)]."""

    def __init__(self, message: str, corrupt: list[tuple[str, str]],
                 missing: list[tuple[str, str]] | None = None,
                 restored: list[str] | None = None) -> None:
        super().__init__(message)
        self.corrupt = corrupt
        self.missing = missing or []
        self.restored = restored or []


def corrupt_message(corrupt: Sequence[tuple[str, str]]) -> str:
    """'o: cache object … is corrupt (…); removed from the cache' (a few named, then a
    count)."""
    first = "; ".join(f"{shown}: {corrupt_text(hash)}" for shown, hash in corrupt[:3])
    more = f" and {len(corrupt) - 3} more" if len(corrupt) > 3 else ""
    return f"{first}{more}; removed from the cache"


class DirDigest(Protocol):
    """What store_dir needs of a hashed directory (workspace.PathDigest fits)."""

    @property
    def hash(self) -> str | None: ...

    @property
    def manifest(self) -> bytes | None: ...


class _Unsupported(Exception):
    """A checkout method that cannot work here; the next one is tried."""


@dataclass(slots=True)
class _StoreJob:
    src: str  # the file to copy
    hash: str  # the hash it must have
    shown: str  # how errors name it
    executable: bool | None = None  # None: as the source file is
    link: bool = False  # may become the object itself (a hardlink), not a copy


def check_hash(value: Any, directory: bool | None = None) -> str:
    """Return ``value`` if it is an object name; InvalidHashError otherwise.

    ``directory`` True requires a ``.dir`` hash, False forbids one, None accepts both.
    """
    if not isinstance(value, str) or ANY_HASH_RE.fullmatch(value) is None:
        raise InvalidHashError(f"invalid object hash {value!r}")
    if directory is not None and value.endswith(manifest.DIR_SUFFIX) != directory:
        kind = "a directory" if directory else "a file"
        raise InvalidHashError(f"{value!r} is not {kind} hash")
    return value


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _copy_data(src_fd: int, dst_fd: int) -> None:
    """Copy everything from src_fd's position to dst_fd, in the kernel when it can."""
    if hasattr(os, "copy_file_range"):
        try:
            while os.copy_file_range(src_fd, dst_fd, 1 << 30):
                pass
            return
        except OSError as exc:
            if exc.errno not in _COPY_RANGE_UNSUPPORTED:
                raise
            # Both offsets moved together by whatever was copied: carry on from there.
    while chunk := os.read(src_fd, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst_fd, view):]


def _mode_for(executable: bool, writable: bool) -> int:
    if writable:
        return 0o755 if executable else 0o644
    return 0o555 if executable else 0o444


class Cache:
    """One cache directory (``files/`` and ``runs/``), see the layout at the top."""

    def __init__(self, cache_dir: Path, jobs: int = 0, durable: bool = True,
                 staging: Path | None = None, memo: ObjectMemo | None = None) -> None:
        """``durable``: flush objects to disk before they become visible (off: tests).
        ``staging``: a directory for files being placed in the workspace (see _temp_dir).
        ``memo``: where signatures of objects found good are kept (objcheck.py)."""
        self.cache_dir = Path(cache_dir)
        self.files_dir = self.cache_dir / FILES_DIR
        self.runs_dir = self.cache_dir / RUNS_DIR
        self.jobs = jobs
        self.checker = ObjectChecker(str(self.files_dir), memo, jobs)
        self.durable = durable
        self._reflink_store = True  # cleared once reflinking into the cache failed
        self._disabled: set[tuple[str, int]] = set()  # (method, st_dev) known not to work
        self.staging = staging
        self._staging_dev: int | None = None
        self._manifests: dict[str, tuple[manifest.ManifestEntry, ...]] = {}

    # ---- the projects that use this cache ----------------------------------------------------

    def register_project(self, root: Path) -> None:
        """Record that the project at ``root`` keeps locks referencing this cache, so that
        a gc run from any project sharing the cache honours them. Idempotent and cheap."""
        root = Path(root).resolve()
        entry = self.cache_dir / PROJECTS_DIR / (get_backend().hash_bytes(
            os.fsencode(root)) + ".json")
        if entry.exists():
            return
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            write_if_changed(entry, (json.dumps({"root": str(root)}) + "\n").encode())
        except OSError as exc:
            raise OperationError(f"{entry}: cannot register the project: {_why(exc)}") from None

    def registered_projects(self) -> list[Path]:
        """Roots of the registered projects that still exist; the others are unregistered."""
        roots = []
        directory = self.cache_dir / PROJECTS_DIR
        for entry in sorted(directory.glob("*.json")) if directory.is_dir() else []:
            try:
                root = Path(json.loads(entry.read_text())["root"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if (root / "pivot.toml").is_file():
                roots.append(root)
            else:
                unlink_quietly(entry)
        return roots

    # ---- names ------------------------------------------------------------------------------

    def object_path(self, hash: str) -> Path:
        check_hash(hash)
        return self.files_dir / hash[:2] / hash[2:]

    def run_path(self, input_hash: str) -> Path:
        check_hash(input_hash, directory=False)
        return self.runs_dir / input_hash[:2] / (input_hash[2:] + RUN_SUFFIX)

    def has(self, hash: str) -> bool:
        return self.object_path(hash).is_file()

    def _map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        if len(items) < 2:
            return [fn(item) for item in items]
        workers = self.jobs if self.jobs > 0 else min(32, (os.cpu_count() or 1) + 4)
        # A few chunks per worker, not one task per item: submitting 100,000 futures
        # costs more than the system calls they would wrap.
        size = max(1, -(-len(items) // (workers * 4)))
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            done = pool.map(lambda chunk: [fn(item) for item in chunk], chunks)
            return [result for chunk in done for result in chunk]

    # ---- storing ----------------------------------------------------------------------------

    def store_file(self, src: Path, hash: str, link: bool = False,
                   existing: list[str] | None = None, shown: str | None = None) -> None:
        """Put the file ``src`` into the cache as ``hash`` unless that object is there (and
        matches its name: a corrupt one is replaced).

        ``link``: the object may be a hardlink to ``src`` (no copy, no extra space; src
        becomes read-only, as a hardlink checkout would leave it), where the file system
        allows and ``src`` is a regular file no other name shares (a symlink, or a file
        hardlinked elsewhere, is copied: never chmod'ed, never linked into the cache);
        otherwise it is a reflink or a copy. Either way it is hashed again: if ``src`` no
        longer has ``hash`` (it changed after it was hashed), OperationError and nothing is
        stored. ``existing`` receives ``src`` if the object was there already; errors name
        ``shown`` (default: src).
        """
        check_hash(hash, directory=False)
        where = os.fspath(src) if shown is None else shown
        self._store([_StoreJob(os.fspath(src), hash, where, link=link)], existing)

    def store_files(self, items: Iterable[tuple[Path, str]]) -> int:
        """store_file for many files at once (parallel copies, one hashing call per batch).

        Returns how many objects were added.
        """
        jobs = []
        for src, hash in items:
            check_hash(hash, directory=False)
            jobs.append(_StoreJob(os.fspath(src), hash, os.fspath(src)))
        return self._store(jobs)

    def store_dir(self, src: Path, digest: DirDigest, link: bool = False,
                  existing: list[str] | None = None, shown: str | None = None) -> int:
        """Store every file a directory's manifest lists, then its ``.dir`` object, last.

        Returns how many objects were added (the ``.dir`` object included). ``link`` as
        for store_file; ``existing`` (if given) receives the paths of files whose object
        was already in the cache (not linked to it, then); errors name ``shown`` (default:
        src) and the file inside it.
        """
        base = os.fspath(src)
        shown = base if shown is None else shown
        dir_hash, data = digest.hash, digest.manifest
        if dir_hash is None or data is None:
            raise OperationError(f"{shown}: the directory was not hashed; nothing to store")
        check_hash(dir_hash, directory=True)
        if get_backend().hash_bytes(data) + manifest.DIR_SUFFIX != dir_hash:
            raise OperationError(f"{shown}: its manifest does not match its hash {dir_hash}")
        try:
            entries = manifest.parse(data)
        except manifest.ManifestError as exc:
            raise OperationError(f"{shown}: invalid directory manifest: {exc}") from None
        jobs = [
            _StoreJob(os.path.join(base, e.path), e.hash, os.path.join(shown, e.path),
                      e.executable, link)
            for e in entries
        ]
        added = self._store(jobs, existing)
        obj = self.object_path(dir_hash)
        try:
            if obj.read_bytes() == data:
                return added
        except OSError:
            pass  # absent (or unreadable, or corrupt: replaced below)
        try:
            obj.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(obj, data, mode=0o444)
        except OSError as exc:
            raise OperationError(f"{shown}: cannot store in the cache: {_why(exc)} ({obj})") \
                from None
        self.checker.forget(str(obj))
        return added + 1

    def _present(self, hashes: Collection[str]) -> set[str]:
        """Which of these objects the cache holds: by listing the shards concerned when
        there are many (a few hundred directory reads instead of one stat each)."""
        if len(hashes) < 512:
            return {h for h in hashes if self.has(h)}
        found: set[str] = set()
        for prefix in {h[:2] for h in hashes}:
            try:
                names = os.listdir(os.path.join(self.files_dir, prefix))
            except FileNotFoundError:
                continue
            found.update(prefix + name for name in names if not is_temp_name(name))
        return found & set(hashes)

    def _store(self, jobs: list[_StoreJob], existing: list[str] | None = None) -> int:
        """Store what is missing; the sources of objects already present go to existing.
        A present object that does not match its name is removed and stored again."""
        present = self._present({job.hash for job in jobs})
        if present:
            bad = self.checker.check((job.hash, job.shown) for job in jobs if job.hash in present)
            for _, hash in bad:
                self._discard(hash)
            present.difference_update(hash for _, hash in bad)
        todo: list[_StoreJob] = []
        seen: set[str] = set()
        for job in jobs:
            if job.hash in present:
                if existing is not None:
                    existing.append(job.src)
            elif job.hash not in seen:
                seen.add(job.hash)
                todo.append(job)
        linked = [job for job in todo if job.link]
        sole = self._map(_sole_name, linked) if len(linked) >= _PARALLEL_MIN else [
            _sole_name(job) for job in linked]
        to_copy = [job for job, ok in zip(linked, sole, strict=True) if not ok]
        to_copy += self._store_linked([job for job, ok in zip(linked, sole, strict=True) if ok])
        to_copy += [job for job in todo if not job.link]
        for start in range(0, len(to_copy), _STORE_BATCH):
            self._store_batch(to_copy[start : start + _STORE_BATCH])
        return len(todo)

    def _store_linked(self, jobs: list[_StoreJob]) -> list[_StoreJob]:
        """Make each source file its own object: checked against its hash first, then
        hardlinked into place and made read-only, in one call into the core (no copy,
        no extra space, no temp name: a link is atomic). Returns the jobs that must be
        copied instead (hardlinks refused here, or an exec bit the inode cannot carry)."""
        if not jobs:
            return []
        if self._reflink_store and self._probe_reflink(jobs[0]):
            # Reflinks beat hardlinks: the workspace file stays independent and writable.
            return jobs
        backend = get_backend()
        fallback: list[_StoreJob] = []
        dev = self._make_shards(jobs)
        if ("hardlink", dev) in self._disabled:
            return jobs
        # In batches, so that a million-file output never holds a million path buffers.
        for start in range(0, len(jobs), _STORE_BATCH * 8):
            batch = jobs[start : start + _STORE_BATCH * 8]
            items: list[tuple[str, str, int]] = []
            linked_jobs: list[_StoreJob] = []
            sigs: list[tuple[str, int, int, int]] = []
            digests = backend.hash_files([job.src for job in batch], self.jobs)
            for job, got in zip(batch, digests, strict=True):
                if got.hash is None:
                    raise OperationError(f"{job.shown}: cannot store in the cache: {got.error}")
                if got.hash != job.hash:
                    raise OperationError(
                        f"{job.shown}: the file changed while it was being stored in the cache "
                        f"(hashed as {job.hash}, now {got.hash}); nothing was stored for it")
                executable = bool(got.mode & stat.S_IXUSR)
                if job.executable is not None and job.executable != executable:
                    fallback.append(job)  # one inode has one mode
                    continue
                final = os.path.join(self.files_dir, job.hash[:2], job.hash[2:])
                items.append((job.src, final, _mode_for(executable, writable=False)))
                linked_jobs.append(job)
                sigs.append((final, got.size, got.mtime_ns, got.ino))
            results = backend.link_files(items, self.jobs)
            for job, sig, (status, err) in zip(linked_jobs, sigs, results, strict=True):
                if status == hashing.OK:
                    self.checker.trust(*sig)  # the file hashed just now is now the object
                if status == hashing.ERR_IO:
                    if err in _HARDLINK_UNSUPPORTED:
                        if err != errno.EMLINK:
                            self._disabled.add(("hardlink", dev))
                        fallback.append(job)
                        continue
                    raise OperationError(
                        f"{job.shown}: cannot store in the cache: {os.strerror(err)}")
        if self.durable and len(fallback) < len(jobs):
            sync_filesystem(self.files_dir)  # one flush for the whole batch
        return fallback

    def _store_batch(self, jobs: list[_StoreJob]) -> None:
        fsync_each = self.durable and len(jobs) <= _FSYNC_EACH_MAX

        def copy(job: _StoreJob) -> str | Exception:
            # Failures come back as values so that every temp made is known and removed.
            try:
                return self._copy_in(job, fsync_each)
            except Exception as exc:  # noqa: BLE001 - re-raised below, after cleanup
                return exc

        self._make_shards(jobs)
        results = self._map(copy, jobs)
        temps = [r for r in results if isinstance(r, str)]
        try:
            for result in results:
                if isinstance(result, Exception):
                    raise result
            digests = get_backend().hash_files(temps, self.jobs)
            for job, got in zip(jobs, digests, strict=True):  # (each temp: its object)
                if got.hash is None:
                    raise OperationError(
                        f"{job.shown}: cannot read back its copy in the cache: {got.error}"
                    )
                if got.hash != job.hash:
                    raise OperationError(
                        f"{job.shown}: the file changed while it was being stored in the cache "
                        f"(hashed as {job.hash}, now {got.hash}); nothing was stored for it"
                    )
            if self.durable and not fsync_each:
                sync_filesystem(self.files_dir)
            got_by_tmp = dict(zip(temps, digests, strict=True))
            shards = set()
            for job, tmp in zip(jobs, temps, strict=True):
                shard = os.path.join(self.files_dir, job.hash[:2])  # hash checked on entry
                final = os.path.join(shard, job.hash[2:])
                if os.path.isfile(final):  # stored meanwhile by someone else: same bytes
                    unlink_quietly(tmp)
                    continue
                try:
                    os.replace(tmp, final)
                except OSError as exc:
                    raise OperationError(f"{job.shown}: cannot store in the cache: "
                                         f"{_why(exc)} ({final})") from None
                self.checker.trust(final, got_by_tmp[tmp].size, got_by_tmp[tmp].mtime_ns,
                                   got_by_tmp[tmp].ino)
                shards.add(shard)
        except OSError as exc:  # the flush: not about one file in particular
            raise OperationError(
                f"{jobs[0].shown}: cannot store in the cache: {_why(exc)} "
                f"({exc.filename or self.files_dir})"
            ) from None
        finally:
            for tmp in temps:
                if os.path.lexists(tmp):
                    unlink_quietly(tmp)
        if self.durable:
            if len(shards) <= _FSYNC_EACH_MAX:
                for shard in shards:
                    fsync_dir(shard)
            else:
                sync_filesystem(self.files_dir)

    def _copy_in(self, job: _StoreJob, fsync: bool) -> str:
        """Copy job.src to a read-only temp beside its object; the temp's path."""
        try:
            src_fd = os.open(job.src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            raise OperationError(f"{job.shown}: cannot store in the cache: {_why(exc)}") from None
        tmp = None
        try:
            st = os.fstat(src_fd)
            if not stat.S_ISREG(st.st_mode):
                raise OperationError(f"{job.shown}: cannot store in the cache: not a regular file")
            shard = os.path.join(self.files_dir, job.hash[:2])  # created by _store_batch
            try:
                dst_fd, tmp = create_temp(shard, job.hash[2:], 0o600)
            except OSError as exc:
                raise OperationError(f"{job.shown}: cannot store in the cache: {_why(exc)} "
                                     f"({shard})") from None
            try:
                cloned = self._reflink_store and self._try_clone(src_fd, dst_fd)
                if not cloned:
                    _copy_data(src_fd, dst_fd)
                executable = job.executable
                if executable is None:
                    executable = bool(st.st_mode & stat.S_IXUSR)
                os.fchmod(dst_fd, _mode_for(executable, writable=False))
                if fsync:
                    os.fdatasync(dst_fd)
            finally:
                if dst_fd >= 0:
                    os.close(dst_fd)
            return tmp
        except OSError as exc:
            if tmp is not None:
                unlink_quietly(tmp)
            raise OperationError(f"{job.shown}: cannot store in the cache: {_why(exc)}") from None
        except BaseException:
            if tmp is not None:
                unlink_quietly(tmp)
            raise
        finally:
            os.close(src_fd)

    def _make_shards(self, jobs: Sequence[_StoreJob]) -> int:
        """Create the shard directories these jobs need; the cache's st_dev. A failure names
        the first output concerned, then the cache directory."""
        for prefix in sorted({job.hash[:2] for job in jobs}):
            shard = os.path.join(self.files_dir, prefix)
            try:
                os.makedirs(shard, exist_ok=True)
            except OSError as exc:
                job = next(j for j in jobs if j.hash[:2] == prefix)
                raise OperationError(f"{job.shown}: cannot store in the cache: {_why(exc)} "
                                     f"({exc.filename or shard})") from None
        try:
            return os.stat(self.files_dir).st_dev
        except OSError as exc:
            raise OperationError(f"{jobs[0].shown}: cannot store in the cache: {_why(exc)} "
                                 f"({self.files_dir})") from None

    def _discard(self, hash: str) -> None:
        """Remove an object found corrupt (a missing one is no error)."""
        path = self.object_path(hash)
        self.checker.forget(str(path))
        if hash.endswith(manifest.DIR_SUFFIX):
            self._manifests.pop(hash, None)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise OperationError(f"{path}: cannot remove the corrupt cache object: "
                                 f"{_why(exc)}") from None

    def _probe_reflink(self, job: _StoreJob) -> bool:
        """Can this cache reflink job.src? Tried on a scratch file, copying nothing."""
        shard = os.path.join(self.files_dir, job.hash[:2])
        tmp = None
        try:
            os.makedirs(shard, exist_ok=True)
            src_fd = os.open(job.src, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            try:
                dst_fd, tmp = create_temp(shard, job.hash[2:], 0o600)
                try:
                    return self._try_clone(src_fd, dst_fd)
                finally:
                    os.close(dst_fd)
            finally:
                os.close(src_fd)
        except OSError:
            return False
        finally:
            if tmp is not None:
                unlink_quietly(tmp)

    def _try_clone(self, src_fd: int, dst_fd: int) -> bool:
        try:
            fcntl.ioctl(dst_fd, FICLONE, src_fd)
            return True
        except OSError as exc:
            if exc.errno not in _REFLINK_UNSUPPORTED:
                raise
            self._reflink_store = False  # the same file systems will refuse again
            return False

    # ---- linking out ------------------------------------------------------------------------

    def link_out(
        self, hash: str, dest: Path, methods: Sequence[str], root: Path,
        executable: bool | None = None, shown: str | None = None,
    ) -> str:
        """Put the file object ``hash`` at ``dest`` with the first of ``methods`` that works.

        Returns the method used. ``dest`` is replaced through a temp file and a rename: a
        symlink there is replaced itself, never written through; its parent is created and must
        resolve inside ``root``. ``executable`` None gives the object's own exec bit. The
        object is checked against its name first: a corrupt one is removed from the cache
        (CorruptObjectsError), nothing is placed. ``shown``: how errors name dest.
        """
        check_hash(hash, directory=False)
        _check_methods(methods)
        obj = self.object_path(hash)
        where = str(dest) if shown is None else shown
        try:
            obj_st = os.stat(obj)
        except FileNotFoundError:
            raise MissingObjectsError(
                f"{where}: cache object {hash} is missing; {PULL_HINT}", [(where, hash)]
            ) from None
        except OSError as exc:
            raise OperationError(f"{obj}: cannot read the cache object: {_why(exc)}") from None
        bad = self.checker.check([(hash, where)], {hash: obj_st})
        if bad:
            self._discard(hash)
            raise CorruptObjectsError(corrupt_message(bad), bad)
        parent, dev = self._safe_parent(Path(dest), os.path.realpath(root), "the project")
        final = os.path.join(parent, Path(dest).name)
        return self._place(str(obj), obj_st, final, methods, executable, where, dev)

    def _safe_parent(self, dest: Path, bound: str, bound_name: str) -> tuple[str, int]:
        """dest's parent, resolved, created, and checked to lie inside ``bound``; (path, st_dev).

        The parent is resolved before anything is created, so a symlinked directory on the way
        cannot make us create directories outside.
        """
        if dest.name in ("", ".", ".."):
            raise OperationError(f"{dest}: not a file name to restore to")
        parent = os.path.realpath(dest.parent)
        if not _inside(parent, bound):
            raise OperationError(f"{dest}: refusing to write outside {bound_name} ({parent})")
        try:
            os.makedirs(parent, exist_ok=True)
            return parent, os.stat(parent).st_dev
        except OSError as exc:
            raise OperationError(f"{dest}: cannot create its directory: {_why(exc)}") from None

    def _place(
        self, obj: str, obj_st: os.stat_result, final: str, methods: Sequence[str],
        executable: bool | None, shown: str, dev: int,
    ) -> str:
        obj_exec = bool(obj_st.st_mode & stat.S_IXUSR)
        want_exec = obj_exec if executable is None else executable
        try:
            current = os.lstat(final)
        except FileNotFoundError:
            current = None
        except OSError as exc:
            raise OperationError(f"{shown}: {_why(exc)}") from None
        if current is not None and stat.S_ISDIR(current.st_mode):
            raise OperationError(f"{shown}: is a directory; cannot restore a file over it")
        problems: list[str] = []
        for method in methods:
            if (method, dev) in self._disabled:
                continue
            if method == "hardlink" and want_exec != obj_exec:
                # A shared inode has one mode: this object cannot carry the wanted exec bit.
                problems.append("hardlink: the cached object's exec bit differs")
                continue
            if (method == "hardlink" and current is not None
                    and (current.st_ino, current.st_dev) == (obj_st.st_ino, obj_st.st_dev)):
                return method  # already this very object
            try:
                if method == "reflink":
                    self._fill_temp(obj, final, want_exec, clone=True, dev=dev)
                elif method == "hardlink":
                    self._hardlink(obj, final, dev)
                else:
                    self._fill_temp(obj, final, want_exec, clone=False, dev=dev)
                return method
            except _Unsupported as exc:
                problems.append(f"{method}: {exc}")
            except OSError as exc:
                raise OperationError(f"{shown}: cannot restore from the cache: {_why(exc)}") \
                    from None
        detail = "; ".join(problems) or "every method is unavailable here"
        raise OperationError(f"{shown}: cannot restore from the cache with "
                             f"{', '.join(methods)} ({detail})")

    def _temp_dir(self, final_dir: str, dev: int) -> str:
        """Where to build a file that will be renamed into final_dir: the staging directory
        (the project's .pivotbuild/tmp) when it is on the same file system, so that a
        process killed between the two steps leaves no stray temp among the outputs."""
        if self.staging is None:
            return final_dir
        if self._staging_dev is None:
            try:
                os.makedirs(self.staging, exist_ok=True)
                self._staging_dev = os.stat(self.staging).st_dev
            except OSError:
                self._staging_dev = -1
        return str(self.staging) if self._staging_dev == dev else final_dir

    def _fill_temp(self, obj: str, final: str, executable: bool, clone: bool, dev: int) -> None:
        """Reflink (clone) or copy obj to a writable temp, then rename it over final."""
        directory, name = os.path.split(final)
        directory = self._temp_dir(directory, dev)
        src_fd = os.open(obj, os.O_RDONLY | os.O_CLOEXEC)
        tmp = None
        try:
            dst_fd, tmp = create_temp(directory, name, 0o600)
            try:
                if clone:
                    try:
                        fcntl.ioctl(dst_fd, FICLONE, src_fd)
                    except OSError as exc:
                        if exc.errno not in _REFLINK_UNSUPPORTED:
                            raise
                        self._disabled.add(("reflink", dev))
                        raise _Unsupported(_why(exc)) from None
                else:
                    _copy_data(src_fd, dst_fd)
                os.fchmod(dst_fd, _mode_for(executable, writable=True))
            finally:
                os.close(dst_fd)
            os.replace(tmp, final)
            tmp = None
        finally:
            os.close(src_fd)
            if tmp is not None:
                unlink_quietly(tmp)

    def _hardlink(self, obj: str, final: str, dev: int) -> None:
        directory, name = os.path.split(final)
        directory = self._temp_dir(directory, dev)
        for _ in range(100):
            tmp = os.path.join(directory, temp_name(name))
            try:
                os.link(obj, tmp)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in _HARDLINK_UNSUPPORTED:
                    raise
                if exc.errno != errno.EMLINK:  # EMLINK is about this object only
                    self._disabled.add(("hardlink", dev))
                raise _Unsupported(_why(exc)) from None
        else:
            raise FileExistsError(errno.EEXIST, "could not find a free temp name", directory)
        try:
            os.replace(tmp, final)
        finally:
            # rename() between two names of one inode succeeds doing nothing: tmp stays.
            if os.path.lexists(tmp):
                unlink_quietly(tmp)

    def read_manifest(self, hash: str) -> list[manifest.ManifestEntry]:
        """The entries of the ``.dir`` object ``hash``, checked against its name (once per
        process: an object never changes under its name)."""
        check_hash(hash, directory=True)
        known = self._manifests.get(hash)
        if known is None:
            known = self._manifests[hash] = tuple(self._read_manifest(hash))
        return list(known)

    def remember_manifest(self, hash: str, entries: list[manifest.ManifestEntry]) -> None:
        """Entries of a ``.dir`` object just verified and stored by the caller."""
        self._manifests[hash] = tuple(entries)

    def _read_manifest(self, hash: str) -> list[manifest.ManifestEntry]:
        obj = self.object_path(hash)
        try:
            data = obj.read_bytes()
        except FileNotFoundError:
            raise MissingObjectsError(
                f"cache object {hash} is missing; {PULL_HINT}", [("", hash)]
            ) from None
        except OSError as exc:
            raise OperationError(f"{obj}: cannot read the cache object: {_why(exc)}") from None
        if get_backend().hash_bytes(data) + manifest.DIR_SUFFIX != hash:
            raise CorruptObjectsError(f"{obj}: {corrupt_text(hash)}", [(str(obj), hash)])
        try:
            return manifest.parse(data)
        except manifest.ManifestError as exc:
            raise OperationError(f"{obj}: invalid directory manifest: {exc}") from None

    def checkout_dir(
        self, hash: str, dest: Path, methods: Sequence[str], root: Path,
        only: Collection[str] | None = None, shown: str | None = None,
    ) -> list[str]:
        """Restore the directory output ``hash`` at ``dest``; the relative paths restored.

        Files the manifest lists are (re)placed; other files in ``dest`` are left alone (the
        caller decides about them). ``only`` restricts the work to these relative paths. A
        symlink at ``dest`` is replaced by a real directory. Every object is checked against
        its name first. Files whose object is missing or corrupt are skipped and reported at
        the end in one MissingObjectsError or CorruptObjectsError (``.restored`` lists what
        was restored nonetheless); corrupt objects are removed, and with them the ``.dir``
        object, which no longer has all its files. ``shown``: how errors name dest.
        """
        check_hash(hash, directory=True)
        _check_methods(methods)
        dest = Path(dest)
        where = str(dest) if shown is None else shown
        entries = self.dir_entries(hash, where)
        if only is not None:
            wanted = set(only)
            entries = [e for e in entries if e.path in wanted]
        parent, dev = self._safe_parent(dest, os.path.realpath(root), "the project")
        top = os.path.join(parent, dest.name)
        try:
            if os.path.islink(top):
                os.unlink(top)  # replace the link itself: never restore through it
            os.makedirs(top, exist_ok=True)
        except OSError as exc:
            raise OperationError(f"{dest}: cannot create the directory: {_why(exc)}") from None

        present: list[tuple[manifest.ManifestEntry, str, os.stat_result]] = []
        missing: list[tuple[str, str]] = []
        files_dir = str(self.files_dir)
        for entry in entries:  # names already checked: the manifest matched its hash
            obj = os.path.join(files_dir, entry.hash[:2], entry.hash[2:])
            try:
                present.append((entry, obj, os.stat(obj)))
            except FileNotFoundError:
                missing.append((os.path.join(where, entry.path), entry.hash))
            except OSError as exc:
                raise OperationError(f"{obj}: cannot read the cache object: {_why(exc)}") \
                    from None
        corrupt = self._drop_corrupt(hash, where, present)

        self._make_dirs(top, dest, {os.path.dirname(e.path) for e, _, _ in present})

        def place(item: tuple[manifest.ManifestEntry, str, os.stat_result]) -> str:
            entry, obj, obj_st = item
            self._place(obj, obj_st, os.path.join(top, entry.path), methods, entry.executable,
                        os.path.join(where, entry.path), dev)
            return entry.path

        if len(present) < _PARALLEL_MIN:
            restored = [place(item) for item in present]
        else:
            # The first file settles which methods work on this file system; when that is
            # hardlink, the files not in the workspace yet are linked in one bulk call.
            restored = [place(present[0])]
            rest = present[1:]
            if self._first_method(methods, dev) == "hardlink":
                linked, rest = self._link_new(top, rest)
                restored += linked
            restored += self._map(place, rest)
        if corrupt:
            raise CorruptObjectsError(corrupt_message(corrupt), corrupt, missing, restored)
        if missing:
            names = ", ".join(path for path, _ in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise MissingObjectsError(
                f"{where}: {len(missing)} cache object(s) missing: {names}{more}; {PULL_HINT}",
                missing, restored,
            )
        return restored

    def dir_entries(self, hash: str, shown: str) -> list[manifest.ManifestEntry]:
        """read_manifest for placing ``hash`` at ``shown``: errors name ``shown``, and a
        corrupt ``.dir`` object is removed (CorruptObjectsError)."""
        try:
            return self.read_manifest(hash)
        except MissingObjectsError:
            raise MissingObjectsError(
                f"{shown}: cache object {hash} is missing; {PULL_HINT}", [(shown, hash)]
            ) from None
        except CorruptObjectsError:
            self._discard(hash)
            raise CorruptObjectsError(corrupt_message([(shown, hash)]), [(shown, hash)]) \
                from None

    def _drop_corrupt(self, hash: str, shown: str,
                      present: list[tuple[manifest.ManifestEntry, str, os.stat_result]]
                      ) -> list[tuple[str, str]]:
        """Check the objects of ``present`` (a directory's files, with their stat results)
        against their names; remove the corrupt ones from ``present`` and from the cache,
        and then the ``.dir`` object ``hash`` too. [(path shown, hash)] of the files
        concerned."""
        bad = self.checker.check(((e.hash, os.path.join(shown, e.path)) for e, _, _ in present),
                                 {e.hash: st for e, _, st in present})
        if not bad:
            return []
        bad_hashes = {h for _, h in bad}
        for digest in bad_hashes:
            self._discard(digest)
        self._discard(hash)
        corrupt = [(os.path.join(shown, e.path), e.hash) for e, _, _ in present
                   if e.hash in bad_hashes]
        present[:] = [item for item in present if item[0].hash not in bad_hashes]
        return corrupt

    def check_output(self, hash: str, shown: str, remove: bool = True) -> list[tuple[str, str]]:
        """Check the objects of an output (a file object, or a ``.dir`` object and every file
        it lists) against their names before they are used; [(path shown, hash)] of those
        that do not match, each removed from the cache when ``remove`` (a ``.dir`` object
        with it: it no longer has all its files). Missing objects are not reported here."""
        check_hash(hash)
        if not hash.endswith(manifest.DIR_SUFFIX):
            bad = self.checker.check([(hash, shown)])
            if bad and remove:
                self._discard(hash)
            return bad
        try:
            entries = self.read_manifest(hash)
        except MissingObjectsError:
            return []
        except CorruptObjectsError:
            if remove:
                self._discard(hash)
            return [(shown, hash)]
        bad = self.checker.check((e.hash, os.path.join(shown, e.path)) for e in entries)
        if bad and remove:
            for _, digest in bad:
                self._discard(digest)
            self._discard(hash)
        return bad

    def _first_method(self, methods: Sequence[str], dev: int) -> str | None:
        return next((m for m in methods if (m, dev) not in self._disabled), None)

    def _link_new(self, top: str, items: list[tuple[manifest.ManifestEntry, str, os.stat_result]]
                  ) -> tuple[list[str], list[tuple[manifest.ManifestEntry, str, os.stat_result]]]:
        """Hardlink the objects of ``items`` whose workspace path does not exist yet, in one
        bulk call: link() creates the name or fails, so it never writes through or over
        anything. (restored paths, the items left for _place: names that exist, objects
        whose exec bit differs from the entry's, links the file system refused.)"""
        linkable, rest = [], []
        for item in items:
            entry, _, obj_st = item
            same_exec = entry.executable == bool(obj_st.st_mode & stat.S_IXUSR)
            (linkable if same_exec else rest).append(item)
        results = get_backend().link_files(
            [(obj, os.path.join(top, entry.path), stat.S_IMODE(obj_st.st_mode))
             for entry, obj, obj_st in linkable], self.jobs)
        restored = []
        for item, (status, _) in zip(linkable, results, strict=True):
            if status == hashing.OK:
                restored.append(item[0].path)
            else:
                rest.append(item)
        return restored, rest

    def _make_dirs(self, top: str, dest: Path, rel_dirs: Iterable[str]) -> None:
        """Create the subdirectories below ``top``; each must resolve inside ``top``."""
        needed: set[str] = set()
        for rel in rel_dirs:
            while rel and rel not in needed:
                needed.add(rel)
                rel = os.path.dirname(rel)
        # A path sorts after each of its ancestors (a prefix sorts first), so parents go first.
        for rel in sorted(needed):
            path = os.path.join(top, rel)
            shown = os.path.join(str(dest), rel)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                try:
                    os.mkdir(path)
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise OperationError(f"{shown}: cannot create the directory: {_why(exc)}") \
                        from None
                continue
            except OSError as exc:
                raise OperationError(f"{shown}: {_why(exc)}") from None
            if stat.S_ISLNK(st.st_mode):
                real = os.path.realpath(path)
                if not _inside(real, top) or not os.path.isdir(real):
                    raise OperationError(
                        f"{shown}: is a symlink to {real}, outside {dest}; refusing to restore "
                        f"through it"
                    )
            elif not stat.S_ISDIR(st.st_mode):
                raise OperationError(f"{shown}: exists and is not a directory")

    # ---- checking and collecting ------------------------------------------------------------

    def verify(self, hash: str) -> bool:
        """True if the object is present and its content still matches its name."""
        obj = self.object_path(hash)
        if hash.endswith(manifest.DIR_SUFFIX):
            try:
                data = obj.read_bytes()
            except OSError:
                return False
            return get_backend().hash_bytes(data) + manifest.DIR_SUFFIX == hash
        if not obj.is_file():
            return False
        return get_backend().hash_files([str(obj)], 1)[0].hash == hash

    def _iter_names(self, top: Path, suffix: str) -> Iterator[str]:
        try:
            shards = sorted(os.listdir(top))
        except OSError:
            return
        for shard in shards:
            if len(shard) != 2:
                continue
            try:
                names = sorted(os.listdir(top / shard))
            except OSError:
                continue
            for name in names:
                if suffix:
                    if not name.endswith(suffix):
                        continue
                    name = name[: -len(suffix)]
                candidate = shard + name
                if ANY_HASH_RE.fullmatch(candidate) and (not suffix or len(candidate) == 32):
                    yield candidate

    def iter_objects(self) -> Iterator[str]:
        """Every object hash present (files and ``.dir``), sorted; temp files are skipped."""
        return self._iter_names(self.files_dir, "")

    def remove(self, hash: str) -> bool:
        """Delete an object; False if it was not there."""
        obj = self.object_path(hash)
        try:
            os.unlink(obj)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise OperationError(f"{obj}: cannot delete the cache object: {_why(exc)}") from None

    def remove_stale_temps(self, older_than_s: float = 24 * 3600) -> int:
        """Delete temp files left by interrupted writes; how many were deleted."""
        cutoff = time.time() - older_than_s
        count = 0
        for top in (self.files_dir, self.runs_dir):
            try:
                shards = os.listdir(top)
            except OSError:
                continue
            for shard in shards:
                try:
                    with os.scandir(top / shard) as it:
                        for entry in it:
                            if (is_temp_name(entry.name)
                                    and entry.stat(follow_symlinks=False).st_mtime < cutoff):
                                unlink_quietly(entry.path)
                                count += 1
                except OSError:
                    continue
        return count

    # ---- the run cache ----------------------------------------------------------------------

    def put_run(self, input_hash: str, outs: Iterable[Mapping[str, Any] | Any]) -> bool:
        """Record the outputs a run with ``input_hash`` produced; False if already recorded.

        Each out is ``{path, hash, size, cache, nfiles?}`` (extra keys, e.g. ``persist``, are
        dropped: they are not results of the run).
        """
        path = self.run_path(input_hash)
        entries = []
        for i, out in enumerate(outs):
            if not isinstance(out, Mapping) and hasattr(out, "to_dict"):
                out = out.to_dict()  # a lock.LockedOut
            item = {k: out[k] for k in ("path", "hash", "size", "cache", "nfiles") if k in out}
            item.setdefault("cache", True)
            if item.get("nfiles") is None:
                item.pop("nfiles", None)
            problem = _run_out_problem(item)
            if problem:
                raise OperationError(f"{path}: refusing to record outs[{i}]: {problem}")
            entries.append(item)
        entries.sort(key=lambda o: o["path"])
        doc = {"input_hash": input_hash, "outs": entries, "schema": RUN_SCHEMA_VERSION}
        data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("ascii")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return write_if_changed(path, data)
        except OSError as exc:
            raise OperationError(f"{path}: cannot write the run-cache entry: {_why(exc)}") \
                from None

    def get_run(self, input_hash: str) -> dict[str, Any] | None:
        """The run-cache entry for ``input_hash``; None if absent, unreadable or invalid."""
        try:
            path = self.run_path(input_hash)
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError):
            return None
        if (not isinstance(doc, dict) or set(doc) != {"input_hash", "outs", "schema"}
                or doc["schema"] != RUN_SCHEMA_VERSION or type(doc["schema"]) is not int
                or doc["input_hash"] != input_hash or not isinstance(doc["outs"], list)):
            return None
        paths = set()
        for out in doc["outs"]:
            if _run_out_problem(out) or out["path"] in paths:
                return None
            paths.add(out["path"])
        return doc

    def iter_runs(self) -> Iterator[str]:
        """Every input hash with a run-cache entry, sorted."""
        return self._iter_names(self.runs_dir, RUN_SUFFIX)

    def remove_run(self, input_hash: str) -> bool:
        path = self.run_path(input_hash)
        try:
            os.unlink(path)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise OperationError(f"{path}: cannot delete the run-cache entry: {_why(exc)}") \
                from None


def _sole_name(job: _StoreJob) -> bool:
    """May job.src itself become its object? Only a regular file (not a symlink) that no
    other name shares: linking another name's inode into the cache, and making it read-only,
    would change that other file, and let an edit of it corrupt the object."""
    try:
        st = os.lstat(job.src)
    except OSError:
        return True  # the hashing that follows names the problem
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1


def _check_methods(methods: Sequence[str]) -> None:
    if isinstance(methods, str) or not methods:
        raise UsageError(f"checkout methods must be a non-empty list of {CHECKOUT_METHODS}")
    for method in methods:
        if method not in CHECKOUT_METHODS:
            raise UsageError(f"unknown checkout method {method!r} (use {CHECKOUT_METHODS})")


def _run_out_problem(out: Any) -> str | None:
    """Why ``out`` is not a valid run-cache out, or None."""
    if not isinstance(out, dict):
        return "not an object"
    if not {"path", "hash", "size", "cache"} <= out.keys() or not out.keys() <= {
        "path", "hash", "size", "cache", "nfiles"
    }:
        return "keys must be path, hash, size, cache and (for a directory) nfiles"
    if not is_safe_path(out["path"]):
        return f"path is not project-relative: {out['path']!r}"
    digest = out["hash"]
    if not isinstance(digest, str) or ANY_HASH_RE.fullmatch(digest) is None:
        return f"hash is not a hash: {digest!r}"
    if type(out["size"]) is not int or out["size"] < 0:
        return "size is not a size"
    if not isinstance(out["cache"], bool):
        return "cache is not true or false"
    is_dir = digest.endswith(manifest.DIR_SUFFIX)
    nfiles = out.get("nfiles")
    if is_dir != ("nfiles" in out) or (is_dir and (type(nfiles) is not int or nfiles < 0)):
        return "nfiles must be a count, present exactly for a directory hash"
    return None


__all__ = [
    "CHECKOUT_METHODS", "FICLONE", "LAYOUT_VERSION", "RUN_SCHEMA_VERSION", "Cache",
    "CorruptObjectsError", "DirDigest", "InvalidHashError", "MissingObjectsError", "check_hash",
    "corrupt_message",
]
