"""What the Dask client checks of a worker's run: the address it connects to, the result a
worker returns, the inline outputs it writes, and the commit against the worker's hashes.

Split from dask.py (the runner); nothing here imports ``distributed``.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pivotbuild import paths
from pivotbuild.errors import OperationError, UsageError

if TYPE_CHECKING:
    from pivotbuild.commit import CommitResult, Committer, Snapshot
    from pivotbuild.config import Project, Stage

_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def check_address(address: str, insecure: bool) -> None:
    """UsageError for an address this client must not connect to: a ``tcp://`` (or schemeless)
    address whose host is not loopback, unless ``insecure``."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if scheme != "tcp" or insecure:
        return
    host = rest.rsplit(":", 1)[0] if not rest.startswith("[") else rest[1:].split("]")[0]
    host = host.split("/")[0]
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host.lower() in _LOOPBACK_NAMES
    if not loopback:
        raise UsageError(
            f"executor address {address!r} is a plain tcp:// address that is not loopback: "
            f"Dask runs pickled code, so anyone who can reach the scheduler can run commands "
            f"as its workers; use tls:// (with certificates in the Dask config), or set "
            f"insecure = true in [executor] on a network you trust")


def dask_runner(pipeline: Any, kind: str | None = None, address: str | None = None,
                no_commit: bool = False) -> Any:
    """The runner ``[executor]`` (or ``--executor`` / ``--executor-address``) asks for: None
    for the local one. UsageError (exit 2) for a dask executor that cannot be used: no
    ``distributed`` installed, no address or cluster, an unsafe address, no remote."""
    import dataclasses
    import importlib.util

    project: Project = pipeline.project
    settings = project.executor
    if (kind or settings.kind) != "dask":
        return None
    if importlib.util.find_spec("distributed") is None:
        raise UsageError("executor kind \"dask\" needs Dask's distributed, which is not "
                         "installed: pip install 'pivotbuild[dask]'")
    if address:
        settings = dataclasses.replace(settings, address=address, cluster=None, workers=None)
    if settings.address is None and settings.cluster is None:
        raise UsageError("executor kind \"dask\" needs an address (executor.address, in "
                         "pivot.toml or .pivotbuild/config.local.toml, or --executor-address) "
                         "or cluster = \"local\"")
    if settings.address is not None:
        check_address(settings.address, settings.insecure)
    if settings.transfer == "remote" and settings.remote is None:
        raise UsageError("executor transfer = \"remote\" needs a remote: set "
                         "executor.remote or project.default_remote")
    remote = settings.remote if settings.transfer == "remote" else None
    from pivotbuild.runners.dask import DaskRunner  # distributed loads only to run

    return DaskRunner(project, pipeline.hasher, pipeline.cache, settings, remote, no_commit)


def validated_outs(stage: Stage, result: dict[str, Any]) -> list[dict[str, Any]]:
    """The result's outs, refused unless each is a declared out, once, with a
    well-formed hash."""
    from pivotbuild.names import is_hash

    declared = {o.path: o for o in stage.outs}
    seen: set[str] = set()
    outs = result.get("outs")
    if not isinstance(outs, list):
        raise OperationError(f"stage '{stage.name}': the worker's result has no outs list")
    for out in outs:
        path = out.get("path") if isinstance(out, dict) else None
        if not isinstance(path, str) or path not in declared or path in seen:
            raise OperationError(f"stage '{stage.name}': the worker's result names "
                                 f"{path!r}, which is not a declared output; rejected")
        if not is_hash(out.get("hash")):
            raise OperationError(f"stage '{stage.name}': the worker's result has no valid "
                                 f"hash for {path!r}; rejected")
        seen.add(path)
    for item in result.get("inline", []):
        path = item.get("path") if isinstance(item, dict) else None
        if path not in seen or declared[path].cache:
            raise OperationError(f"stage '{stage.name}': the worker's result inlines "
                                 f"{path!r}, which is not a declared non-cached output; "
                                 f"rejected")
    return outs


def write_inline(root: Path, path: str, files: Iterable[Any], digest: str) -> None:
    """An inline output written atomically, after checking it against the worker's hash."""
    from pivotbuild import manifest
    from pivotbuild.atomic import write_atomic
    from pivotbuild.hashing import get_backend
    from pivotbuild.names import dir_hash, is_dir_hash

    backend = get_backend()
    items = [(str(rel), bytes(data), bool(executable)) for rel, data, executable in files]
    if is_dir_hash(digest):
        entries = []
        for rel, data, executable in items:
            manifest.check_relative_path(os.fsencode(rel))
            entries.append(manifest.ManifestEntry(rel, backend.hash_bytes(data), len(data),
                                                  executable))
        actual = dir_hash(manifest.build(entries))
    else:
        if len(items) != 1 or items[0][0]:
            raise OperationError(f"{path}: the worker's inline output is malformed; rejected")
        actual = backend.hash_bytes(items[0][1])
    if actual != digest:
        raise OperationError(f"{path}: the worker's inline output hashes to {actual}, not to "
                             f"{digest} as it said; rejected")
    dest = paths.resolve(root, path)
    if not is_dir_hash(digest):
        paths.make_parent(root, path)
        if os.path.isdir(dest) and not os.path.islink(dest):
            paths.remove(root, path)
        _, data, executable = items[0]
        write_atomic(dest, data, mode=0o755 if executable else 0o644)
        return
    temp = tempfile.mkdtemp(prefix=".pivotbuild-inline-", dir=paths.make_parent(root, path).parent)
    try:
        for rel, data, executable in items:
            target = os.path.join(temp, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(data)
            os.chmod(target, 0o755 if executable else 0o644)
        os.chmod(temp, 0o755)
        if os.path.lexists(dest):
            paths.remove(root, path)
        os.rename(temp, dest)
        temp = ""
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


class CheckedCommitter:
    """The commit writer, unchanged, with one check first: an output that ran on a worker
    must hash in the workspace to what the worker said it hashed to."""

    def __init__(self, inner: Committer, expected: dict[str, dict[str, str]]) -> None:
        self.inner = inner
        self.expected = expected

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def snapshot(self, stage: Stage, *args: Any, **kwargs: Any) -> Snapshot:
        snap = self.inner.snapshot(stage, *args, **kwargs)
        self._check(stage, snap)
        return snap

    def commit(self, stage: Stage, snapshot: Snapshot | None = None, *args: Any,
               **kwargs: Any) -> CommitResult:
        snap = snapshot or self.inner.snapshot(stage, *args, **kwargs)
        self._check(stage, snap)
        return self.inner.commit(stage, snap, *args, **kwargs)

    def _check(self, stage: Stage, snap: Snapshot) -> None:
        expected = self.expected.pop(stage.name, None)
        if not expected:
            return
        for path, digest in expected.items():
            got = snap.outs[path].hash if path in snap.outs else None
            if got != digest:
                raise OperationError(f"output {path!r} hashes to {got} in the workspace but "
                                     f"to {digest} on the worker; nothing committed for it")
