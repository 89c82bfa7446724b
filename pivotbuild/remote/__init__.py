"""Remotes: opening a configured remote, and the transfers the command line calls.

The package, module by module:

- base.py: the store interface (present / put_many / get_many, read / write of one entry)
  and ``Remote``, one opened remote (its name, URL and store; errors naming it);
- localdir.py: a directory on a mounted file system (the O_TMPFILE bulk pipeline);
- fsspecstore.py: any fsspec file system (S3 and the like);
- refs.py: which cached outputs the locks and run-cache entries reference; the report;
- fetcher.py: downloads into the local cache, trusting nothing;
- transfer.py: push / fetch / pull, and push_objects (objects by hash);
- reprofetch.py: what ``repro --pull`` fetches ahead, and its remote run-cache lookup;
- status.py: ``status --remote``.

A URL is a local path (relative: to the project root), ``file://…``, ``s3://bucket/prefix``
or any other fsspec URL.
"""

from __future__ import annotations

import os
from pathlib import Path

from pivotbuild.config_models import Project
from pivotbuild.errors import UsageError
from pivotbuild.remote.base import Remote, object_rel, run_rel
from pivotbuild.remote.refs import OutputRef, TransferReport
from pivotbuild.remote.reprofetch import RemoteRunCache, prefetch_for_repro
from pivotbuild.remote.status import (
    IN_SYNC,
    MISSING,
    MISSING_ON_REMOTE,
    ONLY_ON_REMOTE,
    OutputStatus,
    RemoteStatus,
    status_remote,
)
from pivotbuild.remote.transfer import default_jobs, fetch, pull, push, push_objects


def open_remote(project: Project, name: str | None) -> Remote:
    """The remote ``name`` (None: the default one). UsageError if there is no such remote;
    OperationError if its URL cannot be opened."""
    if name is None:
        name = project.default_remote
        if name is None:
            if not project.remotes:
                raise UsageError("no remote is configured (add [remotes.NAME] with a url to "
                                 "pivot.toml)")
            known = ", ".join(sorted(project.remotes))
            raise UsageError(f"no default remote: pass -r NAME (one of: {known}) or set "
                             f"project.default_remote")
    config = project.remotes.get(name)
    if config is None:
        known = ", ".join(sorted(project.remotes)) or "none is configured"
        raise UsageError(f"unknown remote '{name}' (known: {known})")
    from fsspec.core import split_protocol

    protocol, path = split_protocol(config.url)
    if protocol in (None, "file", "local"):
        from pivotbuild.remote.localdir import LocalStore

        local = Path(os.path.expanduser(path))
        if not local.is_absolute():
            local = project.root / local
        return Remote(name, config.url, LocalStore(os.path.abspath(local)))
    from pivotbuild.remote.fsspecstore import open_fsspec

    return Remote(name, config.url, open_fsspec(name, config, protocol))


__all__ = [
    "IN_SYNC", "MISSING", "MISSING_ON_REMOTE", "ONLY_ON_REMOTE", "OutputRef", "OutputStatus",
    "Remote", "RemoteRunCache", "RemoteStatus", "TransferReport", "default_jobs", "fetch",
    "object_rel", "open_remote", "prefetch_for_repro", "pull", "push", "push_objects",
    "run_rel", "status_remote",
]
