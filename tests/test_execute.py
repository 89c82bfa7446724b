"""The executor in memory: what runs, in which order, what is restored, what is committed, what
the history records, keep-going, a failure stopping new starts, Ctrl-C, forced and frozen
stages, and the input hash on every result. The workspace is a dict, the commands are Python
functions (tests/fakes.py): no process, no disk."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from pivotbuild.config import Out
from pivotbuild.plan import FAILED, NOT_RUN, OK, RESTORE, RUN, RUN_CACHE, SKIP
from pivotbuild.runners import INTERRUPTED
from tests.fakes import ROOT, Workspace, World, digest_of, stage


def writes(*pairs: tuple[str, Callable[[Workspace], str]], code: int = 0,
           say: str | None = None):
    """A stage's commands: write each (path, content made from the workspace), print ``say``,
    exit with ``code``."""
    def script(ws: Workspace, output: Callable[[str], None]) -> int:
        for path, make in pairs:
            ws.write(path, make(ws))
        if say is not None:
            output(say)
        return code
    return script


def upper(src: str) -> Callable[[Workspace], str]:
    return lambda ws: ws.read(src).upper()


def const(text: str) -> Callable[[Workspace], str]:
    return lambda ws: text


def chain() -> World:
    """a: src → a.out; b: a.out → b.out; c: b.out → c.out."""
    return World(stage("a", "a", deps=["src"], outs=["a.out"]),
                 stage("b", "b", deps=["a.out"], outs=["b.out"]),
                 stage("c", "c", deps=["b.out"], outs=["c.out"]),
                 files={"src": "hello"})


CHAIN = {"a": writes(("a.out", upper("src"))), "b": writes(("b.out", upper("a.out"))),
         "c": writes(("c.out", upper("b.out")))}


def summary(results) -> dict[str, tuple[str, str]]:
    return {name: (r.action, r.status) for name, r in results.items()}


def test_a_first_repro_runs_everything_in_order_and_commits_each_stage():
    world = chain()
    results, runner = world.repro(CHAIN)
    assert runner.ran == ["a", "b", "c"]
    assert summary(results) == {n: (RUN, OK) for n in "abc"}
    assert world.workspace.files["c.out"] == "HELLO"
    for name in "abc":
        lock = world.locks.get(name)
        assert results[name].input_hash == lock.input_hash  # every result carries it
        assert world.cache.runs[lock.input_hash]["outs"][0]["hash"] == lock.outs[0].hash
    assert {lock_out for lock_out in world.cache.objects.values()} == {"HELLO"}
    assert world.history.runs == [(n, "ok", results[n].input_hash, True) for n in "abc"]


def test_a_second_repro_runs_nothing_and_skips_with_input_hashes():
    world = chain()
    world.repro(CHAIN)
    results, runner = world.repro(CHAIN)
    assert runner.ran == [] and runner.opened == 0
    assert summary(results) == {n: (SKIP, OK) for n in "abc"}
    assert all(results[n].input_hash == world.locks.get(n).input_hash for n in "abc")
    assert len(world.locks.writes) == 3  # nothing rewritten


def test_missing_outputs_come_back_from_the_cache_without_running():
    world = chain()
    world.repro(CHAIN)
    world.workspace.remove("b.out")
    results, runner = world.repro(CHAIN)
    assert runner.ran == []
    assert summary(results)["b"] == (RESTORE, OK)
    assert results["b"].input_hash == world.locks.get("b").input_hash
    assert world.workspace.files["b.out"] == "HELLO" and world.outputs.placed == ["b.out"]


def test_a_restore_whose_object_is_bad_runs_the_stage_instead():
    world = chain()
    world.repro(CHAIN)
    world.workspace.remove("b.out")
    world.outputs.broken.add(digest_of("HELLO"))
    results, runner = world.repro(CHAIN)
    assert runner.ran == ["b"] and summary(results)["b"] == (RUN, OK)
    assert ("b", RESTORE) in world.listener.started and ("b", RUN) in world.listener.started


def test_known_inputs_come_from_the_run_cache_and_are_committed():
    world = chain()
    world.repro(CHAIN)
    first = world.locks.get("a")
    world.workspace.write("src", "other")
    world.repro(CHAIN)
    world.workspace.write("src", "hello")  # back to what the run cache has seen
    results, runner = world.repro(CHAIN)
    assert runner.ran == []
    assert summary(results) == {n: (RUN_CACHE, OK) for n in "abc"}
    assert world.locks.get("a") == first  # the lock is the first run's again
    assert results["a"].input_hash == first.input_hash
    assert world.workspace.files["c.out"] == "HELLO"


def test_no_run_cache_runs_instead():
    world = chain()
    world.repro(CHAIN)
    world.workspace.write("src", "other")
    world.repro(CHAIN)
    world.workspace.write("src", "hello")
    _, runner = world.repro(CHAIN, run_cache=False)
    assert runner.ran == ["a", "b", "c"]


def test_a_downstream_stage_whose_deps_come_out_identical_is_skipped():
    """Content decides: a ran (its dep changed) but made the same a.out, so b and c, stale
    only because a was, are decided again and skipped."""
    world = chain()
    world.repro(CHAIN)
    world.workspace.write("src", "HELLO")  # a new dep, the same upper-cased output
    results, runner = world.repro(CHAIN)
    assert runner.ran == ["a"]
    assert summary(results) == {"a": (RUN, OK), "b": (SKIP, OK), "c": (SKIP, OK)}
    assert results["b"].input_hash == world.locks.get("b").input_hash
    assert results["c"].input_hash == world.locks.get("c").input_hash


def test_a_downstream_stage_whose_deps_changed_runs_after_its_upstream():
    world = chain()
    world.repro(CHAIN)
    world.workspace.write("src", "bye")
    results, runner = world.repro(CHAIN)
    assert runner.ran == ["a", "b", "c"]
    assert [r.kind for r in results["b"].reasons] == ["dep-changed"]  # decided again
    assert world.workspace.files["c.out"] == "BYE"


def diamond() -> World:
    """x and y independent (y first), z below x."""
    return World(stage("y", "y", outs=["y.out"]), stage("x", "x", outs=["x.out"]),
                 stage("z", "z", deps=["x.out"], outs=["z.out"]))


DIAMOND = {"x": writes(code=3), "y": writes(("y.out", const("y"))),
           "z": writes(("z.out", const("z")))}


def test_a_failure_stops_new_starts_and_its_downstream():
    world = World(stage("x", "x", outs=["x.out"]), stage("y", "y", outs=["y.out"]),
                  stage("z", "z", deps=["x.out"], outs=["z.out"]))
    results, runner = world.repro(DIAMOND, jobs=1)
    assert runner.ran == ["x"]
    assert summary(results) == {"x": (RUN, FAILED), "y": (RUN, NOT_RUN), "z": (RUN, NOT_RUN)}
    assert results["x"].error == "command exited with code 3"
    assert world.locks.texts == {}
    assert world.history.runs == [("x", "failed", results["x"].input_hash, False)]
    assert results["x"].input_hash is not None


def test_keep_going_runs_what_does_not_depend_on_the_failure():
    world = World(stage("x", "x", outs=["x.out"]), stage("y", "y", outs=["y.out"]),
                  stage("z", "z", deps=["x.out"], outs=["z.out"]))
    results, runner = world.repro(DIAMOND, jobs=1, keep_going=True)
    assert runner.ran == ["x", "y"]
    assert summary(results) == {"x": (RUN, FAILED), "y": (RUN, OK), "z": (RUN, NOT_RUN)}
    assert set(world.locks.texts) == {"y"}


def test_a_failed_stage_keeps_its_old_lock():
    world = chain()
    world.repro(CHAIN)
    before = world.locks.texts["a"]
    world.workspace.write("src", "changed")
    results, _ = world.repro({**CHAIN, "a": writes(("a.out", const("half")), code=1)})
    assert summary(results)["a"] == (RUN, FAILED)
    assert world.locks.texts["a"] == before
    assert world.workspace.files["a.out"] == "half"  # left as the command left it
    assert summary(results)["b"] == (RUN, NOT_RUN)


def test_an_output_not_produced_fails_the_stage_and_names_it():
    world = World(stage("a", "a", outs=["made", "never"]))
    results, _ = world.repro({"a": writes(("made", const("m")))})
    assert summary(results)["a"] == (RUN, FAILED)
    assert results["a"].error == "declared output 'never' not produced"
    assert world.locks.texts == {} and world.cache.objects == {}
    assert world.history.runs == [("a", "failed", results["a"].input_hash, False)]


def test_a_missing_dep_fails_with_a_history_record_and_no_input_hash():
    world = World(stage("a", "a", deps=["gone"], outs=["o"]))
    results, runner = world.repro({"a": writes(("o", const("o")))})
    assert runner.ran == []
    assert summary(results)["a"] == (RUN, FAILED)
    assert results["a"].error == "missing dependency 'gone'"
    assert results["a"].input_hash is None
    assert world.history.runs == [("a", "failed", None, False)]


def test_an_unreadable_dep_fails_naming_it():
    world = World(stage("a", "a", deps=["secret"], outs=["o"]), files={"secret": "s"})
    world.workspace.unreadable.add("secret")
    results, runner = world.repro({"a": writes(("o", const("o")))})
    assert runner.ran == [] and results["a"].status == FAILED
    assert results["a"].error == "dependency cannot be read (secret: Permission denied)"


def test_no_commit_runs_and_records_history_but_writes_nothing_durable():
    world = chain()
    results, runner = world.repro(CHAIN, no_commit=True)
    assert runner.ran == ["a", "b", "c"]
    assert world.locks.texts == {} and world.cache.objects == {} and world.cache.runs == {}
    assert [(stage_, status, committed) for stage_, status, _, committed
            in world.history.runs] == [(n, "ok", False) for n in "abc"]
    assert all(h is not None and h == results[n].input_hash
               for n, (_, _, h, _) in zip("abc", world.history.runs, strict=True))
    _, runner = world.repro(CHAIN)  # a later plain repro runs them again
    assert runner.ran == ["a", "b", "c"]


def test_forced_stages_run_even_when_up_to_date():
    world = chain()
    world.repro(CHAIN)
    results, runner = world.repro(CHAIN, force=["a", "b", "c"])
    assert runner.ran == ["a", "b", "c"]
    assert [r.kind for r in results["a"].reasons] == ["forced"]
    # b was decided again after a ran (upstream-stale) and stays forced
    assert summary(results)["b"] == (RUN, OK)


def test_only_the_forced_target_runs_with_single_item():
    world = chain()
    world.repro(CHAIN)
    results, runner = world.repro(CHAIN, force=["b"], names=["b"])
    assert runner.ran == ["b"] and list(results) == ["b"]


def test_a_frozen_stage_never_runs_and_its_downstream_uses_what_is_there():
    world = World(stage("a", "a", deps=["src"], outs=["a.out"], frozen=True),
                  stage("b", "b", deps=["a.out"], outs=["b.out"]),
                  files={"src": "hello", "a.out": "kept"})
    results, runner = world.repro(CHAIN)
    assert runner.ran == ["b"]
    assert summary(results)["a"] == (SKIP, OK)
    assert world.workspace.files["b.out"] == "KEPT"


def test_persist_outputs_are_not_deleted_before_a_run():
    world = World(stage("a", "a", deps=["src"], outs=[Out(path="db", persist=True), "o"]),
                  files={"src": "1", "db": "rows:", "o": "old"})
    seen = {}

    def script(ws: Workspace, output) -> int:
        seen["o"] = ws.files.get("o")
        ws.write("db", ws.read("db") + ws.read("src"))
        ws.write("o", "new")
        return 0

    results, _ = world.repro({"a": script})
    assert results["a"].status == OK
    assert seen["o"] is None  # a non-persist output was deleted first
    assert world.workspace.files["db"] == "rows:1"
    assert world.cache.runs == {}  # a stage with persist outputs has no run-cache entry


def test_the_runner_gets_the_stage_spec():
    world = World(stage("a", ["one", "two"], deps=["src"], outs=[Out(path="p", persist=True),
                                                                  "o"], wdir="sub"),
                  files={"src": "x"})
    _, runner = world.repro({"a": writes(("p", const("p")), ("o", const("o")))})
    got = runner.specs["a"]
    assert (got.name, got.cmd, got.root, got.wdir, got.deps, got.outs, got.persist) == (
        "a", ("one", "two"), ROOT, "sub", ("src",), ("p", "o"), ("p",))
    assert dict(got.env) == {"PIVOTBUILD_ROOT": ROOT, "PIVOTBUILD_STAGE": "a"}


def test_output_lines_are_prefixed_only_when_stages_may_run_at_once():
    world = diamond()
    scripts = {n: writes((f"{n}.out", const(n)), say=f"hi from {n}") for n in "xyz"}
    world.repro(scripts, jobs=4)
    assert sorted(world.listener.lines) == ["[x] hi from x", "[y] hi from y",
                                            "[z] hi from z"]
    world = chain()
    world.repro({n: writes((f"{n}.out", const(n)), say=f"hi from {n}") for n in "abc"},
                jobs=4)
    assert world.listener.lines == ["hi from a", "hi from b", "hi from c"]  # a chain


def test_parallel_stages_run_at_once_up_to_jobs():
    world = World(*(stage(f"s{i}", "s", outs=[f"o{i}"]) for i in range(4)))
    both = threading.Barrier(2, timeout=10)
    active, peak = [0], [0]
    lock = threading.Lock()

    def script(i: int):
        def run(ws: Workspace, output) -> int:
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            both.wait()  # two at a time, or this times out
            with lock:
                active[0] -= 1
            ws.write(f"o{i}", str(i))
            return 0
        return run

    results, _ = world.repro({f"s{i}": script(i) for i in range(4)}, jobs=2)
    assert all(r.status == OK for r in results.values())
    assert peak[0] == 2


def test_an_interrupt_stops_running_commands_writes_no_lock_and_starts_nothing_more():
    """Ctrl-C arrives in the main thread while one stage runs: the runner is cancelled, the
    running stage is recorded as interrupted with no lock, no other stage starts, and the
    interrupt goes on up."""
    world = World(stage("quick", "q", outs=["q"]), stage("slow", "s", outs=["s"]),
                  stage("later", "l", deps=["q"], outs=["l"]))
    slow_started = threading.Event()

    def slow(ws: Workspace, output) -> int:
        slow_started.set()
        assert world.runner is not None and world.runner.cancelled.wait(10)  # cancelled
        return INTERRUPTED

    def quick(ws: Workspace, output) -> int:
        assert slow_started.wait(10)
        ws.write("q", "q")
        return 0

    def interrupt(result) -> None:
        if result.name == "quick":
            raise KeyboardInterrupt

    world.listener.on_finished = interrupt
    with pytest.raises(KeyboardInterrupt):
        world.repro({"quick": quick, "slow": slow, "later": writes(("l", const("l")))},
                    jobs=2)
    runner = world.runner
    assert runner is not None
    assert sorted(runner.ran) == ["quick", "slow"] and runner.closed == 1
    assert world.listener.was_interrupted
    assert "slow" not in world.locks.texts
    assert ("slow", "interrupted", world.history.runs[-1][2], False) in world.history.runs


# ---- pools (SPEC §9) -------------------------------------------------------------------------


def test_a_pool_caps_its_stages_at_its_size_while_other_stages_fill_the_jobs():
    """[pools] link = 2, six stages in it and two outside, -j 4: never more than two of the
    pool at once, yet the two free stages run beside them (four at once)."""
    pooled = [f"p{i}" for i in range(6)]
    free = ["f0", "f1"]
    world = World(*(stage(n, n, outs=[f"{n}.o"], pool="link") for n in pooled),
                  *(stage(n, n, outs=[f"{n}.o"]) for n in free), pools={"link": 2})
    pair = threading.Barrier(2, timeout=10)  # two pooled stages meet, or this times out
    paired, both_free = threading.Event(), threading.Event()
    started_free, lock = [0], threading.Lock()

    def pooled_script(name: str):
        def run(ws: Workspace, output) -> int:
            pair.wait()
            paired.set()
            assert both_free.wait(10)  # the free stages started while this one runs
            ws.write(f"{name}.o", name)
            return 0
        return run

    def free_script(name: str):
        def run(ws: Workspace, output) -> int:
            with lock:
                started_free[0] += 1
                if started_free[0] == 2:
                    both_free.set()
            assert both_free.wait(10) and paired.wait(10)
            ws.write(f"{name}.o", name)
            return 0
        return run

    scripts = {n: pooled_script(n) for n in pooled} | {n: free_script(n) for n in free}
    results, runner = world.repro(scripts, jobs=4)
    assert all(r.status == OK for r in results.values())
    assert sorted(runner.ran) == sorted(pooled + free)
    assert runner.most_at_once(pooled) == 2
    assert runner.most_at_once(pooled + free) == 4


def meet(world: World, pooled: list[str], free: str,
         seen: list[tuple[str, str | None]] | None = None) -> dict:
    """Scripts for stages ``pooled`` (which each wait until ``free`` has finished) and
    ``free`` (which waits until one of them has started): a scheduler that let two pooled
    stages start together would start them in the same wave as ``free``. ``seen``: each
    pooled stage's (name, the stage holding the listener's console then)."""
    one_started, free_done = threading.Event(), threading.Event()

    def pooled_script(name: str):
        def run(ws: Workspace, output) -> int:
            if seen is not None:
                seen.append((name, world.listener.holding))
            one_started.set()
            assert free_done.wait(10)
            ws.write(name, name)
            return 0
        return run

    def free_script(ws: Workspace, output) -> int:
        assert one_started.wait(10)
        ws.write(free, free)
        free_done.set()
        return 0

    return {n: pooled_script(n) for n in pooled} | {free: free_script}


def test_a_pool_of_one_runs_its_stages_one_at_a_time_whatever_jobs_says():
    pooled = [f"l{i}" for i in range(4)]
    world = World(*(stage(n, "l", outs=[n], pool="link") for n in pooled),
                  stage("z", "z", outs=["z"]), pools={"link": 1})
    results, runner = world.repro(meet(world, pooled, "z"), jobs=5)
    assert all(r.status == OK and r.action == RUN for r in results.values())
    assert sorted(runner.ran) == [*pooled, "z"]
    assert runner.most_at_once(pooled) == 1
    assert runner.most_at_once([*pooled, "z"]) == 2  # z ran beside the first of them


def test_a_failure_in_a_pool_stops_its_waiting_stages_without_keep_going():
    world = World(*(stage(f"l{i}", "l", outs=[f"l{i}"], pool="link") for i in range(3)),
                  pools={"link": 1})
    scripts = {"l0": writes(code=1)} | {f"l{i}": writes((f"l{i}", const("x")))
                                           for i in (1, 2)}
    results, runner = world.repro(scripts, jobs=3)
    assert runner.ran == ["l0"]
    assert summary(results) == {"l0": (RUN, FAILED), "l1": (RUN, NOT_RUN),
                                "l2": (RUN, NOT_RUN)}


def test_a_console_stage_gets_the_terminal_alone_and_the_listener_holds_other_lines():
    """Console stages run one at a time (besides -j), asking the runner for the terminal,
    inside the listener's console hold; other stages do not."""
    world = World(stage("c0", "c", outs=["c0"], pool="console"),
                  stage("c1", "c", outs=["c1"], pool="console"),
                  stage("plain", "p", outs=["plain"]))
    seen: list[tuple[str, str | None]] = []
    results, runner = world.repro(meet(world, ["c0", "c1"], "plain", seen), jobs=3)
    assert all(r.status == OK for r in results.values())
    assert runner.most_at_once(["c0", "c1"]) == 1
    assert runner.most_at_once(["c0", "c1", "plain"]) == 2
    assert sorted(runner.consoles) == ["c0", "c1"]
    assert not runner.specs["plain"].console
    assert sorted(seen) == [("c0", "c0"), ("c1", "c1")]  # each ran inside its hold
    assert sorted(world.listener.console_held) == ["c0", "c1"]
