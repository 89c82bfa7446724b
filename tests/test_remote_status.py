"""remote/status.py: `status --remote` in process."""

from __future__ import annotations

from pathlib import Path

from pivotbuild import remote as remotes
from pivotbuild.pipeline import opened
from tests.remotekit import clone, do

pytest_plugins = ["tests.remote_fixtures"]  # the remote_dir and built fixtures


def test_status_remote_before_and_after_push_and_from_a_fresh_clone(built: Path,
                                                                    tmp_path: Path):
    def statuses(root: Path) -> dict[str, str]:
        with opened(root) as pipeline:
            result = remotes.status_remote(pipeline, pipeline.select([]),
                                           remotes.open_remote(pipeline.project, None))
        assert result.problems == []
        return {f"{o.stage}:{o.path}": o.status for o in result.outputs}

    assert statuses(built) == {"prepare:clean.txt": "missing-on-remote",
                               "train:model": "missing-on-remote",
                               "report:report.txt": "missing-on-remote"}
    assert do("push", built, targets=["train"]).ok
    assert statuses(built)["train:model"] == "in-sync"
    assert statuses(built)["prepare:clean.txt"] == "missing-on-remote"
    b = clone(built, tmp_path / "b")
    assert statuses(b) == {"prepare:clean.txt": "missing", "train:model": "only-on-remote",
                           "report:report.txt": "missing"}
