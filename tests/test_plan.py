"""The planner in memory: every decision (skip, restore, run-cache, run) and every reason kind
of SPEC §4, against a dict workspace, a fake lock store and a fake run cache (tests/fakes.py)."""

from __future__ import annotations

import pytest

from pivotbuild.config import Out
from pivotbuild.plan import FROZEN, RESTORE, RUN, RUN_CACHE, SKIP, STALE, UP_TO_DATE, Reason
from tests.fakes import ROOT, World, digest_of, stage


def two_stages(**train_fields) -> World:
    """prepare: raw.txt → clean.txt; train: clean.txt, train.py → model.txt, both committed."""
    world = World(
        stage("prepare", "prep", deps=["raw.txt"], outs=["clean.txt"]),
        stage("train", "train", deps=["clean.txt", "train.py"], outs=["model.txt"],
              **train_fields),
        files={"raw.txt": "raw", "clean.txt": "clean", "train.py": "py", "model.txt": "m"},
    )
    world.commit("prepare", "train")
    return world


def reasons(decision) -> list[dict[str, str]]:
    return [r.to_dict() for r in decision.reasons]


def test_a_stage_that_matches_its_lock_is_skipped_with_its_input_hash():
    world = two_stages()
    plan = world.plan()
    for name in ("prepare", "train"):
        assert (plan[name].status, plan[name].action, plan[name].reasons) == (
            UP_TO_DATE, SKIP, [])
        assert plan[name].input_hash == world.locks.get(name).input_hash


def test_never_run_stage_runs_and_has_an_input_hash():
    world = World(stage("a", "make a", deps=["src"], outs=["a.out"]), files={"src": "x"})
    decision = world.plan()["a"]
    assert (decision.status, decision.action) == (STALE, RUN)
    assert reasons(decision) == [{"kind": "never-run"}]
    assert decision.input_hash is not None and len(decision.input_hash) == 32


def test_an_invalid_lock_is_never_run_with_its_problem_kept():
    world = two_stages()
    world.locks.texts["train"] = "garbage"
    decision = world.plan()["train"]
    assert reasons(decision) == [{"kind": "never-run", "detail": "the lock is invalid"}]
    assert decision.lock_problem == "locks/train.json: not JSON"
    # the run cache still knows these inputs (committed before the lock was damaged)
    assert decision.action == RUN_CACHE
    assert world.plan(run_cache=False)["train"].action == RUN


def test_cmd_changed():
    world = two_stages()
    world.restage(stage("train", "train --fast", deps=["clean.txt", "train.py"],
                        outs=["model.txt"]))
    assert reasons(world.plan()["train"]) == [{"kind": "cmd-changed"}]


def test_params_changed_names_the_key():
    world = World(stage("t", "t", outs=["o"], params=["lr", "seed"],
                        param_values={"lr": 0.1, "seed": 1}), files={"o": "o"})
    world.commit("t")
    new = stage("t", "t", outs=["o"], params=["lr", "seed"],
                param_values={"lr": 0.2, "seed": 1})
    world.restage(new)
    assert reasons(world.plan()["t"]) == [{"kind": "params-changed", "key": "lr"}]
    # 1 and true are different values as the lock records them
    world.restage(stage("t", "t", outs=["o"], params=["lr", "seed"],
                        param_values={"lr": 0.1, "seed": True}))
    assert reasons(world.plan()["t"]) == [{"kind": "params-changed", "key": "seed"}]


def test_dep_changed_then_upstream_stale_below_it():
    world = two_stages()
    world.workspace.write("raw.txt", "new raw")
    plan = world.plan()
    assert reasons(plan["prepare"]) == [{"kind": "dep-changed", "path": "raw.txt"}]
    assert plan["prepare"].action == RUN
    assert reasons(plan["train"]) == [{"kind": "upstream-stale", "stage": "prepare"}]
    assert plan["train"].action == RUN
    # Its deps may still change: no input hash until the upstream has run.
    assert plan["train"].input_hash is None


def test_dep_added_and_removed():
    world = two_stages()
    world.workspace.write("extra", "e")
    world.restage(stage("train", "train", deps=["clean.txt", "extra"],
                        outs=["model.txt"]))
    assert reasons(world.plan()["train"]) == [
        {"kind": "dep-added", "path": "extra"}, {"kind": "dep-removed", "path": "train.py"}]


def test_dep_missing_runs_without_an_input_hash():
    world = two_stages()
    world.workspace.remove("train.py")
    decision = world.plan()["train"]
    assert reasons(decision) == [{"kind": "dep-missing", "path": "train.py"}]
    assert decision.action == RUN and decision.input_hash is None
    assert decision.missing_deps == ["train.py"]


def test_dep_missing_of_a_stage_never_run():
    world = World(stage("a", "a", deps=["gone"], outs=["o"]))
    assert reasons(world.plan()["a"]) == [{"kind": "never-run"},
                                          {"kind": "dep-missing", "path": "gone"}]


def test_an_unreadable_dep_is_changed_with_its_problem():
    world = two_stages()
    world.workspace.unreadable.add("train.py")
    decision = world.plan()["train"]
    assert [(r.kind, r.path, r.detail) for r in decision.reasons] == [
        ("dep-changed", "train.py", "Permission denied")]
    assert decision.action == RUN and decision.input_hash is None
    assert decision.unreadable_deps == [("train.py", "Permission denied")]


def test_out_missing_or_changed_is_restored_when_the_cache_has_it():
    world = two_stages()
    world.workspace.remove("model.txt")
    world.workspace.write("clean.txt", "edited by hand")
    plan = world.plan()
    assert reasons(plan["prepare"]) == [{"kind": "out-changed", "path": "clean.txt"}]
    assert plan["prepare"].action == RESTORE
    # train's dep changed too: it is stale because its input changed, not restorable
    assert reasons(plan["train"]) == [{"kind": "dep-changed", "path": "clean.txt"},
                                      {"kind": "out-missing", "path": "model.txt"},
                                      {"kind": "upstream-stale", "stage": "prepare"}]
    world.workspace.write("clean.txt", "clean")
    decision = world.plan()["train"]
    assert reasons(decision) == [{"kind": "out-missing", "path": "model.txt"}]
    assert decision.action == RESTORE
    assert decision.input_hash == world.locks.get("train").input_hash


def test_out_missing_runs_when_the_object_is_not_in_the_cache():
    world = two_stages()
    world.workspace.remove("model.txt")
    world.cache.objects.pop(digest_of("m"))
    assert world.plan()["train"].action == RUN


def test_an_out_pivot_toml_no_longer_caches_is_not_restored():
    """Whether an output is cached is pivot.toml's say, never the lock's (SPEC §8)."""
    world = two_stages()
    world.workspace.remove("model.txt")
    world.restage(stage(
        "train", "train", deps=["clean.txt", "train.py"],
        outs=[Out(path="model.txt", cache=False)]))
    decision = world.plan()["train"]
    assert reasons(decision) == [{"kind": "out-missing", "path": "model.txt"}]
    assert decision.action == RUN


def test_out_added_and_removed():
    world = two_stages()
    world.workspace.write("log.txt", "l")
    world.restage(stage("train", "train", deps=["clean.txt", "train.py"],
                        outs=["log.txt"]))
    decision = world.plan()["train"]
    assert reasons(decision) == [{"kind": "out-added", "path": "log.txt"},
                                 {"kind": "out-removed", "path": "model.txt"}]
    assert decision.action == RUN


def test_always_changed_runs_every_time():
    world = two_stages(always_changed=True)
    decision = world.plan()["train"]
    assert reasons(decision) == [{"kind": "always-changed"}]
    assert decision.action == RUN and decision.input_hash is not None


def test_frozen_is_never_stale_and_stops_nothing_upstream_of_it():
    world = two_stages(frozen=True)
    world.workspace.write("train.py", "changed")
    decision = world.plan()["train"]
    assert (decision.status, decision.action, decision.reasons) == (FROZEN, SKIP, [])


def test_forced_runs_an_up_to_date_stage_with_reason_forced():
    world = two_stages()
    plan = world.plan(force=["train"])
    assert plan["train"].action == RUN and reasons(plan["train"]) == [{"kind": "forced"}]
    assert plan["train"].input_hash == world.locks.get("train").input_hash
    assert plan["prepare"].action == SKIP


def test_reordering_and_flags_change_nothing():
    world = World(stage("t", "t", deps=["a", "b"], outs=["x", "y"], params=["p", "q"],
                        param_values={"p": 1, "q": 2}),
                  files={"a": "a", "b": "b", "x": "x", "y": "y"})
    world.commit("t")
    before = world.plan()["t"].input_hash
    world.restage(stage(
        "t", "t", deps=["b", "a"], outs=[Out(path="y", cache=False), "x"], params=["q", "p"],
        param_values={"q": 2, "p": 1}, desc="now described"))
    decision = world.plan()["t"]
    assert (decision.status, decision.reasons, decision.input_hash) == (UP_TO_DATE, [], before)


# ---- the run cache --------------------------------------------------------------------------


def run_cache_world() -> World:
    """Stage t ran once with src = "v1" (so the run cache knows that input hash), then src
    changed and t ran again: the workspace is back at v1 but the lock says v2."""
    world = World(stage("t", "t", deps=["src"], outs=["out"]), files={"src": "v1", "out": "o1"})
    world.commit("t")
    world.workspace.write("src", "v2")
    world.workspace.write("out", "o2")
    world.commit("t")
    world.workspace.write("src", "v1")
    return world


def test_a_known_input_hash_comes_from_the_run_cache():
    world = run_cache_world()
    decision = world.plan()["t"]
    assert reasons(decision) == [{"kind": "dep-changed", "path": "src"}]
    assert decision.action == RUN_CACHE
    assert decision.run_entry is not None
    assert [o["hash"] for o in decision.run_entry["outs"]] == [digest_of("o1")]
    assert decision.input_hash in world.cache.runs


def test_the_lookup_is_asked_by_input_hash_and_stage_name():
    world = run_cache_world()
    asked = []
    planner_lookup = world.cache.lookup

    def lookup(input_hash, name):
        asked.append((input_hash, name))
        return planner_lookup(input_hash, name)

    from pivotbuild.plan import Planner

    planner = Planner(world.project, world.graph, world.hasher, world.locks, world.cache.objects,
                      lookup)
    decision = planner.plan(["t"])[0]
    assert asked == [(decision.input_hash, "t")] and decision.action == RUN_CACHE


def test_no_run_cache_lookup_means_run():
    world = run_cache_world()
    decision = world.plan(run_cache=False)["t"]
    assert decision.action == RUN and decision.run_entry is None


def test_a_run_entry_whose_object_is_gone_is_not_used():
    world = run_cache_world()
    world.cache.objects.pop(digest_of("o1"))
    assert world.plan()["t"].action == RUN


def test_persist_outputs_never_come_from_the_run_cache():
    world = run_cache_world()
    world.restage(stage("t", "t", deps=["src"],
                        outs=[Out(path="out", persist=True)]))
    assert world.plan()["t"].action == RUN


@pytest.mark.parametrize("workspace_out, action", [("o1", RUN_CACHE), ("other", RUN)])
def test_a_non_cached_output_is_used_only_when_the_workspace_holds_it(workspace_out, action):
    """cache = false outputs are never stored: a run entry can vouch for one only if the
    workspace already holds exactly what that run made."""
    world = World(stage("t", "t", deps=["src"], outs=[Out(path="out", cache=False)]),
                  files={"src": "v1", "out": "o1"})
    world.commit("t")
    world.workspace.write("src", "v2")
    world.workspace.write("out", "o2")
    world.commit("t")
    world.workspace.write("src", "v1")
    world.workspace.write("out", workspace_out)
    assert world.plan()["t"].action == action


def test_an_entry_that_lacks_a_declared_output_is_not_used():
    world = run_cache_world()
    world.restage(stage("t", "t", deps=["src"], outs=["out", "more"]))
    assert world.plan()["t"].action == RUN


# ---- what the planner reads -----------------------------------------------------------------


def test_a_plan_hashes_each_path_once_in_one_batch():
    world = two_stages()
    world.hasher.hashed.clear()
    world.plan()
    assert sorted(world.hasher.hashed) == ["clean.txt", "model.txt", "raw.txt", "train.py"]


def test_reason_text_as_status_prints_it():
    assert str(Reason("dep-changed", path="a")) == "dep changed: a"
    assert str(Reason("params-changed", key="lr")) == "params changed: lr"
    assert str(Reason("never-run", detail="the lock is invalid")) == (
        "never run (the lock is invalid)")


# ---- discovered deps (SPEC §9: the lock's "discovered", from a depfile or imports) --------------


def compile_world(**fields) -> World:
    """cc compiles calc.c into calc.o; its last run discovered include/calc.h and
    include/util.h (committed with them), and link uses calc.o."""
    world = World(
        stage("cc", "gcc -MMD -MF calc.d -c calc.c", deps=["calc.c"], outs=["calc.o"],
              depfile="calc.d", **fields),
        stage("link", "gcc -o app calc.o", deps=["calc.o"], outs=["app"]),
        files={"calc.c": "int f;", "include/calc.h": "h1", "include/util.h": "u1",
               "calc.o": "obj1", "app": "app1"},
    )
    world.committer.commit(world.project.stages["cc"],
                           discovered=["include/util.h", "include/calc.h"])
    world.commit("link")
    return world


def test_a_changed_discovered_dep_makes_the_stage_stale_not_its_input_hash():
    world = compile_world()
    assert [d.path for d in world.locks.get("cc").discovered] == [
        "include/calc.h", "include/util.h"]
    assert world.plan()["cc"].status == UP_TO_DATE
    world.workspace.write("include/calc.h", "h2")
    decision = world.plan()["cc"]
    assert reasons(decision) == [
        {"kind": "dep-changed", "path": "include/calc.h", "detail": "discovered"}]
    assert str(decision.reasons[0]) == "dep changed: include/calc.h (discovered)"
    assert decision.input_hash == world.locks.get("cc").input_hash  # not an input
    assert decision.action == RUN  # the run cache has no run with this header
    assert world.graph.edges() == [("cc", "link")]  # cc → link only: no edge from a header


def test_a_missing_discovered_dep_is_dep_missing_and_does_not_stop_the_run():
    world = compile_world()
    world.workspace.remove("include/util.h")
    decision = world.plan()["cc"]
    assert reasons(decision) == [
        {"kind": "dep-missing", "path": "include/util.h", "detail": "discovered"}]
    assert decision.missing_deps == [] and decision.action == RUN


def test_discovered_deps_are_hashed_in_the_same_batch_as_the_declared_ones():
    world = compile_world()
    batches: list[list[str]] = []
    hash_paths = world.hasher.hash_paths

    def recording(paths):
        batches.append([p[len(ROOT) + 1:] for p in paths])
        return hash_paths(paths)

    world.hasher.hash_paths = recording
    world.plan()
    assert len(batches) == 1
    assert {"calc.c", "calc.o", "include/calc.h", "include/util.h", "app"} <= set(batches[0])


def test_a_discovered_dep_now_declared_is_checked_as_a_dep_only():
    world = compile_world()
    world.restage(stage(
        "cc", "gcc -MMD -MF calc.d -c calc.c", deps=["calc.c", "include/calc.h"],
        outs=["calc.o"], depfile="calc.d"))
    world.workspace.write("include/calc.h", "h2")
    assert reasons(world.plan()["cc"]) == [{"kind": "dep-added", "path": "include/calc.h"}]


def test_starting_or_stopping_discovery_makes_the_stage_stale():
    world = World(stage("cc", "cc", deps=["calc.c"], outs=["calc.o"]),
                  files={"calc.c": "c", "calc.o": "o"})
    world.commit("cc")
    world.restage(stage("cc", "cc", deps=["calc.c"], outs=["calc.o"],
                        discover=["python"]))
    decision = world.plan()["cc"]
    assert reasons(decision) == [
        {"kind": "dep-added", "detail": "discovered deps not recorded"}]
    # the run cache's entry for these inputs recorded no discovered deps: it cannot be used
    assert decision.action == RUN
    world = compile_world()
    world.restage(stage("cc", "gcc -MMD -MF calc.d -c calc.c",
                        deps=["calc.c"], outs=["calc.o"]))
    decision = world.plan()["cc"]
    assert reasons(decision) == [
        {"kind": "dep-removed", "detail": "discovered deps no longer recorded"}]
    assert decision.action == RUN_CACHE  # the outputs are known: nothing needs to run


def test_the_run_cache_is_used_only_when_every_discovered_dep_has_its_recorded_hash():
    world = compile_world()
    cc = world.project.stages["cc"]
    world.workspace.write("include/calc.h", "h2")  # a second run, with another header
    world.workspace.write("calc.o", "obj2")
    world.committer.commit(cc, discovered=["include/calc.h", "include/util.h"])
    world.workspace.write("include/calc.h", "h1")  # back to the first run's header
    decision = world.plan()["cc"]
    assert decision.action == RUN_CACHE
    assert [o["hash"] for o in decision.run_entry["outs"]] == [digest_of("obj1")]
    assert [(d["path"], d["hash"]) for d in decision.run_entry["discovered"]] == [
        ("include/calc.h", digest_of("h1")), ("include/util.h", digest_of("u1"))]
    world.workspace.write("include/util.h", "u2")  # a combination no run has seen
    assert world.plan()["cc"].action == RUN
    world.workspace.write("include/util.h", "u1")
    world.workspace.remove("include/calc.h")
    assert world.plan()["cc"].action == RUN
