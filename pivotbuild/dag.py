"""The stage graph (edges implied by deps and outs), target selection, and graph renderers.

An edge runs upstream → downstream when a dep of the downstream stage equals, lies inside, or
contains an out of the upstream stage, compared by whole path components (``data`` contains
``data/x`` but not ``database``). Outs are indexed in a path-component trie, so building the
graph costs time proportional to the total length of all paths plus the edges found, not
stages² comparisons.

Order: every list of stage names this module returns is topological, ties broken by
definition order in pivot.toml (matrix instances in expansion order), so output is stable
across runs and machines and reads like the file.

Planning walks a frozen adjacency (``StageGraph``: tuples per stage, the topological order
computed once by a heap-based Kahn's algorithm); networkx only reports cycles. Every
full-path command builds the graph, and importing networkx costs more CPU than building a
thousand-stage graph, so it is imported lazily, only once the sort has left stages unplaced,
to name the cycle exactly as it always has.
"""

from __future__ import annotations

import heapq
import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from pivotbuild import render_dag
from pivotbuild.config_models import Project, Stage
from pivotbuild.errors import ConfigError, UsageError, key_path
from pivotbuild.paths import PROJECT_FILE as _FILE
from pivotbuild.paths import PathProblem, normalize_path

__all__ = [
    "CycleError", "OverlapError", "SelfDependencyError", "StageGraph", "build_graph", "select",
    "stage_names", "target_from_cwd", "to_dot", "to_json", "to_mermaid", "to_text",
    "topological",
]


class OverlapError(ConfigError):
    """Two outs (of one stage or two) are the same path or one lies inside the other."""


class SelfDependencyError(ConfigError):
    """A stage depends on (a path overlapping) one of its own outs."""


class CycleError(ConfigError):
    """The implied edges form a cycle; ``cycle`` lists its stages, first one repeated last."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__(_FILE, "", "cycle in the pipeline: " + " -> ".join(cycle))


# ---------------------------------------------------------------------------------------------
# Out index: a trie over path components
# ---------------------------------------------------------------------------------------------

_Owner = tuple[str, int]  # (stage name, index into stage.outs)


class _Node:
    __slots__ = ("below", "children", "owner")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.owner: _Owner | None = None  # the out that is exactly this path
        # Every out strictly below this node, filled lazily for "dep contains out" queries.
        self.below: list[_Owner] | None = None


class OutIndex:
    """Every out of every stage, looked up by path, ancestor path or descendant path."""

    def __init__(self) -> None:
        self._root = _Node()

    def add(self, path: str, owner: _Owner) -> _Owner | None:
        """Insert an out; return an existing out it equals or overlaps (it is then not added)."""
        node = self._root
        parts = path.split("/")
        for part in parts:
            if node.owner is not None:
                return node.owner  # an existing out is an ancestor of this one
            node.below = None  # a new out below invalidates the memo
            node = node.children.setdefault(part, _Node())
        if node.owner is not None:
            return node.owner  # exactly the same path
        if node.children:
            return next(self._walk(node))  # an existing out lies inside this one
        node.owner = owner
        return None

    @staticmethod
    def _walk(node: _Node) -> Iterator[_Owner]:
        stack = [node]
        while stack:
            current = stack.pop()
            # Sorted so the reported out (first yielded) does not depend on insertion order.
            for name in sorted(current.children, reverse=True):
                child = current.children[name]
                if child.owner is not None:
                    yield child.owner
                stack.append(child)

    def _below(self, node: _Node) -> list[_Owner]:
        # Memoised: many deps on one big directory (``data``) would otherwise re-walk it.
        if node.below is None:
            node.below = list(self._walk(node))
        return node.below

    def overlapping(self, path: str) -> list[_Owner]:
        """Outs equal to ``path``, containing it, or inside it (``"."`` matches every out)."""
        found: list[_Owner] = []
        node = self._root
        if path != ".":
            for part in path.split("/"):
                if node.owner is not None:
                    found.append(node.owner)
                child = node.children.get(part)
                if child is None:
                    return found
                node = child
        if node.owner is not None:
            found.append(node.owner)
        if node.children:  # most deps end at a leaf (a file out) or outside the trie
            found.extend(self._below(node))
        return found


# ---------------------------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------------------------

_Pair = tuple[str, str]  # (dep of the downstream stage, out of the upstream stage)


def _by_index(names: list[str], index: Mapping[str, int]) -> tuple[str, ...]:
    return tuple(sorted(names, key=index.__getitem__)) if len(names) > 1 else tuple(names)


class StageGraph:
    """The stages and their implied edges, frozen: built once (``build_graph``), then only read.

    Every stage has its definition index; ``predecessors`` / ``successors`` are tuples in
    definition order; ``order`` is the topological order, ties by definition order. The
    constructor raises CycleError when the edges form a cycle."""

    __slots__ = ("_index", "_paths", "_position", "_preds", "_stages", "_succs", "bases",
                 "order", "out_index")

    _stages: dict[str, Stage]
    _index: dict[str, int]
    _preds: dict[str, tuple[str, ...]]
    _succs: dict[str, tuple[str, ...]]
    _paths: dict[tuple[str, str], tuple[_Pair, ...]]
    _position: dict[str, int]
    order: tuple[str, ...]  # every stage, topological, ties by definition order
    bases: Mapping[str, tuple[str, ...]]  # matrix / foreach base name -> its instances
    out_index: OutIndex

    def __init__(self, stages: Mapping[str, Stage],
                 paths: Mapping[tuple[str, str], Sequence[_Pair]], out_index: OutIndex) -> None:
        """``paths``: each edge (upstream, downstream) -> the (dep, out) pairs implying it; the
        edges' order only matters for which cycle an error reports."""
        init = object.__setattr__
        index = {name: i for i, name in enumerate(stages)}
        ups: dict[str, list[str]] = {name: [] for name in stages}
        downs: dict[str, list[str]] = {name: [] for name in stages}
        for up, down in paths:
            ups[down].append(up)
            downs[up].append(down)
        bases: dict[str, list[str]] = {}
        for name, stage in stages.items():
            if stage.base != name:
                bases.setdefault(stage.base, []).append(name)
        init(self, "_stages", dict(stages))
        init(self, "_index", index)
        init(self, "_preds", {n: _by_index(u, index) for n, u in ups.items()})
        init(self, "_succs", {n: _by_index(d, index) for n, d in downs.items()})
        init(self, "_paths", {edge: tuple(pairs) for edge, pairs in paths.items()})
        init(self, "bases", MappingProxyType({b: tuple(n) for b, n in bases.items()}))
        init(self, "out_index", out_index)
        order = self._kahn()
        if len(order) < len(index):
            raise CycleError(_find_cycle(list(stages), list(paths)))
        init(self, "order", order)
        init(self, "_position", {name: i for i, name in enumerate(order)})

    def _kahn(self) -> tuple[str, ...]:
        """Kahn's algorithm with a heap of definition indices (what networkx's
        lexicographical_topological_sort with key=index gives); stages on or below a cycle
        are left out."""
        names = list(self._stages)
        index = self._index
        waiting = [len(self._preds[name]) for name in names]
        ready = [i for i, count in enumerate(waiting) if count == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            name = names[heapq.heappop(ready)]
            order.append(name)
            for down in self._succs[name]:
                at = index[down]
                waiting[at] -= 1
                if waiting[at] == 0:
                    heapq.heappush(ready, at)
        return tuple(order)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a StageGraph is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a StageGraph is immutable: cannot delete {name!r}")

    def __contains__(self, name: object) -> bool:
        return name in self._stages

    def __len__(self) -> int:
        return len(self._stages)

    def __iter__(self) -> Iterator[str]:
        """The stage names in definition order."""
        return iter(self._stages)

    def stage(self, name: str) -> Stage:
        """The stage of that name (KeyError if none)."""
        return self._stages[name]

    def index(self, name: str) -> int:
        """The stage's definition index (its position in pivot.toml, instances expanded)."""
        return self._index[name]

    def predecessors(self, name: str) -> tuple[str, ...]:
        """The stages directly upstream of ``name``, in definition order."""
        return self._preds[name]

    def successors(self, name: str) -> tuple[str, ...]:
        """The stages directly downstream of ``name``, in definition order."""
        return self._succs[name]

    def edges(self) -> list[tuple[str, str]]:
        """Every (upstream, downstream) pair, by upstream then downstream definition order."""
        return [(up, down) for up in self._stages for down in self._succs[up]]

    def paths(self, up: str, down: str) -> tuple[_Pair, ...]:
        """The (dep, out) pairs that imply the edge up -> down (KeyError if there is none)."""
        return self._paths[up, down]

    def topological(self, names: Iterable[str] | None = None) -> list[str]:
        """``names`` (default: every stage) in topological order, ties by definition order."""
        if names is None:
            return list(self.order)
        wanted = set(names)
        return [n for n in self.order if n in wanted]

    def descendants(self, name: str) -> set[str]:
        """Every stage downstream of ``name`` (not ``name`` itself)."""
        found: set[str] = set()
        stack = [name]
        while stack:
            for down in self._succs[stack.pop()]:
                if down not in found:
                    found.add(down)
                    stack.append(down)
        return found

    def has_path(self, source: str, target: str) -> bool:
        """True if ``target`` is ``source`` or lies downstream of it."""
        if source == target:
            return True
        # A stage after the target in topological order cannot lead to it: prune there.
        limit = self._position[target]
        seen = {source}
        stack = [source]
        while stack:
            for down in self._succs[stack.pop()]:
                if down == target:
                    return True
                if down not in seen and self._position[down] < limit:
                    seen.add(down)
                    stack.append(down)
        return False


# ---------------------------------------------------------------------------------------------
# Building the graph
# ---------------------------------------------------------------------------------------------


def _out_key(stage: Stage, index: int) -> str:
    return key_path("stages", stage.base, "outs", index)


def _named(stage: Stage) -> str:
    return f"stage {stage.name!r}"


def build_graph(project: Project) -> StageGraph:
    """The project's stages and the edges their deps and outs imply.

    Raises OverlapError, SelfDependencyError or CycleError (all ConfigError, exit 2).
    """
    index = OutIndex()
    stages = project.stages
    for name, stage in stages.items():
        for i, out in enumerate(stage.outs):
            clash = index.add(out.path, (name, i))
            if clash is None:
                continue
            other_name, j = clash
            other = stages[other_name].outs[j].path
            whose = "the same stage" if other_name == name else _named(stages[other_name])
            relation = ("is also an output of" if other == out.path else
                        f"overlaps output {other!r} of")
            raise OverlapError(_FILE, _out_key(stage, i),
                               f"output {out.path!r} of {_named(stage)} {relation} {whose}")

    paths: dict[tuple[str, str], list[_Pair]] = {}
    for name, stage in stages.items():
        for i, dep in enumerate(stage.deps):
            for up, j in index.overlapping(dep):
                out_path = stages[up].outs[j].path
                if up == name:
                    raise SelfDependencyError(
                        _FILE, key_path("stages", stage.base, "deps", i),
                        f"{_named(stage)} depends on its own output {out_path!r} (dep {dep!r})")
                paths.setdefault((up, name), []).append((dep, out_path))
    return StageGraph(stages, paths, index)


def _find_cycle(names: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """One cycle, as networkx finds it from the earliest-defined stage on any cycle (so the
    message is stable). Only a failing build gets here: only it imports networkx."""
    import networkx as nx

    graph: Any = nx.DiGraph()
    graph.add_nodes_from(names)  # definition order, then edges in discovery order: as before
    graph.add_edges_from(edges)
    index = {name: i for i, name in enumerate(names)}
    for component in sorted(
        (c for c in nx.strongly_connected_components(graph)
         if len(c) > 1 or any(graph.has_edge(n, n) for n in c)),
        key=lambda c: min(index[n] for n in c),
    ):
        start = min(component, key=index.__getitem__)
        found = nx.find_cycle(graph.subgraph(component), source=start)
        return [found[0][0], *(v for _, v in found)]
    return []  # unreachable: only called when the graph has a cycle


# ---------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------


def topological(graph: StageGraph, names: Iterable[str] | None = None) -> list[str]:
    """``names`` (default: every stage) in topological order, ties by definition order."""
    return graph.topological(names)


def _resolve(graph: StageGraph, target: str) -> list[str]:
    """The stages one target names: a stage, a matrix base, or an output path."""
    if target in graph:
        return [target]
    if target in graph.bases:
        return list(graph.bases[target])
    try:
        path = normalize_path(target)
    except PathProblem:
        path = ""
    if path and path != ".":
        # A path equal to or inside an out selects its stage; a directory holding outs
        # selects every stage that writes into it (like `make build/` would).
        owners = dict.fromkeys(name for name, _ in graph.out_index.overlapping(path))
        if owners:
            return list(owners)
    raise UsageError(f"unknown stage or output: {target!r}")


def stage_names(graph: StageGraph, name: str) -> list[str]:
    """The stages a stage name or a matrix / foreach base name names; UsageError for any other
    (a path is no stage name)."""
    if name in graph:
        return [name]
    instances = graph.bases.get(name, ())
    if not instances:
        raise UsageError(f"unknown stage: '{name}'")
    return list(instances)


def target_from_cwd(graph: StageGraph, root: str, target: str) -> str:
    """A target as typed → what ``select`` takes: a stage or matrix base name as given, a path
    made project-relative (it is relative to the cwd); one outside the project as typed (that
    ``select`` then names as unknown)."""
    if target in graph or target in graph.bases:
        return target
    absolute = os.path.abspath(target)
    if absolute == root:
        return "."
    if absolute.startswith(root + "/"):
        return absolute[len(root) + 1:]
    return target


def select(graph: StageGraph, targets: list[str], *, single_item: bool = False,
           downstream: bool = False) -> list[str]:
    """The stages a command acts on, in topological order (ties by definition order).

    No targets means every stage. Default: the targets and their upstream closure, except that a
    frozen stage is included but its upstream is not walked. ``single_item``: only the
    targets. ``downstream``: the targets and everything downstream of them.
    """
    if single_item and downstream:
        raise UsageError("--single-item and --downstream cannot be combined")
    if not targets:
        return graph.topological()
    chosen: dict[str, None] = {}
    for target in targets:
        chosen.update(dict.fromkeys(_resolve(graph, target)))
    if single_item:
        return graph.topological(chosen)
    selected = set(chosen)
    if downstream:
        for name in chosen:
            selected.update(graph.descendants(name))
        return graph.topological(selected)
    queue = deque(chosen)
    while queue:
        name = queue.popleft()
        if graph.stage(name).frozen:
            continue  # a frozen stage never runs, so what feeds it does not matter
        for up in graph.predecessors(name):
            if up not in selected:
                selected.add(up)
                queue.append(up)
    return graph.topological(selected)


# ---------------------------------------------------------------------------------------------
# Renderers (render_dag.py, which fastpath.py shares)
# ---------------------------------------------------------------------------------------------


def _view(graph: StageGraph, names: list[str] | None
          ) -> tuple[list[str], list[tuple[str, str]], set[str]]:
    chosen = graph.topological() if names is None else list(names)
    wanted = set(chosen)
    edges = [(u, v) for u in chosen for v in graph.successors(u) if v in wanted]
    frozen = {n for n in chosen if graph.stage(n).frozen}
    return chosen, render_dag.order_edges(chosen, edges), frozen


def to_json(graph: StageGraph, names: list[str] | None = None) -> dict[str, list[Any]]:
    """``{"stages": [...], "edges": [[up, down], ...]}`` restricted to ``names``."""
    chosen, edges, _ = _view(graph, names)
    return render_dag.to_json(chosen, edges)


def to_dot(graph: StageGraph, names: list[str] | None = None) -> str:
    """A Graphviz ``digraph``; frozen stages are drawn dashed."""
    return render_dag.to_dot(*_view(graph, names))


def to_mermaid(graph: StageGraph, names: list[str] | None = None) -> str:
    """A Mermaid ``flowchart TD``; node ids are sanitised, labels are the real names."""
    chosen, edges, _ = _view(graph, names)
    return render_dag.to_mermaid(chosen, edges)


def to_text(graph: StageGraph, names: list[str] | None = None) -> str:
    """One line per stage in the given order: ``name  <- up1, up2`` (upstream within names)."""
    return render_dag.to_text(*_view(graph, names))
