"""The content-addressed objects of a cache: has, store, read, check, remove, iterate.

Layout, version 1 (``files/`` of a cache directory; a remote keeps the same layout)::

    files/ab/cdef…            a file object: exactly the file's bytes; named by its hash
                              (names.object_name); mode 0444, or 0555 when it was stored from an
                              executable file (so a hardlinked restore keeps its exec bit)
    files/ab/cdef….dir        a directory object: exactly the manifest bytes (manifest.py)
                              whose XXH3-128 + ".dir" is its name (names.dir_hash); mode 0444
    files/ab/.<name>.<rand>.tmp   a write in progress (atomic.py); never a valid object name

Objects are immutable and read-only. Each one is written under a temp name in its own
directory, checked (a file's copy is hashed again and must match its name), made read-only
and renamed into place, so an object is never half-visible and two processes storing the same
object at once both succeed (the second rename replaces identical bytes). Objects are regular
files, always: a symlinked output, or one whose inode another name shares, is copied in.
Before an object is relied on when storing (or placed in the workspace: place.py), it is
checked against its name again (check.py); one that does not match is removed and named. A
directory's files are stored before its ``.dir`` object: the presence of a ``.dir`` object
implies the presence of every file it lists, and a ``.dir`` object found to lack one of them
is removed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pivotbuild import hashing, manifest
from pivotbuild.atomic import (
    create_temp,
    fsync_dir,
    is_temp_name,
    sync_filesystem,
    unlink_quietly,
    write_atomic,
)
from pivotbuild.errors import OperationError
from pivotbuild.hashing import get_backend
from pivotbuild.names import check_hash, dir_hash, is_dir_hash, object_name, shard_of
from pivotbuild.parallel import map_parallel
from pivotbuild.store import fileio
from pivotbuild.store.check import ObjectChecker, ObjectMemo, corrupt_text
from pivotbuild.store.shards import iter_hashes, remove_stale_temps

LAYOUT_VERSION = 1
FILES_DIR = "files"
PULL_HINT = "run 'pivotbuild pull'"

# Files stored per round: each round is copied, verified in one hashing call and renamed
# before the next starts, which bounds the temp files left behind by an interruption.
_STORE_BATCH = 2048
# Up to this many new objects are made durable one fdatasync each; above it one syncfs of the
# cache's file system is cheaper.
_FSYNC_EACH_MAX = 32
# Below this many files work runs in the calling thread: a pool would cost more.
PARALLEL_MIN = 64
# Below this many hashes, `present` asks for each object; above it, it lists the shards
# concerned (a few hundred directory reads instead of one stat each).
_LISTING_MIN = 512


class MissingObjectsError(OperationError):
    """Cache objects that are not there; ``missing`` is [(path shown, hash)]."""

    def __init__(self, message: str, missing: list[tuple[str, str]],
                 restored: list[str] | None = None) -> None:
        super().__init__(message)
        self.missing = missing
        self.restored = restored or []

    @classmethod
    def one(cls, shown: str, hash: str) -> MissingObjectsError:
        """The object ``hash`` of the output ``shown`` is missing."""
        return cls(f"{shown}: cache object {hash} is missing; {PULL_HINT}", [(shown, hash)])


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
    """What store_dir needs of a hashed directory (hasher.PathDigest fits)."""

    @property
    def hash(self) -> str | None: ...

    @property
    def manifest(self) -> bytes | None: ...


@dataclass(slots=True)
class _StoreJob:
    src: str  # the file to copy
    hash: str  # the hash it must have
    shown: str  # how errors name it
    executable: bool | None = None  # None: as the source file is
    link: bool = False  # may become the object itself (a hardlink), not a copy


class ObjectStore:
    """The objects of one cache directory (its ``files/``), see the layout at the top."""

    def __init__(self, files_dir: Path, jobs: int = 0, durable: bool = True,
                 memo: ObjectMemo | None = None) -> None:
        """``durable``: flush objects to disk before they become visible (off: tests).
        ``memo``: where signatures of objects found good are kept (check.py)."""
        self.files_dir = Path(files_dir)
        self._files = str(self.files_dir)
        self.jobs = jobs
        self.durable = durable
        self.checker = ObjectChecker(self._files, memo, jobs)
        self._reflink_store = True  # cleared once reflinking into the cache failed
        self._hardlink_off: set[int] = set()  # st_dev where hardlinking into it failed
        self._manifests: dict[str, tuple[manifest.ManifestEntry, ...]] = {}

    # ---- names and presence -----------------------------------------------------------------

    def object_path(self, hash: str) -> Path:
        """Where the object ``hash`` lives (InvalidHashError for what is not a hash)."""
        return Path(self.object_file(hash))

    def object_file(self, hash: str) -> str:
        """object_path as a string, for loops over many objects (a Path costs more)."""
        return os.path.join(self._files, object_name(hash))

    def has(self, hash: str) -> bool:
        return os.path.isfile(self.object_file(hash))

    def present(self, hashes: Collection[str]) -> set[str]:
        """Which of these objects the cache holds: by listing the shards concerned when there
        are many (a few hundred directory reads instead of one stat each)."""
        if len(hashes) < _LISTING_MIN:
            return {h for h in hashes if self.has(h)}
        found: set[str] = set()
        for prefix in {shard_of(h) for h in hashes}:
            try:
                names = os.listdir(os.path.join(self.files_dir, prefix))
            except FileNotFoundError:
                continue
            found.update(prefix + name for name in names if not is_temp_name(name))
        return found & set(hashes)

    def iter_objects(self) -> Iterator[str]:
        """Every object hash present (files and ``.dir``), sorted; temp files are skipped."""
        return iter_hashes(self.files_dir)

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
        digest_hash, data = digest.hash, digest.manifest
        if digest_hash is None or data is None:
            raise OperationError(f"{shown}: the directory was not hashed; nothing to store")
        check_hash(digest_hash, directory=True)
        if dir_hash(data) != digest_hash:
            raise OperationError(f"{shown}: its manifest does not match its hash {digest_hash}")
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
        obj = self.object_path(digest_hash)
        try:
            if obj.read_bytes() == data:
                return added
        except OSError:
            pass  # absent (or unreadable, or corrupt: replaced below)
        try:
            obj.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(obj, data, mode=0o444)
        except OSError as exc:
            raise OperationError(f"{shown}: cannot store in the cache: {fileio.why(exc)} "
                                 f"({obj})") from None
        self.checker.forget(str(obj))
        return added + 1

    def _store(self, jobs: list[_StoreJob], existing: list[str] | None = None) -> int:
        """Store what is missing; the sources of objects already present go to existing.
        A present object that does not match its name is removed and stored again."""
        present = self.present({job.hash for job in jobs})
        if present:
            bad = self.checker.check((job.hash, job.shown) for job in jobs if job.hash in present)
            for _, hash in bad:
                self.remove(hash, corrupt=True)
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
        sole = map_parallel(_sole_name, linked, self.jobs if len(linked) >= PARALLEL_MIN else 1)
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
        if dev in self._hardlink_off:
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
                    raise OperationError(_changed(job, got.hash))
                executable = bool(got.mode & stat.S_IXUSR)
                if job.executable is not None and job.executable != executable:
                    fallback.append(job)  # one inode has one mode
                    continue
                final = self.object_file(job.hash)
                items.append((job.src, final, fileio.mode_for(executable, writable=False)))
                linked_jobs.append(job)
                sigs.append((final, got.size, got.mtime_ns, got.ino))
            results = backend.link_files(items, self.jobs)
            for job, sig, (status, err) in zip(linked_jobs, sigs, results, strict=True):
                if status == hashing.OK:
                    self.checker.trust(*sig)  # the file hashed just now is now the object
                if status == hashing.ERR_IO:
                    if err in fileio.HARDLINK_UNSUPPORTED:
                        if err != errno.EMLINK:
                            self._hardlink_off.add(dev)
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
        results = map_parallel(copy, jobs, self.jobs)
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
                    raise OperationError(_changed(job, got.hash))
            if self.durable and not fsync_each:
                sync_filesystem(self.files_dir)
            got_by_tmp = dict(zip(temps, digests, strict=True))
            shards = set()
            for job, tmp in zip(jobs, temps, strict=True):
                final = self.object_file(job.hash)
                if os.path.isfile(final):  # stored meanwhile by someone else: same bytes
                    unlink_quietly(tmp)
                    continue
                try:
                    os.replace(tmp, final)
                except OSError as exc:
                    raise OperationError(f"{job.shown}: cannot store in the cache: "
                                         f"{fileio.why(exc)} ({final})") from None
                got = got_by_tmp[tmp]
                self.checker.trust(final, got.size, got.mtime_ns, got.ino)
                shards.add(os.path.dirname(final))
        except OSError as exc:  # the flush: not about one file in particular
            raise OperationError(
                f"{jobs[0].shown}: cannot store in the cache: {fileio.why(exc)} "
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
            raise OperationError(f"{job.shown}: cannot store in the cache: "
                                 f"{fileio.why(exc)}") from None
        tmp = None
        try:
            st = os.fstat(src_fd)
            if not stat.S_ISREG(st.st_mode):
                raise OperationError(f"{job.shown}: cannot store in the cache: not a regular file")
            shard, name = os.path.split(self.object_file(job.hash))  # created by _store_batch
            try:
                dst_fd, tmp = create_temp(shard, name, 0o600)
            except OSError as exc:
                raise OperationError(f"{job.shown}: cannot store in the cache: "
                                     f"{fileio.why(exc)} ({shard})") from None
            try:
                if not (self._reflink_store and self._try_clone(src_fd, dst_fd)):
                    fileio.copy_data(src_fd, dst_fd)
                executable = job.executable
                if executable is None:
                    executable = bool(st.st_mode & stat.S_IXUSR)
                os.fchmod(dst_fd, fileio.mode_for(executable, writable=False))
                if fsync:
                    os.fdatasync(dst_fd)
            finally:
                os.close(dst_fd)
            return tmp
        except OSError as exc:
            if tmp is not None:
                unlink_quietly(tmp)
            raise OperationError(f"{job.shown}: cannot store in the cache: "
                                 f"{fileio.why(exc)}") from None
        except BaseException:
            if tmp is not None:
                unlink_quietly(tmp)
            raise
        finally:
            os.close(src_fd)

    def _make_shards(self, jobs: Sequence[_StoreJob]) -> int:
        """Create the shard directories these jobs need; the cache's st_dev. A failure names
        the first output concerned, then the cache directory."""
        for prefix in sorted({shard_of(job.hash) for job in jobs}):
            shard = os.path.join(self.files_dir, prefix)
            try:
                os.makedirs(shard, exist_ok=True)
            except OSError as exc:
                job = next(j for j in jobs if shard_of(j.hash) == prefix)
                raise OperationError(f"{job.shown}: cannot store in the cache: "
                                     f"{fileio.why(exc)} ({exc.filename or shard})") from None
        try:
            return os.stat(self.files_dir).st_dev
        except OSError as exc:
            raise OperationError(f"{jobs[0].shown}: cannot store in the cache: "
                                 f"{fileio.why(exc)} ({self.files_dir})") from None

    def _probe_reflink(self, job: _StoreJob) -> bool:
        """Can this cache reflink job.src? Tried on a scratch file, copying nothing."""
        shard, name = os.path.split(self.object_file(job.hash))
        tmp = None
        try:
            os.makedirs(shard, exist_ok=True)
            src_fd = os.open(job.src, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            try:
                dst_fd, tmp = create_temp(shard, name, 0o600)
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
        if fileio.clone(src_fd, dst_fd) is None:
            return True
        self._reflink_store = False  # the same file systems will refuse again
        return False

    # ---- reading and checking ---------------------------------------------------------------

    def read_manifest(self, hash: str, shown: str | None = None) -> list[manifest.ManifestEntry]:
        """The entries of the ``.dir`` object ``hash``, checked against its name (once per
        process: an object never changes under its name).

        ``shown``: the output it is read for. Then errors name it, and a ``.dir`` object that
        does not match its name is removed from the cache (CorruptObjectsError either way).
        """
        check_hash(hash, directory=True)
        known = self._manifests.get(hash)
        if known is None:
            try:
                known = self._manifests[hash] = tuple(self._read_manifest(hash))
            except MissingObjectsError:
                if shown is None:
                    raise
                raise MissingObjectsError.one(shown, hash) from None
            except CorruptObjectsError:
                if shown is None:
                    raise
                self.remove(hash, corrupt=True)
                raise CorruptObjectsError(corrupt_message([(shown, hash)]), [(shown, hash)]) \
                    from None
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
            raise OperationError(f"{obj}: cannot read the cache object: "
                                 f"{fileio.why(exc)}") from None
        if dir_hash(data) != hash:
            raise CorruptObjectsError(f"{obj}: {corrupt_text(hash)}", [(str(obj), hash)])
        try:
            return manifest.parse(data)
        except manifest.ManifestError as exc:
            raise OperationError(f"{obj}: invalid directory manifest: {exc}") from None

    def check_output(self, hash: str, shown: str, remove: bool = True) -> list[tuple[str, str]]:
        """Check the objects of an output (a file object, or a ``.dir`` object and every file
        it lists) against their names before they are used; [(path shown, hash)] of those
        that do not match, each removed from the cache when ``remove`` (a ``.dir`` object
        with it: it no longer has all its files). Missing objects are not reported here."""
        check_hash(hash)
        if not is_dir_hash(hash):
            bad = self.checker.check([(hash, shown)])
            if bad and remove:
                self.remove(hash, corrupt=True)
            return bad
        try:
            entries = self.read_manifest(hash)
        except MissingObjectsError:
            return []
        except CorruptObjectsError:
            if remove:
                self.remove(hash, corrupt=True)
            return [(shown, hash)]
        bad = self.checker.check((e.hash, os.path.join(shown, e.path)) for e in entries)
        if bad and remove:
            self.remove_with_dir(hash, {digest for _, digest in bad})
        return bad

    def remove_with_dir(self, hash: str, members: Iterable[str]) -> None:
        """Remove these members of the ``.dir`` object ``hash`` (found corrupt), then the
        ``.dir`` object, which no longer has all its files."""
        for digest in members:
            self.remove(digest, corrupt=True)
        self.remove(hash, corrupt=True)

    def verify(self, hash: str) -> bool:
        """True if the object is present and its content still matches its name."""
        obj = self.object_path(hash)
        if is_dir_hash(hash):
            try:
                data = obj.read_bytes()
            except OSError:
                return False
            return dir_hash(data) == hash
        if not obj.is_file():
            return False
        got: str | None = get_backend().hash_files([str(obj)], 1)[0].hash
        return got == hash

    # ---- removing ---------------------------------------------------------------------------

    def remove(self, hash: str, corrupt: bool = False) -> bool:
        """Delete an object (``corrupt``: one found not to match its name); False if it was
        not there."""
        obj = self.object_path(hash)
        self.checker.forget(str(obj))
        self._manifests.pop(hash, None)
        try:
            os.unlink(obj)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            what = "remove the corrupt" if corrupt else "delete the"
            raise OperationError(f"{obj}: cannot {what} cache object: {fileio.why(exc)}") \
                from None

    def remove_stale_temps(self, older_than_s: float = 24 * 3600) -> int:
        """Delete temp files left by interrupted writes; how many were deleted."""
        return remove_stale_temps(self.files_dir, older_than_s)


def _changed(job: _StoreJob, now: str | None) -> str:
    return (f"{job.shown}: the file changed while it was being stored in the cache (hashed as "
            f"{job.hash}, now {now}); nothing was stored for it")


def _sole_name(job: _StoreJob) -> bool:
    """May job.src itself become its object? Only a regular file (not a symlink) that no
    other name shares: linking another name's inode into the cache, and making it read-only,
    would change that other file, and let an edit of it corrupt the object."""
    try:
        st = os.lstat(job.src)
    except OSError:
        return True  # the hashing that follows names the problem
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1


__all__ = [
    "FILES_DIR", "LAYOUT_VERSION", "PULL_HINT", "CorruptObjectsError", "DirDigest",
    "MissingObjectsError", "ObjectStore", "corrupt_message",
]
