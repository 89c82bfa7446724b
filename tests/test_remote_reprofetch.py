"""remote/reprofetch.py: what `repro --pull` fetches ahead (from the planner's decisions) and its
remote run-cache lookup, in process."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pivotbuild import remote as remotes
from pivotbuild.execute import RunOptions
from pivotbuild.pipeline import opened
from pivotbuild.report import Reporter
from tests.remotekit import cache_objects, clone, do, lock_doc, outputs, ran, repro, tree

pytest_plugins = ["tests.remote_fixtures"]  # the remote_dir and built fixtures


@pytest.mark.parametrize("with_locks", [True, False], ids=["locks", "no-locks"])
def test_prefetch_for_repro_lets_a_fresh_clone_run_nothing(built: Path, tmp_path: Path,
                                                           with_locks: bool):
    assert do("push", built, run_cache=True).ok
    b = clone(built, tmp_path / "b", locks=with_locks)
    with opened(b) as pipeline:
        report = remotes.prefetch_for_repro(pipeline, pipeline.select([]),
                                            remotes.open_remote(pipeline.project, None))
    assert report.ok, report.failed
    assert report.objects == len(cache_objects(built))
    repro(b)
    assert ran(b) == []
    assert outputs(b) == outputs(built)
    assert tree(b / ".pivotbuild" / "locks") == tree(built / ".pivotbuild" / "locks")


def test_prefetch_takes_a_frozen_stages_outputs_as_the_workspace_has_them(built: Path,
                                                                          tmp_path: Path):
    """A frozen stage never runs nor restores: what is below it is predicted from its outputs
    as they are, and nothing is fetched for it."""
    assert do("push", built, run_cache=True).ok
    b = clone(built, tmp_path / "b", locks=False)
    text = (b / "pivot.toml").read_text()
    (b / "pivot.toml").write_text(text.replace('outs = ["clean.txt"]\n',
                                               'outs = ["clean.txt"]\nfrozen = true\n', 1))
    shutil.copy(built / "clean.txt", b / "clean.txt")
    clean = lock_doc(built, "prepare")["outs"][0]["hash"]
    with opened(b) as pipeline:
        report = remotes.prefetch_for_repro(pipeline, pipeline.select([]),
                                            remotes.open_remote(pipeline.project, None))
    assert report.ok and report.runs == 2  # train's and report's entries, not prepare's
    assert clean not in cache_objects(b)
    repro(b)
    assert ran(b) == []
    assert outputs(b) == outputs(built)


def test_prefetch_stops_predicting_below_a_stage_that_must_run(built: Path, tmp_path: Path):
    assert do("push", built, run_cache=True).ok
    b = clone(built, tmp_path / "b", locks=False)
    (b / "raw.txt").write_text("something new\n")
    with opened(b) as pipeline:
        report = remotes.prefetch_for_repro(pipeline, pipeline.select([]),
                                            remotes.open_remote(pipeline.project, None))
    assert report.ok and report.objects == 0 and report.runs == 0
    repro(b)
    assert ran(b) == ["prepare", "train", "report"]


def test_remote_run_cache_hook_restores_below_an_upstream_that_ran(built: Path,
                                                                   tmp_path: Path):
    """The planner hook: prepare must run (new raw.txt) but makes the same clean.txt, so
    train and report have input hashes the remote run cache knows: they are restored."""
    assert do("push", built, run_cache=True).ok
    b = clone(built, tmp_path / "b", locks=False)
    (b / "raw.txt").write_text("HELLO remote\n")  # upper-cased, the same clean.txt
    with opened(b) as pipeline:
        remote = remotes.open_remote(pipeline.project, None)
        prefetched = remotes.prefetch_for_repro(pipeline, pipeline.select([]), remote)
        assert prefetched.ok and prefetched.runs == 0  # nothing predictable up front
        report = remotes.TransferReport(remote.name, "fetch")
        hook = remotes.RemoteRunCache(pipeline, remote, report)
        assert not hook("0" * 32, "nothing")  # no such entry: not an error
        _, results = pipeline.repro(pipeline.select([]), options=RunOptions(jobs=2),
                                    reporter=Reporter(quiet=True), run_cache_miss=hook)
    assert [(r.name, r.action) for r in results] == [
        ("prepare", "run"), ("train", "run-cache"), ("report", "run-cache")]
    assert report.ok and report.runs == 2
    assert ran(b) == ["prepare"] and outputs(b) == outputs(built)


def test_remote_run_cache_hook_replaces_a_corrupt_local_object(built: Path, tmp_path: Path):
    assert do("push", built, run_cache=True).ok
    b = clone(built, tmp_path / "b", locks=False)
    shutil.copytree(built / ".pivotbuild" / "cache" / "runs", b / ".pivotbuild" / "cache" / "runs")
    clean = lock_doc(built, "prepare")["outs"][0]["hash"]
    planted = b / ".pivotbuild" / "cache" / "files" / clean[:2] / clean[2:]
    planted.parent.mkdir(parents=True)
    planted.write_text("POISON\n")
    input_hash = lock_doc(built, "prepare")["input_hash"]
    with opened(b) as pipeline:
        report = remotes.TransferReport("origin", "fetch")
        hook = remotes.RemoteRunCache(pipeline, remotes.open_remote(pipeline.project, None),
                                      report)
        assert hook(input_hash, "prepare")
    assert report.ok and planted.read_bytes() == (built / "clean.txt").read_bytes()
