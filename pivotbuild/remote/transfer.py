"""push / fetch / pull: moving cached outputs (and run-cache entries) between the local
cache and a remote; and pushing objects by hash.

What is guaranteed, whatever the kind of store (base.py):
- push sends only what the remote lacks (learned by one listing), each object checked against
  its name before it leaves the cache. A ``.dir`` manifest is sent only after every file it
  lists is on the remote, and a run-cache entry only after the objects it names, so their
  presence on a remote implies their content's; a run-cache entry whose objects could not be
  sent is not sent either. Which outputs are cached is read from pivot.toml, never from the
  lock (SPEC §8).
- fetch trusts nothing it downloads (fetcher.py).
- an unusable remote (unreachable, bad credentials, missing bucket or directory) is one
  OperationError naming the remote and the cause, raised before anything is written locally.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pivotbuild.errors import OperationError
from pivotbuild.names import is_dir_hash
from pivotbuild.remote.base import FILES_DIR, RUNS_DIR, Remote, cause, run_rel
from pivotbuild.remote.fetcher import Fetcher
from pivotbuild.remote.refs import OutputRef, Scope, TransferReport, inner_shown, tracked_refs
from pivotbuild.report import Progress

if TYPE_CHECKING:
    from pivotbuild.checkout import CheckoutReport
    from pivotbuild.pipeline import Pipeline
    from pivotbuild.store.objects import ObjectStore
    from pivotbuild.tracked import Record


def default_jobs() -> int:
    """Transfers wait on I/O far more than on the CPU: several per core."""
    return min(32, 4 * (os.cpu_count() or 1))


# ---- push -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Objects:
    """The objects some outputs are made of, as push sends them."""

    files: dict[str, str] = field(default_factory=dict)  # hash -> how it is shown
    dirs: dict[str, tuple[str, set[str]]] = field(default_factory=dict)  # -> (shown, files)
    unreadable: dict[str, tuple[str, str]] = field(default_factory=dict)  # -> (shown, why)

    @classmethod
    def of(cls, objects: ObjectStore, refs: Iterable[OutputRef]) -> _Objects:
        """A directory's files are read from its manifest in the local cache."""
        found = cls()
        for ref in refs:
            digest = ref.hash
            if digest in found.files or digest in found.dirs or digest in found.unreadable:
                continue
            if not is_dir_hash(digest):
                found.files[digest] = ref.shown
                continue
            try:
                in_manifest = objects.read_manifest(digest)
            except OperationError as exc:
                found.unreadable[digest] = (ref.shown, str(exc))
                continue
            found.dirs[digest] = (ref.shown, {e.hash for e in in_manifest})
            for e in in_manifest:
                found.files.setdefault(e.hash, inner_shown(ref.shown, e.path))
        return found


def _send_objects(objects: ObjectStore, remote: Remote, wanted: _Objects, jobs: int,
                  report: TransferReport, bar: Progress) -> set[str]:
    """Send what the remote lacks of ``wanted`` (one listing), files before the manifests
    listing them; the hashes on the remote afterwards, those there before included."""
    on_remote = remote.present(FILES_DIR, [*wanted.files, *wanted.dirs, *wanted.unreadable])
    for digest, (shown, why) in wanted.unreadable.items():
        if digest in on_remote:  # not here, but the remote has it already: nothing to do
            report.skipped += 1
        else:
            report.fail(shown, f"manifest {digest} cannot be sent: {why}")
    todo = [h for h in wanted.files if h not in on_remote]
    report.skipped += len(wanted.files) - len(todo)
    bar.add(len(todo) + len(wanted.dirs))
    have = on_remote | _put(objects, remote, todo, wanted.files, jobs, report, bar)
    remote.store.sync()
    dir_todo = []
    for digest, (shown, listed) in wanted.dirs.items():
        if digest in on_remote:
            report.skipped += 1
            bar.advance()
        elif listed <= have:
            dir_todo.append(digest)
        else:
            report.fail(shown, f"manifest {digest} not sent: {len(listed - have)} of its "
                               f"files are not on the remote")
            bar.advance()
    dirs_shown = {d: wanted.dirs[d][0] for d in dir_todo}
    return have | _put(objects, remote, dir_todo, dirs_shown, jobs, report, bar)


def _put(objects: ObjectStore, remote: Remote, digests: list[str], shown: Mapping[str, str],
         jobs: int, report: TransferReport, bar: Progress) -> set[str]:
    """Upload these objects -j wide, reporting each; the set of those now on the remote."""
    if not digests:
        return set()
    sent = remote.put_many(objects, digests, jobs, bar)
    for digest, why in sent.failed.items():
        report.fail(shown[digest], f"object {digest} {why}")
    report.objects += len(sent.done)
    report.bytes += sum(sent.done.values())
    return set(sent.done)


def push(pipeline: Pipeline, names: list[str], remote: Remote, jobs: int = 0,
         run_cache: bool = False, progress: bool | None = None,
         tracked: Sequence[Record] = ()) -> TransferReport:
    """Upload the objects the locks of ``names`` and the ``tracked`` paths' records reference
    (and with ``run_cache`` the locks' run-cache entries) that the remote lacks. Files go
    before the ``.dir`` manifests listing them, objects before the run-cache entries naming
    them."""
    jobs = jobs or default_jobs()
    report = TransferReport(remote.name, "push")
    scope = Scope.of(pipeline)
    cache = scope.cache
    problems: list[str] = []
    locks = scope.locks(names, problems)
    for message in problems:
        report.fail("lock", message)
    refs = scope.lock_refs(locks) + tracked_refs(tracked)
    entries: dict[str, tuple[str, dict[str, Any]]] = {}  # input hash -> (stage, entry)
    if run_cache:
        for name, lock in locks.items():
            entry = cache.runs.get(lock.input_hash)
            if entry is not None:
                entries[lock.input_hash] = (name, entry)
                refs.extend(scope.entry_refs(name, entry))
    wanted = _Objects.of(cache.objects, refs)
    remote.check()
    bar = Progress(f"push → {remote.name}", progress)
    try:
        bar.add(len(entries))
        have = _send_objects(cache.objects, remote, wanted, jobs, report, bar)
        if entries:
            remote.store.sync()
            runs_there = remote.present(RUNS_DIR, list(entries))
            for input_hash, (stage, entry) in entries.items():
                bar.advance()
                if input_hash in runs_there:
                    report.skipped += 1
                    continue
                lacking = [r for r in scope.entry_refs(stage, entry) if r.hash not in have]
                if lacking:
                    report.fail(f"run-cache entry {input_hash} ({stage})",
                                f"not sent: {lacking[0].shown} is not on the remote")
                    continue
                try:
                    remote.store.write(run_rel(input_hash),
                                       cache.runs.path(input_hash).read_bytes())
                    report.runs += 1
                except Exception as exc:  # noqa: BLE001
                    report.fail(f"run-cache entry {input_hash} ({stage})", cause(exc))
            remote.store.sync()
    finally:
        bar.close()
    return report


def push_objects(remote: Remote, objects: ObjectStore, hashes: Iterable[str], jobs: int = 0,
                 shown: Mapping[str, str] | None = None) -> TransferReport:
    """Upload the objects named by ``hashes`` (file or ``.dir`` hashes: a directory's files
    with it, before its manifest) that the remote lacks, learned in one listing. ``shown``:
    how a failure names an object (default: its hash). No progress bar: for the executor."""
    report = TransferReport(remote.name, "push")
    names = shown or {}
    refs = [OutputRef("", names.get(h, h), h) for h in dict.fromkeys(hashes)]
    wanted = _Objects.of(objects, refs)
    remote.check()
    _send_objects(objects, remote, wanted, jobs or default_jobs(), report, Progress("", False))
    return report


# ---- fetch and pull -------------------------------------------------------------------------


def fetch(pipeline: Pipeline, names: list[str], remote: Remote, jobs: int = 0,
          run_cache: bool = False, progress: bool | None = None,
          tracked: Sequence[Record] = ()) -> TransferReport:
    """Download what the local cache lacks of the objects the locks of ``names`` and the
    ``tracked`` paths' records reference (and with ``run_cache`` the locks' run-cache
    entries); every object rehashed before it is placed."""
    from pivotbuild.paths import ensure_state_dir

    jobs = jobs or default_jobs()
    report = TransferReport(remote.name, "fetch")
    scope = Scope.of(pipeline)
    problems: list[str] = []
    locks = scope.locks(names, problems)
    for message in problems:
        report.fail("lock", message)
    remote.check()
    ensure_state_dir(pipeline.root)
    bar = Progress(f"fetch ← {remote.name}", progress)
    fetcher = Fetcher(scope.cache, remote, jobs, report, bar)
    try:
        refs = scope.lock_refs(locks) + tracked_refs(tracked)
        entries: dict[str, tuple[str, dict[str, Any]]] = {}
        if run_cache:
            for name, lock in locks.items():
                if scope.cache.runs.get(lock.input_hash) is not None:
                    report.skipped += 1
                    continue
                entry = fetcher.run_entry(lock.input_hash, name)
                if entry is not None:
                    entries[lock.input_hash] = (name, entry)
                    refs.extend(scope.entry_refs(name, entry))
        complete = fetcher.objects(refs)
        for input_hash, (name, entry) in entries.items():
            if all(r.hash in complete for r in scope.entry_refs(name, entry)):
                fetcher.store_run(input_hash, entry)
    finally:
        bar.close()
    return report


def pull(pipeline: Pipeline, names: list[str], remote: Remote, jobs: int = 0,
         run_cache: bool = False, progress: bool | None = None,
         tracked: Sequence[Record] = ()) -> tuple[TransferReport, CheckoutReport]:
    """fetch, then checkout of the same stages (what could not be fetched is reported by
    both: the checkout names the outputs left missing)."""
    from pivotbuild.checkout import Checkout

    report = fetch(pipeline, names, remote, jobs, run_cache, progress, tracked)
    return report, Checkout(pipeline).run(names, tracked)
