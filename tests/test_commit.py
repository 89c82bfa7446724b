"""The commit writer in memory: what a commit writes (objects, lock, run-cache entry), that it is
all or nothing with the lock written last, and that the planner then agrees the stage is up to
date (tests/fakes.py: a dict workspace, a fake cache and lock store)."""

from __future__ import annotations

import pytest

from pivotbuild.commit import MissingPathsError
from pivotbuild.config import Out
from pivotbuild.errors import OperationError
from pivotbuild.plan import SKIP, UP_TO_DATE
from tests.fakes import World, digest_of, stage


def train_world(**fields) -> World:
    return World(
        stage("train", "python train.py", deps=["data.csv", "train.py"],
              outs=["model.bin", Out(path="metrics.json", cache=False)],
              params=["lr"], param_values={"lr": 0.1}, **fields),
        files={"data.csv": "1,2", "train.py": "fit()", "model.bin": "weights",
               "metrics.json": "{}"},
    )


def test_a_commit_stores_cached_outputs_writes_the_lock_and_the_run_entry():
    world = train_world()
    stage_ = world.project.stages["train"]
    result = world.committer.commit(stage_)
    assert result.written
    lock = world.locks.get("train")
    assert lock == result.lock
    assert (lock.stage, lock.cmd, lock.params) == ("train", ["python train.py"], {"lr": 0.1})
    assert [(d.path, d.hash, d.size) for d in lock.deps] == [
        ("data.csv", digest_of("1,2"), 3), ("train.py", digest_of("fit()"), 5)]
    assert [(o.path, o.hash, o.cache, o.persist) for o in lock.outs] == [
        ("metrics.json", digest_of("{}"), False, False),
        ("model.bin", digest_of("weights"), True, False)]
    # only the cached output is stored; the run entry names both outputs
    assert world.cache.objects == {digest_of("weights"): "weights"}
    assert world.cache.runs[lock.input_hash] == {"input_hash": lock.input_hash, "schema": 1,
                                                 "outs": [
        {"cache": False, "hash": digest_of("{}"), "path": "metrics.json", "size": 2},
        {"cache": True, "hash": digest_of("weights"), "path": "model.bin", "size": 7}]}


def test_after_a_commit_the_planner_finds_the_stage_up_to_date_with_the_same_input_hash():
    world = train_world()
    snapshot_hash = world.committer.snapshot(world.project.stages["train"]).input_hash
    world.commit("train")
    decision = world.plan()["train"]
    assert (decision.status, decision.action) == (UP_TO_DATE, SKIP)
    assert decision.input_hash == snapshot_hash == world.locks.get("train").input_hash


def test_committing_the_same_workspace_again_rewrites_nothing():
    world = train_world()
    world.commit("train")
    again = world.committer.commit(world.project.stages["train"])
    assert not again.written and world.locks.writes == ["train"]


def test_a_missing_output_or_dep_commits_nothing_and_names_the_paths():
    world = train_world()
    world.workspace.remove("model.bin")
    world.workspace.remove("train.py")
    with pytest.raises(MissingPathsError) as caught:
        world.committer.commit(world.project.stages["train"])
    assert caught.value.paths == ["train.py", "model.bin"]
    assert str(caught.value) == "missing 'train.py', 'model.bin'; nothing committed for it"
    assert world.locks.texts == {} and world.cache.objects == {} and world.cache.runs == {}


def test_an_unreadable_path_commits_nothing_and_names_it():
    world = train_world()
    world.workspace.unreadable.add("data.csv")
    with pytest.raises(OperationError, match=r"^data\.csv: Permission denied$"):
        world.committer.commit(world.project.stages["train"])
    assert world.locks.texts == {} and world.cache.objects == {}


def test_the_lock_is_written_last_a_failed_store_leaves_the_old_lock():
    world = World(stage("s", "s", outs=["a", "b"]), files={"a": "1", "b": "2"})
    world.commit("s")
    before = world.locks.texts["s"]
    world.workspace.write("a", "new a")
    world.workspace.write("b", "new b")
    world.cache.fail_store.add("b")
    with pytest.raises(OSError):
        world.committer.commit(world.project.stages["s"])
    assert world.locks.texts["s"] == before  # still the old lock
    assert len(world.cache.runs) == 1  # and no run entry for the new inputs


@pytest.mark.parametrize("fields", [{"always_changed": True}, {"outs": [
    Out(path="model.bin", persist=True), Out(path="metrics.json", cache=False)]}])
def test_always_changed_and_persist_stages_get_no_run_cache_entry(fields):
    world = train_world(**fields) if "outs" not in fields else World(
        stage("train", "python train.py", deps=["data.csv"], **fields),
        files={"data.csv": "1", "model.bin": "w", "metrics.json": "{}"})
    world.commit("train")
    assert world.locks.get("train").outs[-1].persist == ("outs" in fields)
    assert world.cache.runs == {}


def test_whether_an_output_is_cached_comes_from_the_configuration():
    world = train_world()
    world.commit("train")
    world.project.stages["train"] = stage(
        "train", "python train.py", deps=["data.csv", "train.py"],
        outs=[Out(path="model.bin", cache=False), "metrics.json"],
        params=["lr"], param_values={"lr": 0.1})
    world.commit("train")
    lock = world.locks.get("train")
    assert [(o.path, o.cache) for o in lock.outs] == [("metrics.json", True),
                                                      ("model.bin", False)]
    assert digest_of("{}") in world.cache.objects


# ---- discovered deps (SPEC §9, §13) ------------------------------------------------------------


def cc_world() -> World:
    return World(
        stage("cc", "gcc -MMD -MF calc.d -c calc.c", deps=["calc.c"], outs=["calc.o"],
              depfile="calc.d"),
        files={"calc.c": "int f;", "include/calc.h": "h1", "include/util.h": "u1",
               "calc.o": "obj"},
    )


def test_discovered_deps_are_locked_hashed_and_recorded_in_the_run_entry():
    world = cc_world()
    cc = world.project.stages["cc"]
    # given unsorted, twice, with a declared dep
    world.committer.commit(cc, discovered=["include/util.h", "calc.c", "include/calc.h",
                                           "include/util.h"])
    lock = world.locks.get("cc")
    assert [(d.path, d.hash, d.size) for d in lock.discovered] == [
        ("include/calc.h", digest_of("h1"), 2), ("include/util.h", digest_of("u1"), 2)]
    assert [d.path for d in lock.deps] == ["calc.c"]
    entry = world.cache.runs[lock.input_hash]
    assert entry["schema"] == 2
    assert entry["discovered"] == [d.to_dict() for d in lock.discovered]
    # the input hash is the declared inputs' only
    assert lock.input_hash == world.committer.snapshot(cc, discovered=[]).input_hash


def test_a_discovered_dep_missing_after_the_run_is_locked_null_and_not_run_cached():
    world = cc_world()
    world.committer.commit(world.project.stages["cc"],
                           discovered=["include/calc.h", "include/gone.h"])
    lock = world.locks.get("cc")
    assert [(d.path, d.missing) for d in lock.discovered] == [
        ("include/calc.h", False), ("include/gone.h", True)]
    assert '"hash": null' in world.locks.texts["cc"]
    assert lock.input_hash not in world.cache.runs
    assert world.plan()["cc"].status != UP_TO_DATE


def test_a_stage_that_discovers_nothing_gets_an_empty_list_and_others_no_key():
    world = cc_world()
    world.committer.commit(world.project.stages["cc"], discovered=[])
    assert world.locks.get("cc").discovered == []
    world = train_world()
    world.commit("train")
    assert world.locks.get("train").discovered is None
    assert '"discovered"' not in world.locks.texts["train"]


def test_commit_without_a_run_keeps_the_locks_discovered_list_rehashed():
    world = cc_world()
    cc = world.project.stages["cc"]
    world.committer.commit(cc, discovered=["include/calc.h", "include/util.h"])
    world.workspace.write("include/calc.h", "h2")
    world.workspace.remove("include/util.h")
    assert world.plan()["cc"].status != UP_TO_DATE
    world.commit("cc")  # as `pivotbuild commit` does: nothing ran, no depfile on disk
    assert [(d.path, d.hash) for d in world.locks.get("cc").discovered] == [
        ("include/calc.h", digest_of("h2"))]  # rehashed; the vanished one dropped
    assert world.plan()["cc"].status == UP_TO_DATE
