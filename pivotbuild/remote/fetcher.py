"""Downloads into the local cache, trusting nothing it receives.

Each object is written to a temp beside its place in the cache, rehashed, and renamed into
place only if its hash equals its name; a ``.dir`` manifest is parsed by manifest.parse
(absolute paths, ``..`` and empty segments are rejected) before any of its entries is used,
and stored only after its files; a run-cache entry is validated (JSON shape, well-formed
hashes, safe paths) before it is stored. A rejected object is named in the report and never
placed; the rest still transfers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pivotbuild import manifest
from pivotbuild.atomic import sync_filesystem, unlink_quietly
from pivotbuild.errors import OperationError
from pivotbuild.hashing import ERR_IO, OK, get_backend
from pivotbuild.names import dir_hash, is_dir_hash, shard_of
from pivotbuild.remote.base import Progress, Remote, cause, run_rel
from pivotbuild.remote.refs import OutputRef, TransferReport, inner_shown
from pivotbuild.store.runcache import parse_entry

if TYPE_CHECKING:
    from pivotbuild.store import Cache


class Fetcher:
    """Brings objects and run-cache entries from one remote into the local cache."""

    def __init__(self, cache: Cache, remote: Remote, jobs: int, report: TransferReport,
                 progress: Progress) -> None:
        self.local = cache.objects  # the local cache's objects
        self.runs = cache.runs
        self.remote = remote
        self.jobs = jobs
        self.report = report
        self.progress = progress

    def objects(self, refs: Iterable[OutputRef], executable: Collection[str] = ()) -> set[str]:
        """Fetch what the local cache lacks of these outputs' objects (a directory's files
        first, its manifest last); the hashes of the outputs complete in the cache after.
        ``executable``: file outputs (hashes) whose object gets the exec bit (object stores
        keep no mode; a directory's files take theirs from its manifest)."""
        files: dict[str, str] = {}
        dirs: dict[str, str] = {}
        for ref in refs:
            target = dirs if is_dir_hash(ref.hash) else files
            target.setdefault(ref.hash, ref.shown)
        executable = set(executable)
        listed: dict[str, set[str]] = {}
        pending: dict[str, str] = {}  # .dir hash -> verified temp, placed after its files
        parsed: dict[str, list[manifest.ManifestEntry]] = {}

        def add_members(digest: str, entries: list[manifest.ManifestEntry]) -> None:
            listed[digest] = {e.hash for e in entries}
            for e in entries:
                files.setdefault(e.hash, inner_shown(dirs[digest], e.path))
                if e.executable:
                    executable.add(e.hash)

        try:
            need_dirs = []
            for digest, shown in dirs.items():
                if self.local.has(digest):
                    try:
                        add_members(digest, self.local.read_manifest(digest))
                    except OperationError as exc:
                        self.report.fail(shown, str(exc))
                else:
                    need_dirs.append(digest)
            self.progress.add(len(need_dirs))
            for digest, (tmp, entries) in self._download(need_dirs, dirs, executable).items():
                pending[digest] = tmp
                parsed[digest] = entries
                add_members(digest, entries)
            have = self.local.present(files)
            need = [h for h in files if h not in have]
            self.report.skipped += len(files) - len(need) + len(dirs) - len(need_dirs)
            self.progress.add(len(need))
            step = self.remote.store.batch
            for start in range(0, len(need), step):
                got = self._download(need[start : start + step], files, executable)
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
                    self.local.remember_manifest(digest, parsed[digest])
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

    def _download(self, digests: Sequence[str], shown: Mapping[str, str],
                  executable: set[str]) -> dict[str, tuple[str, list[manifest.ManifestEntry]]]:
        """Download into temps beside their places and verify them; {hash: (temp, manifest
        entries for a .dir)} for the good ones. Bad ones are reported and deleted."""
        if not digests:
            return {}
        for shard in sorted({shard_of(d) for d in digests}):
            try:
                os.makedirs(self.local.files_dir / shard, exist_ok=True)
            except OSError as exc:
                raise OperationError(f"{self.local.files_dir}: cannot create the cache: "
                                     f"{exc.strerror or exc}") from None
        results = self.remote.get_many(self.local, digests, executable, self.jobs,
                                       self.progress)
        temps: dict[str, tuple[str, int, str | None]] = {}  # hash -> (temp, size, its hash)
        good: dict[str, tuple[str, list[manifest.ManifestEntry]]] = {}
        try:
            for digest in digests:
                result = results[digest]
                if isinstance(result, Exception):
                    why = cause(result)
                    if isinstance(result, FileNotFoundError):
                        why = f"not on remote '{self.remote.name}'"
                    self.report.fail(shown[digest], f"object {digest}: {why}")
                else:
                    temps[digest] = result
            unhashed = [d for d, (_, _, got) in temps.items()
                        if got is None and not is_dir_hash(d)]
            hashed = get_backend().hash_files([temps[d][0] for d in unhashed], self.jobs)
            actual = {d: got for d, (_, _, got) in temps.items() if got is not None}
            actual.update((d, h.hash) for d, h in zip(unhashed, hashed, strict=True))
            for digest, (tmp, size, _) in temps.items():
                problem = None
                entries: list[manifest.ManifestEntry] = []
                if not is_dir_hash(digest):
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

    def _place(self, items: Mapping[str, tuple[str, Any]]) -> None:
        """Rename verified temps to their objects' names (an object stored meanwhile is
        kept: same bytes, by its name), after flushing them where the cache is durable."""
        if not items:
            return
        files_dir = self.local.files_dir
        digests = list(items)
        moves = [(items[d][0], str(self.local.object_path(d))) for d in digests]
        try:
            if self.local.durable:
                sync_filesystem(files_dir)
            results = get_backend().move_files(moves, self.jobs)
        except BaseException as exc:
            for tmp, _ in moves:
                unlink_quietly(tmp)
            if isinstance(exc, OSError):
                raise OperationError(f"{files_dir}: cannot store in the cache: "
                                     f"{exc.strerror or exc}") from None
            raise
        # Each temp is now its object, or was removed (the object was there), or failed.
        problem = None
        for digest, (tmp, final), (status, err) in zip(digests, moves, results, strict=True):
            if status == ERR_IO:
                unlink_quietly(tmp)
                problem = problem or f"{final}: cannot store in the cache: {os.strerror(err)}"
                continue
            self.report.objects += 1
            if status == OK and not is_dir_hash(digest):
                # Hashed on its way in by this process: placing it need not read it again.
                with contextlib.suppress(OSError):
                    st = os.stat(final)
                    self.local.checker.trust(final, st.st_size, st.st_mtime_ns, st.st_ino)
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
            return parse_entry(data, input_hash)
        except OperationError as exc:
            self.report.fail(f"run-cache entry {input_hash} ({stage})",
                             f"from remote '{self.remote.name}' rejected: {exc}")
            return None

    def store_run(self, input_hash: str, entry: Mapping[str, Any]) -> None:
        """Record a fetched entry (validated by run_entry) in the local run cache, every run
        it records (with its discovered deps) included."""
        self.runs.put_entry(input_hash, entry)
        self.report.runs += 1


def check_manifest_bytes(data: bytes, digest: str
                         ) -> tuple[str | None, list[manifest.ManifestEntry]]:
    """(why ``data`` is not the manifest named ``digest``, or None; its entries)."""
    if dir_hash(data) != digest:
        return "its content does not match its name", []
    try:
        return None, manifest.parse(data)
    except manifest.ManifestError as exc:
        return f"invalid directory manifest: {exc}", []


def _check_manifest(tmp: str, digest: str) -> tuple[str | None, list[manifest.ManifestEntry]]:
    try:
        with open(tmp, "rb") as f:
            data = f.read()
    except OSError as exc:
        return f"cannot read it back: {exc.strerror or exc}", []
    return check_manifest_bytes(data, digest)
