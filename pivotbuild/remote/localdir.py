"""A remote that is a directory on a mounted file system: plain system calls, and objects
copied in bulk through the compiled core.

Pushing writes each object atomically: an unnamed file (O_TMPFILE) in its shard directory
that gets its name only once the file system is flushed (or, where there are no unnamed files,
a temp name beside it, then a rename). Each copy is checked against its name on the way (a
corrupted cache object is never sent) and written around the page cache where the file system
allows (this machine does not read it back). Fetching copies into temps in the local cache,
hashing each object on the way, so the caller need not read it again to verify it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import stat
import threading
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from pivotbuild.atomic import sync_filesystem, temp_name, unlink_quietly, write_atomic
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
from pivotbuild.names import object_name
from pivotbuild.remote.base import (
    CORRUPT_LOCAL,
    NOT_LOCAL,
    Progress,
    Received,
    Sent,
    Store,
    StoreFailure,
    object_rel,
    temp_beside,
)

if TYPE_CHECKING:
    from pivotbuild.store.objects import ObjectStore

# Objects per round, a round being calls into the core: large enough that the file system
# flush before the copies are named is paid a few times, not per 1,000; copied in slices of
# _PROGRESS_STEP so that the progress bar moves.
_DIRECTORY_BATCH = 16384
_PROGRESS_STEP = 1024
_FD_MARGIN = 256  # open files kept free for everything but a round's unnamed copies


class LocalStore(Store):
    """A directory on a mounted file system, through system calls. Objects are copied in
    bulk through the compiled core, from and to ``root``."""

    batch = _DIRECTORY_BATCH

    def __init__(self, root: str) -> None:
        self.root = root
        # Copies are written as unnamed files (O_TMPFILE) until the file system turns out
        # to have none; then under temp names.
        self.unnamed_files = True
        self._dirs: set[str] = set()
        self._dirs_lock = threading.Lock()

    def check(self) -> None:
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            raise OperationError("the directory does not exist (create it first)") from None
        if not stat.S_ISDIR(st.st_mode):
            raise OperationError("not a directory")

    def ensure_dir(self, directory: str) -> None:
        if directory in self._dirs:
            return
        os.makedirs(directory, exist_ok=True)
        with self._dirs_lock:
            self._dirs.add(directory)

    def list_names(self, top: str, shards: Collection[str] | None) -> set[str]:
        base = os.path.join(self.root, top)
        if shards is None:
            try:
                shards = os.listdir(base)
            except (FileNotFoundError, NotADirectoryError):
                return set()
        names: set[str] = set()
        for shard in shards:
            if len(shard) != 2:
                continue
            try:
                with os.scandir(os.path.join(base, shard)) as entries:
                    names.update(shard + e.name for e in entries if not e.name.startswith("."))
            except (FileNotFoundError, NotADirectoryError):
                continue
        return names

    def read(self, rel: str) -> bytes:
        with open(os.path.join(self.root, rel), "rb") as f:
            return f.read()

    def write(self, rel: str, data: bytes) -> None:
        final = os.path.join(self.root, rel)
        self.ensure_dir(os.path.dirname(final))
        write_atomic(final, data, mode=0o444, durable=False)

    def sync(self) -> None:
        sync_filesystem(self.root)

    # ---- push -----------------------------------------------------------------------------

    def put_many(self, objects: ObjectStore, digests: Sequence[str], jobs: int,
                 progress: Progress) -> Sent:
        """Copy in rounds through the compiled core (see the module's docstring); the remote's
        file system is flushed after each round, and only then does each copy get its name. A
        kill leaves no temp behind. A round is flushed and named in the background while the
        next one is copied."""
        files_dir = str(objects.files_dir)
        sent = Sent()
        round_size = _DIRECTORY_BATCH
        if self.unnamed_files:  # two rounds' copies are open at once
            round_size = _raise_open_files(2 * _DIRECTORY_BATCH) // 2
            if round_size < _PROGRESS_STEP:  # too few descriptors to hold a round open
                self.unnamed_files = False
                round_size = _DIRECTORY_BATCH
        flushing: _Naming | None = None
        try:
            for start in range(0, len(digests), round_size):
                batch = digests[start : start + round_size]
                ready: dict[str, _Copy] = {}
                try:
                    for part_start in range(0, len(batch), _PROGRESS_STEP):
                        part = batch[part_start : part_start + _PROGRESS_STEP]
                        self._copy_part(files_dir, part, jobs, sent, ready)
                        progress.advance(len(part))
                except BaseException:
                    _drop_copies(ready.values())
                    raise
                if flushing is not None:
                    flushing.finish(sent)
                flushing = _Naming(self, ready, jobs)
            if flushing is not None:
                flushing.finish(sent)
        finally:
            if flushing is not None:  # an error: let the round in flight end as it would
                flushing.join()
        return sent

    def _copy_part(self, files_dir: str, part: Sequence[str], jobs: int, sent: Sent,
                   ready: dict[str, _Copy]) -> None:
        """Copy one slice of a round: each good copy goes into ``ready``, each failure into
        ``sent.failed``."""
        unnamed = self.unnamed_files
        flags = COPY_CHECK | COPY_KEEP_EXEC | COPY_DIRECT | (COPY_UNNAMED if unnamed else 0)
        copies = []
        targets = []
        for digest in part:
            target = os.path.join(self.root, object_rel(digest))
            targets.append(target)
            directory, name = os.path.split(target)
            try:
                self.ensure_dir(directory)
            except OSError as exc:
                raise StoreFailure("cannot create a directory", exc) from None
            copies.append((os.path.join(files_dir, object_name(digest)),
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
                sent.failed[digest] = f"not sent: {CORRUPT_LOCAL}"
            elif (result.status == ERR_IO and result.err == errno.ENOENT
                  and not os.path.exists(src)):
                sent.failed[digest] = f"not sent: {NOT_LOCAL}"
            else:
                sent.failed[digest] = f"not sent: {result.error}"
        if again:  # this file system has no unnamed files: temp names from now on
            self.unnamed_files = False
            self._copy_part(files_dir, again, jobs, sent, ready)

    # ---- fetch ----------------------------------------------------------------------------

    def get_many(self, objects: ObjectStore, digests: Sequence[str],
                 executable: Collection[str], jobs: int, progress: Progress
                 ) -> dict[str, Received | Exception]:
        """Copy through the compiled core, hashing each object on the way."""
        files_dir = str(objects.files_dir)
        flags = COPY_KEEP_EXEC | (COPY_WRITEBACK if objects.durable else 0)
        copies = [(os.path.join(self.root, object_rel(d)), temp_beside(files_dir, d),
                   0o555 if d in executable else 0o444, flags, None) for d in digests]
        results: dict[str, Received | Exception] = {}
        for digest, (src, tmp, *_), got in zip(digests, copies,
                                               _copy_files(copies, jobs, progress),
                                               strict=True):
            if got.status == OK:
                # a .dir's name is its content's hash with the suffix: compared as a manifest
                results[digest] = (tmp, got.size, got.hash)
            elif got.status == ERR_NOT_REGULAR:
                results[digest] = OperationError("not a regular file on the remote")
            elif got.err == errno.ENOENT:
                results[digest] = FileNotFoundError(got.err, os.strerror(got.err), src)
            else:
                results[digest] = OSError(got.err, os.strerror(got.err), src)
        return results


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
            _drop_copies(ready.values())
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

    def finish(self, sent: Sent) -> None:
        """Wait for the round; record what it named (or failed to) in ``sent``."""
        self.join()
        if self.error is not None:
            raise self.error
        for digest, (status, err) in self.outcomes.items():
            if status == ERR_IO:
                sent.failed[digest] = f"not sent: {os.strerror(err)}"
            else:
                sent.done[digest] = self.ready[digest].size


def _drop_copies(copies: Iterable[_Copy]) -> None:
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
                progress: Progress) -> list[CopyResult]:
    """backend.copy_files in slices, advancing the progress bar after each."""
    results: list[CopyResult] = []
    for start in range(0, len(copies), _PROGRESS_STEP):
        part = copies[start : start + _PROGRESS_STEP]
        results += get_backend().copy_files(part, jobs)
        progress.advance(len(part))
    return results
