"""Tests for pivotbuild.dag: implied edges, overlap/self-dep/cycle errors, selection, renderers."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pivotbuild.config import Out, Project, Stage, load_project
from pivotbuild.dag import (
    CycleError,
    OverlapError,
    SelfDependencyError,
    StageGraph,
    build_graph,
    select,
    stage_names,
    target_from_cwd,
    to_dot,
    to_json,
    to_mermaid,
    to_text,
)
from pivotbuild.errors import EXIT_USAGE, ConfigError, UsageError
from pivotbuild.paths import is_inside


def stage(name: str, deps: Sequence[str] = (), outs: Sequence[str] = (), *,
          frozen: bool = False, base: str = "") -> Stage:
    return Stage(name=name, cmd=["true"], deps=list(deps), outs=[Out(path=p) for p in outs],
                 frozen=frozen, base=base or name)


def graph_of(*stages: Stage) -> StageGraph:
    return build_graph(Project(root=Path("/proj"), stages={s.name: s for s in stages}))


def graph_from_toml(tmp_path: Path, toml: str) -> StageGraph:
    (tmp_path / "pivot.toml").write_text(toml)
    return build_graph(load_project(tmp_path))


def edges(graph: StageGraph) -> set[tuple[str, str]]:
    return set(graph.edges())


# --- edges ---------------------------------------------------------------------------------


def test_nodes_carry_stage_in_definition_order() -> None:
    a, b = stage("b_first"), stage("a_second")
    graph = graph_of(a, b)
    assert list(graph) == ["b_first", "a_second"]
    assert graph.stage("b_first") is a and graph.index("a_second") == 1


def test_edge_when_dep_equals_out() -> None:
    graph = graph_of(stage("a", outs=["data/x"]), stage("b", deps=["data/x"]))
    assert edges(graph) == {("a", "b")}
    assert graph.paths("a", "b") == (("data/x", "data/x"),)


def test_edge_when_dep_inside_out() -> None:
    graph = graph_of(stage("a", outs=["data"]), stage("b", deps=["data/x/y.csv"]))
    assert edges(graph) == {("a", "b")}


def test_edge_when_dep_contains_out() -> None:
    graph = graph_of(stage("a", outs=["data/x"]), stage("c", outs=["data/y/z"]),
                     stage("b", deps=["data"]))
    assert edges(graph) == {("a", "b"), ("c", "b")}


def test_containment_is_by_component_not_prefix() -> None:
    graph = graph_of(stage("a", outs=["data"]), stage("b", deps=["database", "dat", "data.csv"]),
                     stage("c", outs=["model/x"]), stage("d", deps=["model/xy", "mode"]))
    assert edges(graph) == set()


def test_edge_direction_does_not_depend_on_definition_order() -> None:
    graph = graph_of(stage("down", deps=["x"]), stage("up", outs=["x"]))
    assert edges(graph) == {("up", "down")}
    assert select(graph, []) == ["up", "down"]


def test_several_paths_give_one_edge() -> None:
    graph = graph_of(stage("a", outs=["x", "y"]), stage("b", deps=["x", "y/z"]))
    assert edges(graph) == {("a", "b")}
    assert graph.paths("a", "b") == (("x", "x"), ("y/z", "y"))


def test_edges_from_toml_with_normalised_spellings(tmp_path: Path) -> None:
    graph = graph_from_toml(tmp_path, """
[stages.a]
cmd = "x"
outs = ["./data//clean/"]
[stages.b]
cmd = "x"
wdir = "sub"
deps = ["../data/clean/part-0"]
""")
    assert edges(graph) == {("a", "b")}


# --- overlap, self-dependency, cycles ------------------------------------------------------


def _raises(exc: type[ConfigError], *stages: Stage) -> str:
    with pytest.raises(exc) as info:
        graph_of(*stages)
    assert info.value.exit_code == EXIT_USAGE
    return str(info.value)


def test_same_out_in_two_stages() -> None:
    assert _raises(OverlapError, stage("a", outs=["x"]), stage("b", outs=["y", "x"])) == (
        "pivot.toml: stages.b.outs[1]: output 'x' of stage 'b' is also an output of stage 'a'")


def test_out_inside_another_stages_out() -> None:
    assert _raises(OverlapError, stage("a", outs=["x"]), stage("b", outs=["x/y"])) == (
        "pivot.toml: stages.b.outs[0]: output 'x/y' of stage 'b' overlaps output 'x' of "
        "stage 'a'")


def test_out_containing_another_stages_out() -> None:
    assert _raises(OverlapError, stage("a", outs=["x/y/z"]), stage("b", outs=["x"])) == (
        "pivot.toml: stages.b.outs[0]: output 'x' of stage 'b' overlaps output 'x/y/z' of "
        "stage 'a'")


def test_overlap_within_one_stage() -> None:
    assert _raises(OverlapError, stage("a", outs=["m", "m/sub"])) == (
        "pivot.toml: stages.a.outs[1]: output 'm/sub' of stage 'a' overlaps output 'm' of "
        "the same stage")


def test_no_overlap_for_prefix_siblings() -> None:
    graph = graph_of(stage("a", outs=["data"]), stage("b", outs=["database", "data.csv"]))
    assert edges(graph) == set()


def test_overlap_in_matrix_instances_names_base_key(tmp_path: Path) -> None:
    with pytest.raises(OverlapError) as info:
        graph_from_toml(tmp_path, "[stages.c]\ncmd = 'x'\nforeach = ['a', 'b']\n"
                                  "outs = ['build/out']\n")
    assert str(info.value) == (
        "pivot.toml: stages.c.outs[0]: output 'build/out' of stage 'c@b' is also an output of "
        "stage 'c@a'")


@pytest.mark.parametrize(("deps", "outs", "dep_i", "dep", "out"), [
    (["x"], ["x"], 0, "x", "x"),
    (["in", "x/file"], ["x"], 1, "x/file", "x"),
    (["x"], ["x/y"], 0, "x", "x/y"),
])
def test_self_dependency(deps: list[str], outs: list[str], dep_i: int, dep: str,
                         out: str) -> None:
    assert _raises(SelfDependencyError, stage("a", deps=deps, outs=outs)) == (
        f"pivot.toml: stages.a.deps[{dep_i}]: stage 'a' depends on its own output {out!r} "
        f"(dep {dep!r})")


def test_self_dependency_spelled_differently(tmp_path: Path) -> None:
    with pytest.raises(SelfDependencyError) as info:
        graph_from_toml(tmp_path, "[stages.a]\ncmd = 'x'\ndeps = ['./x/']\nouts = ['x']\n")
    assert str(info.value) == (
        "pivot.toml: stages.a.deps[0]: stage 'a' depends on its own output 'x' (dep 'x')")


def test_two_stage_cycle() -> None:
    message = _raises(CycleError, stage("a", deps=["y"], outs=["x"]),
                      stage("b", deps=["x"], outs=["y"]))
    assert message == "pivot.toml: cycle in the pipeline: a -> b -> a"


def test_three_stage_cycle_names_every_stage() -> None:
    with pytest.raises(CycleError) as info:
        graph_of(stage("ok", outs=["o"]), stage("a", deps=["z", "o"], outs=["x"]),
                 stage("b", deps=["x"], outs=["y"]), stage("c", deps=["y/part"], outs=["z"]))
    assert str(info.value) == "pivot.toml: cycle in the pipeline: a -> b -> c -> a"
    assert info.value.cycle == ["a", "b", "c", "a"]


def test_errors_are_usage_errors() -> None:
    assert issubclass(CycleError, UsageError) and issubclass(OverlapError, ConfigError)


def test_five_thousand_stages() -> None:
    # A chain plus one stage depending on the whole data/ directory; checks results, not time.
    n = 5000
    stages = [stage(f"s{i}", deps=[f"data/s{i - 1}/out" if i else "raw", "src/lib.py"],
                    outs=[f"data/s{i}/out", f"data/s{i}/log"]) for i in range(n)]
    stages.append(stage("all", deps=["data"]))
    graph = graph_of(*stages)
    assert len(graph.edges()) == (n - 1) + n
    order = select(graph, ["all"])
    assert order[0] == "s0" and order[-1] == "all" and len(order) == n + 1


# --- the graph's own API ---------------------------------------------------------------------


def test_order_is_topological_with_ties_by_definition_order() -> None:
    # Each step places the earliest-defined ready stage: z, then y (w is ready too, but defined
    # later); that makes x ready, and x is defined before w; v waits for x.
    graph = graph_of(stage("x", deps=["z.out", "y.out"], outs=["x.out"]),
                     stage("z", outs=["z.out"]), stage("y", outs=["y.out"]),
                     stage("w", outs=["w.out"]), stage("v", deps=["x.out"]))
    assert graph.order == ("z", "y", "x", "w", "v")
    assert graph.topological(["v", "w", "z"]) == ["z", "w", "v"]
    assert graph.topological() == list(graph.order)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(min_value=0, max_value=30), max_size=4), min_size=1,
                max_size=30))
def test_order_matches_networkx_lexicographical_sort(ups: list[list[int]]) -> None:
    # Stage i may depend on any earlier-generated stage; definition order is shuffled by
    # reversing every other pair so the topological order and the definition order differ.
    n = len(ups)
    names = [f"s{i}" for i in range(n)]
    deps = {i: sorted({j % i for j in js}) if i else [] for i, js in enumerate(ups)}
    defined = [i for pair in zip(range(1, n, 2), range(0, n, 2)) for i in pair]
    defined += [i for i in range(n) if i not in defined]
    graph = graph_of(*(stage(names[i], deps=[f"o/{j}" for j in deps[i]], outs=[f"o/{i}"])
                       for i in defined))
    reference = nx.DiGraph()
    reference.add_nodes_from(names[i] for i in defined)
    reference.add_edges_from((names[j], names[i]) for i in range(n) for j in deps[i])
    position = {names[i]: at for at, i in enumerate(defined)}
    expected = list(nx.lexicographical_topological_sort(reference, key=position.__getitem__))
    assert list(graph.order) == expected
    assert edges(graph) == set(reference.edges)
    for name in names:
        assert graph.descendants(name) == nx.descendants(reference, name)
        assert list(graph.predecessors(name)) == sorted(reference.predecessors(name),
                                                        key=position.__getitem__)


def test_neighbours_are_in_definition_order_whatever_the_dep_order() -> None:
    graph = graph_of(stage("a", outs=["a"]), stage("b", outs=["b"]),
                     stage("d", deps=["b", "a"], outs=["d"]), stage("c", deps=["a"]))
    assert graph.predecessors("d") == ("a", "b")
    assert graph.successors("a") == ("d", "c")
    assert graph.predecessors("a") == () and graph.successors("c") == ()
    assert graph.edges() == [("a", "d"), ("a", "c"), ("b", "d")]
    assert graph.paths("b", "d") == (("b", "b"),)
    assert "d" in graph and "nope" not in graph and len(graph) == 4


def test_descendants_and_has_path(pipeline: StageGraph) -> None:
    assert pipeline.descendants("prep") == {"feats", "train", "report"}
    assert pipeline.descendants("report") == set()
    assert pipeline.has_path("prep", "report") and pipeline.has_path("feats", "report")
    assert pipeline.has_path("train", "train")  # a stage reaches itself
    assert not pipeline.has_path("report", "prep")  # edges only go downstream
    assert not pipeline.has_path("lint", "report") and not pipeline.has_path("prep", "lint")


def test_graph_cannot_be_changed(pipeline: StageGraph) -> None:
    with pytest.raises(AttributeError, match="immutable"):
        pipeline.order = ()  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del pipeline.out_index
    with pytest.raises(TypeError):
        pipeline.bases["x"] = ("y",)  # type: ignore[index]
    assert isinstance(pipeline.predecessors("train"), tuple)


def test_cycle_below_a_stage_is_reported_alone() -> None:
    # "after" depends on the cycle and is left unplaced too, but only the cycle is named.
    with pytest.raises(CycleError) as info:
        graph_of(stage("after", deps=["p"]), stage("root", outs=["r"]),
                 stage("q", deps=["p", "r"], outs=["q"]), stage("p", deps=["q"], outs=["p"]))
    assert info.value.cycle == ["q", "p", "q"]


# --- selection -----------------------------------------------------------------------------


@pytest.fixture
def pipeline() -> StageGraph:
    #   prep -> train -> report
    #        \-> feats -/        (train needs prep and feats; feats needs prep)
    #   lint (alone)
    return graph_of(
        stage("report", deps=["model", "metrics.json"], outs=["report.html"]),
        stage("prep", deps=["raw.csv"], outs=["data/clean"]),
        stage("lint", outs=["lint.txt"]),
        stage("train", deps=["data/clean", "data/feats.csv"], outs=["model", "metrics.json"]),
        stage("feats", deps=["data/clean/part-1"], outs=["data/feats.csv"]),
    )


def test_select_all_is_topological_with_definition_order_ties(pipeline: StageGraph) -> None:
    # lint is defined before train/feats, so among ready stages it comes first.
    assert select(pipeline, []) == ["prep", "lint", "feats", "train", "report"]


def test_select_default_walks_upstream(pipeline: StageGraph) -> None:
    assert select(pipeline, ["train"]) == ["prep", "feats", "train"]
    assert select(pipeline, ["report"]) == ["prep", "feats", "train", "report"]
    assert select(pipeline, ["lint"]) == ["lint"]


def test_select_single_item(pipeline: StageGraph) -> None:
    assert select(pipeline, ["report", "prep"], single_item=True) == ["prep", "report"]


def test_select_downstream(pipeline: StageGraph) -> None:
    assert select(pipeline, ["feats"], downstream=True) == ["feats", "train", "report"]
    assert select(pipeline, ["prep"], downstream=True) == ["prep", "feats", "train", "report"]


def test_single_item_and_downstream_conflict(pipeline: StageGraph) -> None:
    with pytest.raises(UsageError, match="cannot be combined"):
        select(pipeline, ["prep"], single_item=True, downstream=True)


def test_select_unknown_target(pipeline: StageGraph) -> None:
    for target in ("nope", "../escape", "raw.csv", "data/other"):
        with pytest.raises(UsageError) as info:
            select(pipeline, [target])
        assert str(info.value) == f"unknown stage or output: {target!r}"
        assert info.value.exit_code == EXIT_USAGE


def test_select_by_output_path(pipeline: StageGraph) -> None:
    assert select(pipeline, ["metrics.json"], single_item=True) == ["train"]
    assert select(pipeline, ["./model/weights.bin"], single_item=True) == ["train"]
    assert select(pipeline, ["data/clean/"], single_item=True) == ["prep"]
    # A directory holding outs of several stages selects all of them.
    assert select(pipeline, ["data"], single_item=True) == ["prep", "feats"]
    assert select(pipeline, ["report.html"]) == ["prep", "feats", "train", "report"]


def test_stage_name_wins_over_path() -> None:
    graph = graph_of(stage("data", outs=["x"]), stage("maker", outs=["data"]))
    assert select(graph, ["data"], single_item=True) == ["data"]


def test_frozen_target_cuts_upstream() -> None:
    frozen = graph_of(
        stage("prep", deps=["raw"], outs=["clean"]),
        stage("train", deps=["clean"], outs=["model"], frozen=True),
        stage("report", deps=["model"], outs=["r"]),
    )
    assert select(frozen, ["train"]) == ["train"]
    # The frozen stage itself is included on the way up, but not walked through.
    assert select(frozen, ["report"]) == ["train", "report"]
    assert select(frozen, ["prep"], downstream=True) == ["prep", "train", "report"]
    assert select(frozen, []) == ["prep", "train", "report"]


def test_frozen_cut_keeps_other_paths_upstream() -> None:
    # d needs b (frozen, fed by a) and c (fed by a): a is still reached through c.
    graph = graph_of(stage("a", outs=["a"]), stage("b", deps=["a"], outs=["b"], frozen=True),
                     stage("c", deps=["a"], outs=["c"]), stage("d", deps=["b", "c"]))
    assert select(graph, ["d"]) == ["a", "b", "c", "d"]
    graph = graph_of(stage("a", outs=["a"]), stage("b", deps=["a"], outs=["b"], frozen=True),
                     stage("d", deps=["b"]))
    assert select(graph, ["d"]) == ["b", "d"]


def test_select_matrix_base_name(tmp_path: Path) -> None:
    graph = graph_from_toml(tmp_path, """
[stages.gen]
cmd = "x"
outs = ["src"]
[stages.compile]
matrix = { src = ["main", "util"], opt = ["O0", "O2"] }
cmd = "cc"
deps = ["src/${item.src}.c"]
outs = ["build/${item.opt}/${item.src}.o"]
[stages.link]
cmd = "ld"
deps = ["build/O2"]
outs = ["app"]
""")
    assert select(graph, ["compile"], single_item=True) == [
        "compile@main-O0", "compile@main-O2", "compile@util-O0", "compile@util-O2"]
    assert select(graph, ["compile@util-O2"]) == ["gen", "compile@util-O2"]
    assert select(graph, ["link"]) == ["gen", "compile@main-O2", "compile@util-O2", "link"]
    assert select(graph, ["build/O0"], single_item=True) == [
        "compile@main-O0", "compile@util-O0"]


def test_targets_typed_in_a_subdirectory(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    graph = graph_from_toml(tmp_path, """
[stages.compile]
matrix = { src = ["main", "util"] }
cmd = "cc"
outs = ["build/${item.src}.o"]
""")
    (tmp_path / "build").mkdir()
    monkeypatch.chdir(tmp_path / "build")
    root = str(tmp_path)

    def chosen(target: str) -> list[str]:
        return select(graph, [target_from_cwd(graph, root, target)], single_item=True)

    # Names pass through as typed; paths are relative to the cwd, not to the root.
    assert chosen("compile") == ["compile@main", "compile@util"]
    assert chosen("compile@util") == ["compile@util"]
    assert chosen("util.o") == ["compile@util"]
    assert chosen(".") == ["compile@main", "compile@util"]  # the directory build/
    for outside in ("..", "../../elsewhere/main.o"):
        with pytest.raises(UsageError, match="unknown stage or output"):
            chosen(outside)


def test_stage_names_are_names_not_paths(tmp_path: Path) -> None:
    graph = graph_from_toml(tmp_path, """
[stages.compile]
matrix = { src = ["main", "util"] }
cmd = "cc"
outs = ["build/${item.src}.o"]
[stages.link]
cmd = "ld"
deps = ["build"]
outs = ["app"]
""")
    assert stage_names(graph, "compile") == ["compile@main", "compile@util"]
    assert stage_names(graph, "compile@util") == ["compile@util"]
    assert stage_names(graph, "link") == ["link"]
    for not_a_name in ("app", "build", "nope"):
        with pytest.raises(UsageError, match=f"unknown stage: '{not_a_name}'"):
            stage_names(graph, not_a_name)


def test_duplicate_targets_are_selected_once(pipeline: StageGraph) -> None:
    assert select(pipeline, ["train", "train", "model"], single_item=True) == ["train"]


# --- renderers -----------------------------------------------------------------------------


def test_to_json(pipeline: StageGraph) -> None:
    names = select(pipeline, ["train"])
    assert to_json(pipeline, names) == {
        "stages": ["prep", "feats", "train"],
        "edges": [["prep", "feats"], ["prep", "train"], ["feats", "train"]],
    }
    assert to_json(pipeline)["stages"] == ["prep", "lint", "feats", "train", "report"]
    assert to_json(pipeline, ["train", "report"]) == {
        "stages": ["train", "report"], "edges": [["train", "report"]]}


def test_to_dot(pipeline: StageGraph) -> None:
    dot = to_dot(pipeline, ["feats", "train"])
    assert dot == (
        'digraph pivotbuild {\n  rankdir=TB;\n  "feats";\n  "train";\n'
        '  "feats" -> "train";\n}\n')


def test_to_dot_quotes_and_frozen() -> None:
    graph = graph_of(stage('we"ird', outs=["x"], frozen=True), stage("c@a-1.5", deps=["x"]))
    dot = to_dot(graph)
    assert '"we\\"ird" [style=dashed];' in dot
    assert '"we\\"ird" -> "c@a-1.5";' in dot


def test_to_mermaid_sanitises_ids() -> None:
    graph = graph_of(stage("c@a-1.5", outs=["x"]), stage("c_a_1_5", deps=["x"], outs=["y"]),
                     stage("end", deps=["y"]))
    assert to_mermaid(graph) == (
        "flowchart TD\n"
        '  s_c_a_1_5["c@a-1.5"]\n'
        '  s_c_a_1_5_2["c_a_1_5"]\n'
        '  s_end["end"]\n'
        "  s_c_a_1_5 --> s_c_a_1_5_2\n"
        "  s_c_a_1_5_2 --> s_end\n")


def test_to_text(pipeline: StageGraph) -> None:
    assert to_text(pipeline) == (
        "prep\n"
        "lint\n"
        "feats   <- prep\n"
        "train   <- prep, feats\n"
        "report  <- train\n")
    assert to_text(pipeline, []) == "(no stages)\n"


def test_to_text_marks_frozen() -> None:
    graph = graph_of(stage("a", outs=["x"], frozen=True), stage("bb", deps=["x"]))
    assert to_text(graph) == "a   (frozen)\nbb  <- a\n"


# --- property: the trie agrees with brute force -------------------------------------------

_PATHS = st.sampled_from(["a", "a/b", "a/b/c", "a/bc", "ab", "b", "b/a", "c"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(_PATHS, max_size=3, unique=True),
                          st.lists(_PATHS, max_size=2, unique=True)), min_size=1, max_size=5))
def test_graph_matches_brute_force(spec: list[tuple[list[str], list[str]]]) -> None:
    stages = [stage(f"s{i}", deps=d, outs=o) for i, (d, o) in enumerate(spec)]

    def overlaps(p: str, q: str) -> bool:
        return is_inside(p, q) or is_inside(q, p)

    outs = [(s.name, o.path) for s in stages for o in s.outs]
    overlap = any(overlaps(p, q) for (_, p), (_, q) in itertools.combinations(outs, 2))
    self_dep = any(overlaps(d, o.path) for s in stages for d in s.deps for o in s.outs)
    expected = {(up, s.name) for s in stages for d in s.deps for up, p in outs
                if up != s.name and overlaps(d, p)}
    if overlap:
        with pytest.raises(OverlapError):
            graph_of(*stages)
        return
    if self_dep:
        with pytest.raises(SelfDependencyError):
            graph_of(*stages)
        return
    if not nx.is_directed_acyclic_graph(nx.DiGraph(list(expected))):
        with pytest.raises(CycleError):
            graph_of(*stages)
        return
    graph = graph_of(*stages)
    assert edges(graph) == expected
    order = select(graph, [])
    assert all(order.index(u) < order.index(v) for u, v in expected)
