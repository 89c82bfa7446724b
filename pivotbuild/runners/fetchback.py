"""A cluster stage's outputs brought back to the client: fetched from the remote, then placed.

runners/dask.py calls ``fetch_and_place`` once a task reports the outputs it uploaded (their
paths and hashes): the objects come from the remote into ``cache`` (the project's, or a
temporary one for outputs the project does not cache), are checked against their names by
the fetcher, and are placed in the workspace with ``methods``, replacing what is there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pivotbuild.errors import OperationError

if TYPE_CHECKING:
    from pivotbuild.config_models import Project
    from pivotbuild.remote.base import Remote
    from pivotbuild.store import Cache


def fetch_and_place(remote: Remote, project: Project, stage: str, outs: list[dict[str, Any]],
                    cache: Cache, methods: list[str]) -> None:
    """Fetch ``outs`` (``{"path", "hash", "exec"?}`` as a task reports them) of ``stage``
    from ``remote`` into ``cache`` and place them; OperationError naming the first output
    that could not be fetched."""
    from pivotbuild.remote.fetcher import Fetcher
    from pivotbuild.remote.refs import OutputRef, TransferReport
    from pivotbuild.runners import worker as worker_side
    from pivotbuild.store.place import STAGING_DIR, Placer

    report = TransferReport(remote.name, "fetch")
    refs = [OutputRef(stage, o["path"], o["hash"]) for o in outs]
    executable = {o["hash"] for o in outs if o.get("exec")}
    complete = Fetcher(cache, remote, 8, report, worker_side._NoProgress()).objects(
        refs, executable)
    if report.failed or any(r.hash not in complete for r in refs):
        what, why = report.failed[0] if report.failed else (refs[0].shown, "not fetched")
        raise OperationError(f"cannot fetch the output {what}: {why}")
    placer = Placer(cache.objects, project.root, project.state_dir / STAGING_DIR)
    for out in outs:
        placer.restore(out["hash"], out["path"], None, methods, overwrite=True)
