"""``status --remote``: for each cached output the locks record (and each tracked path), whether
it is complete on the remote, in the local cache, both, or neither."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pivotbuild.errors import OperationError
from pivotbuild.names import is_dir_hash
from pivotbuild.remote.base import FILES_DIR, Remote, object_rel
from pivotbuild.remote.fetcher import check_manifest_bytes
from pivotbuild.remote.refs import OutputRef, Scope, tracked_refs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pivotbuild.pipeline import Pipeline
    from pivotbuild.tracked import Record

IN_SYNC, MISSING_ON_REMOTE, ONLY_ON_REMOTE, MISSING = (
    "in-sync", "missing-on-remote", "only-on-remote", "missing")


@dataclass(slots=True)
class OutputStatus:
    stage: str  # "" for a tracked path (JSON: null)
    path: str
    hash: str
    status: str  # one of the four above
    objects: int  # how many objects the output is made of (known ones)
    not_on_remote: int
    not_local: int

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage or None, "path": self.path, "hash": self.hash,
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


def status_remote(pipeline: Pipeline, names: list[str], remote: Remote,
                  tracked: Sequence[Record] = ()) -> RemoteStatus:
    """For each cached output the locks of ``names`` record, and each ``tracked`` path: is it
    complete on the remote, in the local cache, both, or neither. A directory's manifest is
    read from the local cache, or from the remote (validated, not stored) when only the
    remote has it."""
    result = RemoteStatus(remote.name)
    scope = Scope.of(pipeline)
    refs = scope.lock_refs(scope.locks(names, result.problems)) + tracked_refs(tracked)
    remote.check()
    members: dict[str, set[str] | None] = {}  # .dir hash -> its files' hashes (None: unknown)
    for ref in refs:
        if is_dir_hash(ref.hash) and ref.hash not in members:
            members[ref.hash] = _members(scope, remote, ref, result.problems)
    everything = {r.hash for r in refs}
    for listed in members.values():
        everything |= listed or set()
    on_remote = remote.present(FILES_DIR, everything)
    local = scope.cache.objects.present(everything)
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


def _members(scope: Scope, remote: Remote, ref: OutputRef, problems: list[str]
             ) -> set[str] | None:
    """The hashes of the files a directory output lists: its manifest read from the local
    cache, else from the remote; None if neither has a sound one."""
    objects = scope.cache.objects
    if objects.has(ref.hash):
        try:
            return {e.hash for e in objects.read_manifest(ref.hash)}
        except OperationError as exc:
            problems.append(str(exc))
    try:
        data = remote.store.read(object_rel(ref.hash))
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001
        raise remote.error(exc, "reading a manifest") from None
    problem, entries = check_manifest_bytes(data, ref.hash)
    if problem:
        problems.append(f"{ref.shown}: manifest {ref.hash} on remote '{remote.name}' "
                        f"rejected: {problem}")
        return None
    return {e.hash for e in entries}
